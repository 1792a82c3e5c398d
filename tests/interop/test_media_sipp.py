"""Live media end to end with real peers: sipp is the camera (REGISTER with digest, answers our
INVITE with y=, ACK, BYE), a Python sender streams PS over RTP on the negotiated transport, and
ffprobe reads our HTTP-FLV output (codec, resolution, frame count)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.api import build_web_app, live
from gateway.app import Gateway, install_media
from gateway.gb.ssrc import ssrc_to_int
from load_tests.bench_media import PsRtpSender
from tests.interop.conftest import end_sipp_wait, free_port, gateway_settings, require_tool, whitelist

pytestmark = [pytest.mark.interop, pytest.mark.requires("sipp", "ffprobe")]

CAM = "34020000001320000201"
PASSWORD = "12345678"
SIPP = Path(__file__).resolve().parent / "sipp"
MODES = ["udp", "tcp-passive", "tcp-active"]


@dataclass
class Rig:
    gw: Gateway
    plane: Any
    url: str
    token: str
    sipp: asyncio.subprocess.Process | None = None
    sipp_dir: Path | None = None
    sipp_port: int = 0


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, mode: str, **env: str) -> AsyncIterator[Rig]:
    require_tool("sipp")
    base = 32000 + 200 * MODES.index(mode)
    overrides = {"GBGATE_MEDIA__TRANSPORT": mode, "GBGATE_MEDIA__TIMEOUT": "1.5", "GBGATE_MEDIA__LINGER": "0.5",
                 "GBGATE_MEDIA__INVITE_TIMEOUT": "6", "GBGATE_MEDIA__PORT_MIN": str(base),
                 "GBGATE_MEDIA__PORT_MAX": str(base + 99), **env}
    settings = gateway_settings(tmp_path, **overrides)
    gw = Gateway(settings)
    await gw.start()
    runner = None
    plane = None
    try:
        svc = gw.services
        assert svc is not None and gw.adapter is not None
        if svc.streams is None:  # until app.py wires the media plane itself
            assert gw.router is not None and gw.endpoint is not None
            plane = install_media(adapter=gw.adapter, router=gw.router, endpoint=gw.endpoint, settings=settings,
                                  repo=svc.repo)
            await plane.start()
            svc.streams = plane.hub
            runner = web.AppRunner(build_web_app(svc, [live.routes]))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            url = f"http://127.0.0.1:{port}"
        else:
            url = gw.http_url
            plane = gw.media
        from gateway.api.auth import Role

        token = await svc.tokens.create(Role.PLATFORM, "media-test")
        await whitelist(gw, CAM, PASSWORD)
        yield Rig(gw, plane, url, token)
    finally:
        if runner is not None:
            await runner.cleanup()
        if plane is not None and runner is not None:
            await plane.stop()
        await gw.stop()


async def start_camera(r: Rig, tmp_path: Path, mode: str, media_port: int, *,
                       scenario: str = "camera_media.xml") -> None:
    sipp = require_tool("sipp")
    inf = tmp_path / "cam.csv"
    inf.write_text(f"SEQUENTIAL\n{CAM};[authentication username={CAM} password={PASSWORD}]\n")
    r.sipp_dir = tmp_path / "sipp"
    r.sipp_dir.mkdir(exist_ok=True)
    uas = SIPP / f"camera_media_uas_{mode.replace('-', '_')}.xml"
    assert r.gw.endpoint is not None
    r.sipp_port = free_port()
    r.sipp = await asyncio.create_subprocess_exec(
        sipp, f"127.0.0.1:{r.gw.endpoint.udp_port}", "-sf", str(SIPP / scenario), "-oocsf", str(uas),
        "-inf", str(inf), "-m", "1", "-t", "u1", "-i", "127.0.0.1", "-p", str(r.sipp_port), "-nostdin",
        "-trace_msg", "-trace_err", "-key", "cam_media_port", str(media_port), "-timeout", "90s",
        cwd=r.sipp_dir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    presence = r.gw.adapter.presence  # type: ignore[union-attr]
    async with asyncio.timeout(10):
        while not ((rec := presence.get(CAM)) is not None and rec.online):
            await asyncio.sleep(0.05)


def end_camera_wait(r: Rig) -> None:
    """The camera scenario's current wait for an INFO ends (camera_media_unregister.xml: it unregisters)."""
    assert r.sipp is not None
    end_sipp_wait(f"1-{r.sipp.pid}@127.0.0.1", "127.0.0.1", r.sipp_port)


def sipp_messages(r: Rig) -> str:
    if r.sipp_dir is None:
        return ""
    return "".join(p.read_text(errors="replace") for p in r.sipp_dir.glob("*_messages.log"))


async def stop_camera(r: Rig) -> None:
    if r.sipp is not None and r.sipp.returncode is None:
        r.sipp.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(r.sipp.wait(), 5)
        if r.sipp.returncode is None:
            r.sipp.kill()
            await r.sipp.wait()


async def established_leg(r: Rig, *, not_call: str | None = None, timeout: float = 10) -> Any:
    """The gateway's current INVITE leg once the device answered (port/SSRC for our sender)."""
    invites = r.plane.invites if hasattr(r.plane, "invites") else None
    assert invites is not None
    async with asyncio.timeout(timeout):
        while True:
            s = invites._sessions.get(CAM)
            leg = s.leg if s is not None else None
            if leg is not None and leg.answer is not None and not leg.closed and leg.call_id != not_call:
                return leg
            await asyncio.sleep(0.02)


def start_sender(mode: str, leg: Any, media_port: int, stop: asyncio.Event) -> asyncio.Task[None]:
    sender = PsRtpSender(ssrc=ssrc_to_int(leg.answer.ssrc), audio=True)
    if mode == "udp":
        coro = sender.run_udp("127.0.0.1", leg.lease.port, stop=stop)
    elif mode == "tcp-passive":
        coro = sender.run_tcp_connect("127.0.0.1", leg.lease.port, stop=stop)
    else:
        coro = sender.run_tcp_listen("127.0.0.1", media_port, stop=stop)
    return asyncio.create_task(coro)


async def capture(url: str, seconds: float, path: Path | None = None, *,
                  until: Callable[[bytes], bool] | None = None) -> bytes:
    """An HTTP-FLV viewer's bytes over `seconds`, or fewer: it stops as soon as `until(bytes so far)`
    holds (what the caller asserts is in hand), so a fixed window is only the deadline."""
    data = bytearray()
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "video/x-flv"
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds + 1):
                async for chunk in resp.content.iter_any():
                    data += chunk
                    if loop.time() > end or (until is not None and until(data)):
                        break
    if path is not None:
        path.write_bytes(data)
    return bytes(data)


async def hold(url: str, release: asyncio.Event) -> None:
    """A viewer that reads until `release`: it keeps the stream (and its stats) alive across steps
    that have no other viewer, however slow a loaded machine makes them."""
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        async for _ in resp.content.iter_any():
            if release.is_set():
                break


def tag_counts(data: bytes) -> tuple[int, int, int]:
    """(coded video frames, audio tags, timestamp of the last video tag) among the complete FLV tags,
    as video_tags reads them, without copying bodies: cheap enough to run on every chunk a capture reads."""
    pos, frames, audio, last = 13, 0, 0, -1
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        if pos + 15 + size > len(data):
            break
        if data[pos] == 9:
            last = int.from_bytes(data[pos + 4:pos + 7], "big")
            frames += size > 1 and data[pos + 12] == 1
        elif data[pos] == 8:
            audio += 1
        pos += 15 + size
    return frames, audio, last


def came_back(back: asyncio.Event) -> Callable[[bytes], bool]:
    """A capture's `until` across a source change: over 100 frames in all (what the tests assert),
    and at least a second of them (25) captured after `back` was set (the new leg streams)."""
    frames_at_back: list[int] = []

    def check(data: bytes) -> bool:
        if not back.is_set():
            return False
        frames = tag_counts(data)[0]
        frames_at_back[:] = frames_at_back or [frames]
        return frames > 100 and frames - frames_at_back[0] >= 25
    return check


def has_tags(frames: int, audio: int = 0) -> Callable[[bytes], bool]:
    """A capture's `until`: at least this many coded video frames and audio tags."""
    def check(data: bytes) -> bool:
        v, a, _ = tag_counts(data)
        return v >= frames and a >= audio
    return check


def video_tags(data: bytes) -> list[tuple[int, bytes]]:
    """(timestamp, body) of the FLV video tags."""
    assert data[:3] == b"FLV"
    pos, out = 13, []
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        if pos + 15 + size > len(data):
            break
        if data[pos] == 9:
            out.append((int.from_bytes(data[pos + 4:pos + 7], "big"), data[pos + 11:pos + 11 + size]))
        pos += 15 + size
    return out


async def ffprobe(target: str, *extra: str) -> dict[str, Any]:
    exe = require_tool("ffprobe")
    proc = await asyncio.create_subprocess_exec(
        exe, "-v", "error", *extra, "-show_streams", "-of", "json", target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode(errors="replace")
    return json.loads(out)


@pytest.mark.parametrize("mode", MODES)
async def test_sipp_camera_to_http_flv_read_by_ffprobe(tmp_path: Path, mode: str) -> None:
    media_port = free_tcp_port() if mode == "tcp-active" else 15060
    async with rig(tmp_path, mode) as r:
        await start_camera(r, tmp_path, mode, media_port)
        live_url = f"{r.url}/live/{CAM}.flv?token={r.token}"
        stop = asyncio.Event()
        # each capture ends once it holds what is asserted on it (with margin), its old window the deadline
        first_viewer = asyncio.create_task(capture(live_url, 3.0, tmp_path / "first.flv",
                                                   until=has_tags(40, audio=5)))
        leg = await established_leg(r)
        sender = start_sender(mode, leg, media_port, stop)
        # ffprobe reads the live HTTP-FLV URL directly (a second viewer, alongside the capture), and
        # the capture with frame counting
        direct_probe = asyncio.create_task(ffprobe(live_url, "-read_intervals", "%+1"))
        first = await first_viewer
        direct = await direct_probe
        counted = await ffprobe(str(tmp_path / "first.flv"), "-count_frames")
        for probe in (direct, counted):
            video = next(s for s in probe["streams"] if s["codec_type"] == "video")
            assert video["codec_name"] == "h264" and (video["width"], video["height"]) == (320, 240)
        video = next(s for s in counted["streams"] if s["codec_type"] == "video")
        assert int(video["nb_read_frames"]) > 25
        assert any(s["codec_type"] == "audio" and s["codec_name"] == "pcm_alaw" for s in counted["streams"])
        assert video_tags(first)[1][1][0] == 0x17  # after the sequence header: a keyframe

        # a late viewer starts at a keyframe from the GOP cache, quickly
        release = asyncio.Event()
        holder = asyncio.create_task(hold(live_url, release))
        late = await capture(live_url, 1.0, tmp_path / "late.flv", until=has_tags(3))
        tags = video_tags(late)
        assert tags[0][1][:2] == b"\x17\x00" and tags[1][1][:2] == b"\x17\x01"
        late_probe = await ffprobe(str(tmp_path / "late.flv"), "-count_frames")
        assert int(next(s for s in late_probe["streams"] if s["codec_type"] == "video")["nb_read_frames"]) > 0
        async with aiohttp.ClientSession() as http, \
                http.get(f"{r.url}/api/v1/streams/{CAM}", headers={"Authorization": f"Bearer {r.token}"}) as resp:
            stats = await resp.json()
        assert stats["codec"] == "h264" and stats["width"] == 320 and stats["rtp"]["received"] > 0
        assert stats["rtp"]["dropped_wrong_ssrc"] == 0 and stats["ttff_viewer_ms"]["last"] < 100
        assert stats["trace"][0]["diagnosis"] == "streaming"

        # killing the sender: media stops, the gateway re-INVITEs, the stream comes back
        back = asyncio.Event()  # the new leg's sender runs
        keep = asyncio.create_task(capture(live_url, 8.0, until=came_back(back)))
        await asyncio.sleep(0.5)
        release.set()
        await holder
        stop.set()
        await sender
        leg2 = await established_leg(r, not_call=leg.call_id, timeout=8)
        stop2 = asyncio.Event()
        sender2 = start_sender(mode, leg2, media_port, stop2)
        back.set()
        kept = await keep
        stop2.set()
        await sender2
        ts = [t for t, body in video_tags(kept) if body[1] == 1]
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert max(gaps) < 400 and len(ts) > 100, "stream did not come back on the kept connection"
        assert r.plane.invites.counters["reinvite:ok"] >= 1
        assert r.plane.invites.counters["bye:200"] >= 1  # the dead leg was hung up, sipp said 200
        msgs = sipp_messages(r)
        assert msgs.count("INVITE sip:") >= 2 and "BYE sip:" in msgs and "ACK sip:" in msgs
        async with asyncio.timeout(5):  # viewers gone (noticed within 1 s) + linger 0.5 s → BYE
            while r.plane.hub.get(CAM) is not None or r.plane.pool.in_use:
                await asyncio.sleep(0.1)
        await stop_camera(r)


async def test_play_errors_unknown_offline_not_admitted_and_timeout_trace(tmp_path: Path) -> None:
    # Configured waits, not sleeps: no RTP ever comes, so the 504 takes the whole invite_timeout (the
    # ready wait; sipp answers the INVITE in milliseconds); the camera never answers DeviceInfo or
    # Catalog, so its post-login sync ends only on the query/catalog timeouts, and until it ends the
    # last request (the device dropped) waits up to 5 s for that sync before its 404.
    async with rig(tmp_path, "udp", GBGATE_MEDIA__INVITE_TIMEOUT="2", GBGATE_SIP__QUERY_TIMEOUT="1",
                   GBGATE_SIP__CATALOG_FIRST_TIMEOUT="1") as r, aiohttp.ClientSession() as http:
        q = f"?token={r.token}"
        async with http.get(f"{r.url}/live/{CAM}.flv") as resp:
            assert resp.status == 401
        async with http.get(f"{r.url}/live/34020000001310009999.flv{q}") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "channel_not_found"
        await start_camera(r, tmp_path, "udp", 15060)
        # registered, but nobody sends RTP: 504 with the trace saying where it stopped
        async with http.get(f"{r.url}/live/{CAM}.flv{q}", timeout=aiohttp.ClientTimeout(total=15)) as resp:
            assert resp.status == 504
            err = (await resp.json())["error"]
        steps = [s["step"] for s in err["trace"][0]["steps"]]
        assert steps[0] == "offer_sent" and {"answer", "ack_sent", "timeout"} <= set(steps)
        assert "no RTP arrived" in err["trace"][0]["diagnosis"]
        # suspend the device: 403 (if still registered) or 409 (dropped)
        from whitelist.model import EntryStatus

        await r.gw.services.admission.set_status(CAM, EntryStatus.SUSPENDED, actor="test")  # type: ignore[union-attr]
        async with http.get(f"{r.url}/live/{CAM}.flv{q}") as resp:
            assert resp.status in (403, 409, 404)
        await stop_camera(r)


async def test_ws_flv_gives_the_same_stream(tmp_path: Path) -> None:
    async with rig(tmp_path, "udp") as r:
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
        assert os.path.exists(tmp_path / "ws.flv")
