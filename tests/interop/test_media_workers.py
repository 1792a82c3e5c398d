"""Media workers (issue 15) end to end with real peers: sipp is the camera, a Python sender streams
PS over RTP to the port the owning worker listens on, ffprobe reads the HTTP-FLV / WS-FLV the
worker writes on the connection the main process handed over. Run with media.workers = 2 (and 1,
the single-process mode, for the same assertions)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.media_workers.pool import owner_index
from tests.interop.test_media_sipp import (
    CAM,
    came_back,
    capture,
    established_leg,
    ffprobe,
    free_tcp_port,
    has_tags,
    rig,
    start_camera,
    start_sender,
    stop_camera,
    video_tags,
)

pytestmark = [pytest.mark.interop, pytest.mark.requires("sipp", "ffprobe")]


async def capture_until_cut(url: str) -> bytes:
    """What an HTTP-FLV viewer got before its connection was cut."""
    data = bytearray()
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        with contextlib.suppress(aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            async for chunk in resp.content.iter_any():
                data += chunk
    return bytes(data)


def _streams_gone(r: Any) -> bool:
    plane = r.plane
    workers = plane.workers
    if workers is None:
        return plane.hub.get(CAM) is None and not plane.pool.in_use
    return not workers.owner(CAM).sinks and not any(w.pool.in_use for w in workers.workers)


@pytest.mark.parametrize(("workers", "mode"), [("2", "udp"), ("2", "tcp-passive"), ("2", "tcp-active"),
                                               ("1", "udp")])
async def test_http_flv_through_a_worker_read_by_ffprobe(tmp_path: Path, workers: str, mode: str) -> None:
    media_port = free_tcp_port() if mode == "tcp-active" else 15060
    async with rig(tmp_path, mode, GBGATE_MEDIA__WORKERS=workers) as r:
        mw = r.plane.workers
        assert (mw is None) == (workers == "1")
        await start_camera(r, tmp_path, mode, media_port)
        live_url = f"{r.url}/live/{CAM}.flv?token={r.token}"
        stop = asyncio.Event()
        # captures end once they hold what is asserted on them (with margin), their old window the deadline
        first_viewer = asyncio.create_task(capture(live_url, 3.0, tmp_path / "first.flv",
                                                   until=has_tags(40, audio=5)))
        leg = await established_leg(r)
        if mw is not None:  # the port comes from the owning worker's slice
            owner = mw.workers[owner_index(CAM, 2)]
            assert owner.pool.port_min <= leg.lease.port < owner.pool.port_max
        sender = start_sender(mode, leg, media_port, stop)
        # a viewer kept on meanwhile: the stream must not linger out between the probes below
        keeper = asyncio.create_task(capture(live_url, 60.0))
        direct_probe = asyncio.create_task(ffprobe(live_url, "-read_intervals", "%+1"))  # alongside the capture
        first = await first_viewer
        direct = await direct_probe
        counted = await ffprobe(str(tmp_path / "first.flv"), "-count_frames")
        for probe in (direct, counted):
            video = next(s for s in probe["streams"] if s["codec_type"] == "video")
            assert video["codec_name"] == "h264" and (video["width"], video["height"]) == (320, 240)
        video = next(s for s in counted["streams"] if s["codec_type"] == "video")
        assert int(video["nb_read_frames"]) > 25
        assert any(s["codec_type"] == "audio" and s["codec_name"] == "pcm_alaw" for s in counted["streams"])
        assert video_tags(first)[1][1][0] == 0x17
        # a late viewer starts at a keyframe from the worker's GOP cache
        late = await capture(live_url, 1.0, until=has_tags(3))
        tags = video_tags(late)
        assert tags[0][1][:2] == b"\x17\x00" and tags[1][1][:2] == b"\x17\x01"
        async with aiohttp.ClientSession() as http, \
                http.get(f"{r.url}/api/v1/streams/{CAM}", headers={"Authorization": f"Bearer {r.token}"}) as resp:
            stats = await resp.json()
        assert stats["codec"] == "h264" and stats["width"] == 320 and stats["rtp"]["received"] > 0
        assert stats["rtp"]["dropped_wrong_ssrc"] == 0 and stats["ttff_viewer_ms"]["last"] < 100
        assert stats["trace"][0]["diagnosis"] == "streaming"
        steps = [s["step"] for s in stats["trace"][0]["steps"]]
        assert {"offer_sent", "answer", "ack_sent", "first_rtp", "first_keyframe"} <= set(steps)
        if mw is not None:
            assert mw.counters["handed_off"] >= 3 and stats["rtp"]["worker"] == owner.index
        assert r.plane.invites.metrics_counters()["rtp:received"] > 0  # /metrics sees the worker's RTP
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        assert r.plane.invites.counters["invite:sent"] == 1  # one stream served every viewer
        stop.set()
        await sender
        async with asyncio.timeout(8):  # viewers gone + linger → BYE, ports back in the slice
            while not _streams_gone(r):
                await asyncio.sleep(0.1)
        assert r.plane.invites.counters["bye:sent"] >= 1
        await stop_camera(r)


@pytest.mark.parametrize("workers", ["2", "1"])
async def test_ws_flv_and_errors_through_a_worker(tmp_path: Path, workers: str) -> None:
    async with rig(tmp_path, "udp", GBGATE_MEDIA__WORKERS=workers) as r:
        async with aiohttp.ClientSession() as http:  # errors come back as the API's JSON
            async with http.get(f"{r.url}/live/{CAM}.flv") as resp:
                assert resp.status == 401
            async with http.get(f"{r.url}/live/34020000001310009999.flv?token={r.token}") as resp:
                assert resp.status == 404 and (await resp.json())["error"]["code"] == "channel_not_found"
        await start_camera(r, tmp_path, "udp", 15060)
        stop = asyncio.Event()

        async def watch() -> bytes:
            data = bytearray()
            async with aiohttp.ClientSession() as http, \
                    http.ws_connect(f"{r.url}/live/{CAM}.flv?token={r.token}") as ws:
                async with asyncio.timeout(6):
                    async for msg in ws:
                        data += msg.data
                        if len(video_tags(bytes(data))) > 20:
                            break
            return bytes(data)
        viewer = asyncio.create_task(watch())
        leg = await established_leg(r)
        sender = start_sender("udp", leg, 0, stop)
        data = await viewer
        stop.set()
        await sender
        (tmp_path / "ws.flv").write_bytes(data)
        probe = await ffprobe(str(tmp_path / "ws.flv"), "-count_frames")
        video = next(s for s in probe["streams"] if s["codec_type"] == "video")
        assert video["codec_name"] == "h264" and int(video["nb_read_frames"]) > 10
        await stop_camera(r)


async def test_a_crashed_worker_ends_its_streams_and_is_restarted(tmp_path: Path) -> None:
    async with rig(tmp_path, "udp", GBGATE_MEDIA__WORKERS="2") as r:
        mw = r.plane.workers
        owner = mw.owner(CAM)
        events: list[tuple[str, bool, str]] = []
        rule = mw.on_video

        def observe(ch: str, ok: bool, cause: str, ev: dict[str, Any]) -> None:
            events.append((ch, ok, cause))
            if rule is not None:
                rule(ch, ok, cause, ev)
        mw.on_video = observe
        await start_camera(r, tmp_path, "udp", 15060)
        live_url = f"{r.url}/live/{CAM}.flv?token={r.token}"
        stop = asyncio.Event()
        viewer = asyncio.create_task(capture_until_cut(live_url))
        leg = await established_leg(r)
        sender = start_sender("udp", leg, 0, stop)
        async with asyncio.timeout(5):
            while (CAM, True, "video_ok") not in events:
                await asyncio.sleep(0.05)
        pid = owner.pid
        os.kill(pid, signal.SIGKILL)
        data = await asyncio.wait_for(viewer, 5)  # the viewer's connection ends with the worker
        assert len(video_tags(data)) > 2
        async with asyncio.timeout(5):
            while not (owner.alive and owner.pid != pid):
                await asyncio.sleep(0.05)
        assert (CAM, False, "media_worker_lost") in events
        assert owner.crashes == 1 and mw.counters["restarts"] == 1
        async with asyncio.timeout(5):  # the device got its BYE, the port went back to the slice
            while r.plane.invites.counters["bye:sent"] < 1 or owner.pool.in_use:
                await asyncio.sleep(0.05)
        # the restarted worker serves the channel again (a new INVITE)
        stop.set()
        await sender
        viewer2 = asyncio.create_task(capture(live_url, 2.0, until=has_tags(15)))
        leg2 = await established_leg(r, not_call=leg.call_id)
        stop2 = asyncio.Event()
        sender2 = start_sender("udp", leg2, 0, stop2)
        assert len(video_tags(await viewer2)) > 10
        stop2.set()
        await sender2
        await stop_camera(r)


async def test_snapshot_and_flv_share_the_workers_one_ingest(tmp_path: Path) -> None:
    """Frame consumers in the main process (snapshots here; WebRTC and cascade relays alike) get
    the owning worker's frames: one INVITE serves both the FLV viewer and the snapshot."""
    import cv2
    import numpy as np

    from tests.interop.test_webrtc_chromium import camera_rig

    async with camera_rig(tmp_path, GBGATE_MEDIA__WORKERS="2") as (r, base, _state, _), \
            aiohttp.ClientSession() as http:
        assert r.plane.workers is not None
        viewer = asyncio.create_task(capture(f"{base}/live/{CAM}.flv?token={r.token}", 3.0))
        await asyncio.sleep(1.0)
        async with http.get(f"{base}/live/{CAM}/snapshot.jpg?token={r.token}") as resp:
            assert resp.status == 200, await resp.text()
            jpeg = await resp.read()
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (240, 320, 3)
        assert len(video_tags(await viewer)) > 25
        assert r.plane.invites.counters["invite:sent"] == 1
        fed = r.plane.hub.snapshot(CAM)
        assert fed is None or fed["rtp"].get("fed_by_worker") == r.plane.workers.owner(CAM).index


async def test_a_pull_source_stays_in_the_main_process_with_workers(tmp_path: Path) -> None:
    """Pull sources are opened by the main process's hub: their viewers are not handed over."""
    from tests.interop.test_rtsp_source import CH, admit_host, api, make_clip, node

    media = tmp_path / "media"
    mp4 = await make_clip(media / "clip.mp4", 2, "-c:v", "libx264", "-g", "25")
    async with node(tmp_path, GBGATE_MEDIA__FILE_SOURCE_ROOT=str(media), GBGATE_MEDIA__WORKERS="2") as \
            (gw, base, token), aiohttp.ClientSession() as http:
        assert gw.media is not None and gw.media.workers is not None
        await admit_host(gw, CH, "127.0.0.1")
        status, body = await api(http, "POST", f"{base}/api/v1/sources", token,
                                 {"channel_id": CH, "url": f"file://{mp4}"})
        assert status == 201, body
        data = await capture(f"{base}/live/{CH}.flv?token={token}", 2.0, tmp_path / "file.flv", until=has_tags(30))
        assert len(video_tags(data)) > 25
        probe = await ffprobe(str(tmp_path / "file.flv"), "-count_frames")
        assert probe["streams"][0]["codec_name"] == "h264"
        assert gw.media.workers.counters["handed_off"] == 0


async def test_chromium_plays_whep_fed_by_a_worker(tmp_path: Path) -> None:
    """WebRTC stays in the main process; its frames come from the owning worker's stream."""
    import json

    from tests.interop.conftest import require_tool
    from tests.interop.test_webrtc_chromium import camera_rig, chromium_args, page_server, play_in_chromium

    require_tool("sipp")
    chromium_args(tmp_path, "")
    async with camera_rig(tmp_path, GBGATE_MEDIA__WORKERS="2") as (r, base, state, _):
        from aiohttp import web

        async with page_server(web.Application()) as (page_base, result):
            got = await play_in_chromium(page_base, f"{base}/live/{CAM}/whep?token={r.token}", result, tmp_path)
        print(json.dumps(got))
        assert "error" not in got, got
        assert got["framesDecoded"] >= 20 and (got["frameWidth"], got["frameHeight"]) == (320, 240), got
        assert got["codec"] == "video/H264" and got["deleteStatus"] == 200, got
        assert not state.sessions.sessions
        assert r.plane.invites.counters["invite:sent"] == 1


@pytest.mark.parametrize("mode", ["udp", "tcp-passive"])
async def test_media_loss_in_a_worker_is_reinvited_by_main(tmp_path: Path, mode: str) -> None:
    """The watchdog in main sees the worker's last-packet times (tick): media stops → BYE +
    re-INVITE on a new port of the same slice → the kept viewer's stream continues."""
    import itertools

    async with rig(tmp_path, mode, GBGATE_MEDIA__WORKERS="2") as r:
        owner = r.plane.workers.owner(CAM)
        await start_camera(r, tmp_path, mode, 15060)
        live_url = f"{r.url}/live/{CAM}.flv?token={r.token}"
        stop = asyncio.Event()
        back = asyncio.Event()  # the new leg streams and main listed it with this viewer
        kept = asyncio.create_task(capture(live_url, 8.0, until=came_back(back)))
        leg = await established_leg(r)
        sender = start_sender(mode, leg, 15060, stop)
        await asyncio.sleep(1.5)
        stop.set()
        await sender
        leg2 = await established_leg(r, not_call=leg.call_id, timeout=8)
        assert owner.pool.port_min <= leg2.lease.port < owner.pool.port_max
        stop2 = asyncio.Event()
        sender2 = start_sender(mode, leg2, 15060, stop2)
        await asyncio.sleep(1.0)
        async with aiohttp.ClientSession() as http, \
                http.get(f"{r.url}/api/v1/streams", headers={"Authorization": f"Bearer {r.token}"}) as resp:
            listing = await resp.json()
        assert listing["count"] == 1 and listing["viewers"] == 1  # the worker's stream, listed by main
        assert listing["streams"][0]["reinvites"] >= 1 and listing["streams"][0]["rtp"]["worker"] == owner.index
        back.set()
        data = await kept
        stop2.set()
        await sender2
        ts = [t for t, body in video_tags(data) if body[1] == 1]
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert max(gaps) < 400 and len(ts) > 100, "stream did not come back on the kept connection"
        assert r.plane.invites.counters["reinvite:ok"] >= 1 and r.plane.invites.counters["bye:sent"] >= 1
        await stop_camera(r)
