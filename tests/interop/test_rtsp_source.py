"""Pull sources end to end with real peers (issue 14 #3): ffmpeg encodes a test picture (H.264
640x360) and publishes it to a real RTSP server (rtsp-server-perl, a Debian package: ffmpeg pushes
with ANNOUNCE/RECORD, we PLAY); the gateway pulls it under a GB channel ID and a viewer reads our
HTTP-FLV, probed by ffprobe. The server going away and coming back must not end the stream: the
source reconnects with back-off and video resumes. A file source plays an mp4 ffmpeg wrote."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.api.auth import Role
from gateway.app import Gateway
from tests.interop.conftest import free_port, gateway_settings, require_tool
from tests.interop.test_media_sipp import capture, ffprobe, has_tags, tag_counts, video_tags

pytestmark = [pytest.mark.interop, pytest.mark.requires("ffmpeg", "ffprobe")]

CH = "34020000001310000091"
PASSWORD = "cam-pw-7c1e"


@contextlib.asynccontextmanager
async def rtsp_server(client_port: int, source_port: int, rtp_port: int) -> AsyncIterator[None]:
    """rtsp-server-perl on loopback, and ffmpeg publishing testsrc2 to it (UDP: the server's only transport)."""
    server_exe, ffmpeg = require_tool("rtsp-server-perl"), require_tool("ffmpeg")
    server = await asyncio.create_subprocess_exec(
        server_exe, "-c", str(client_port), "-s", str(source_port), "--client_listen_address", "127.0.0.1",
        "--source_listen_address", "127.0.0.1", "--rtp_start_port", str(rtp_port), "-l", "1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    feeder = None
    try:
        for _ in range(50):  # until it listens for the publisher
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", source_port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        feeder = await asyncio.create_subprocess_exec(
            ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
            "-c:v", "libx264", "-g", "25", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
            "-f", "rtsp", f"rtsp://127.0.0.1:{source_port}/live",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(10):  # until the server describes the published stream
            while not await rtsp_describes(client_port):
                await asyncio.sleep(0.05)
        yield
    finally:
        for proc in (feeder, server):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()


async def rtsp_describes(port: int) -> bool:
    """The RTSP server answers DESCRIBE rtsp://127.0.0.1:port/live with 200 (404 until ffmpeg's ANNOUNCE)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(f"DESCRIBE rtsp://127.0.0.1:{port}/live RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
                     .encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 2)).startswith(b"RTSP/1.0 200")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def node(tmp_path: Path, **env: str) -> AsyncIterator[tuple[Gateway, str, str]]:
    settings = gateway_settings(tmp_path, GBGATE_MEDIA__LINGER="0.5", GBGATE_MEDIA__INVITE_TIMEOUT="8",
                                GBGATE_MEDIA__PULL_TIMEOUT="2", GBGATE_MEDIA__PULL_BACKOFF_MAX="1", **env)
    gw = Gateway(settings)
    await gw.start()
    try:
        assert gw.services is not None
        token = await gw.services.tokens.create(Role.INTEGRATOR, "rtsp-test")
        yield gw, gw.http_url, token
    finally:
        await gw.stop()


async def admit_host(gw: Gateway, channel_id: str, ip: str) -> None:
    from whitelist.model import Entry, EntryStatus, parse_networks

    assert gw.services is not None and gw.services.admission is not None
    entry = Entry(device_id=channel_id, status=EntryStatus.APPROVED, allowed_sources=parse_networks([ip]))
    await gw.services.admission.store.save_entry(entry, actor="test", action="add")
    await gw.services.admission.sync()


async def api(http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


@pytest.mark.requires("rtsp-server-perl")
async def test_rtsp_source_to_http_flv_read_by_ffprobe_and_reconnects(tmp_path: Path, caplog: Any) -> None:
    client_port, source_port = free_port(), free_port()
    rtp = 21000 + (client_port % 2000) * 4
    async with node(tmp_path) as (gw, base, token), aiohttp.ClientSession() as http:
        url = f"rtsp://admin:{PASSWORD}@127.0.0.1:{client_port}/live"
        # not whitelisted yet: refused with the reason, nothing stored
        status, body = await api(http, "POST", f"{base}/api/v1/sources", token, {"channel_id": CH, "url": url})
        assert status == 403 and body["error"]["code"] == "not_admitted" and PASSWORD not in json.dumps(body)
        await admit_host(gw, CH, "127.0.0.1")
        status, body = await api(http, "POST", f"{base}/api/v1/sources", token,
                                 {"channel_id": CH, "url": url, "name": "gate cam"})
        assert status == 201, body
        assert body["url"] == f"rtsp://admin:***@127.0.0.1:{client_port}/live"
        status, listing = await api(http, "GET", f"{base}/api/v1/sources", token)
        assert status == 200 and PASSWORD not in json.dumps(listing) and listing["count"] == 1

        async with rtsp_server(client_port, source_port, rtp):
            live = f"{base}/live/{CH}.flv?token={token}"
            # each capture ends once it holds what is asserted on it (with margin), its old window the deadline
            first = asyncio.create_task(capture(live, 4.0, tmp_path / "first.flv", until=has_tags(40)))
            probe = await ffprobe(live, "-read_intervals", "%+1")
            v = probe["streams"][0]
            assert (v["codec_name"], v["width"], v["height"]) == ("h264", 640, 360)
            data = await first
            assert len(video_tags(data)) > 25
            counted = await ffprobe(str(tmp_path / "first.flv"), "-count_frames")
            assert int(counted["streams"][0]["nb_read_frames"]) > 25

            # the viewer stays; the server goes away and comes back: the source reconnects
            back = asyncio.Event()  # the server is up again
            frames_at_back: list[int] = []

            def resumed(data: bytes) -> bool:
                """What is asserted below, with margin, and a second of video since the server came back."""
                frames, _, last = tag_counts(data)
                if not back.is_set():
                    return False
                frames_at_back[:] = frames_at_back or [frames]
                snap = gw.services.streams.snapshot(CH)  # type: ignore[union-attr]
                return (frames > 110 and last > 8000 and frames - frames_at_back[0] >= 25 and snap is not None
                        and snap["rtp"]["connects"] >= 2
                        and str(gw.services.health.state_of(f"channel:{CH}")) == "online")  # type: ignore[union-attr]
            viewer = asyncio.create_task(capture(live, 16.0, tmp_path / "across.flv", until=resumed))
            await asyncio.sleep(2.0)
        # the server is gone: offline in the ledger once the read times out (pull_timeout 2 s), back-off retries
        assert gw.services is not None and gw.services.health is not None
        for _ in range(60):
            if str(gw.services.health.state_of(f"channel:{CH}")) == "offline":
                break
            await asyncio.sleep(0.1)
        assert str(gw.services.health.state_of(f"channel:{CH}")) == "offline"
        async with rtsp_server(client_port, source_port, rtp):
            back.set()
            data = await viewer
            tags = video_tags(data)
            assert tags and tags[-1][0] > 8000, "video resumed after the reconnect"
            stamps = [t for t, _ in tags]
            assert stamps == sorted(stamps), "one timeline across the reconnect"
            assert str(gw.services.health.state_of(f"channel:{CH}")) == "online"
            snap = gw.services.streams.snapshot(CH)  # type: ignore[union-attr]
            assert snap is not None and snap["rtp"]["connects"] >= 2 and PASSWORD not in json.dumps(snap)
            across = await ffprobe(str(tmp_path / "across.flv"), "-count_frames")
            assert int(across["streams"][0]["nb_read_frames"]) > 100

        status, _ = await api(http, "DELETE", f"{base}/api/v1/sources/{CH}", token)
        assert status == 200
    assert PASSWORD not in caplog.text
    records = await audit_records(tmp_path)
    actions = [r["action"] for r in records if r["target"] == CH]
    assert {"source_refused", "source_add", "source_remove"} <= set(actions)
    assert PASSWORD not in json.dumps(records)


async def audit_records(tmp_path: Path) -> list[dict[str, Any]]:
    from gateway.store.db import make_engine, make_sessionmaker
    from whitelist.store import WhitelistStore

    engine = make_engine(f"sqlite:///{tmp_path / 'gbgate.db'}")
    try:
        recs = await WhitelistStore(make_sessionmaker(engine)).audit_records()
        return [{"action": r.action, "target": r.target, "before": r.before, "after": r.after, "reason": r.reason}
                for r in recs]
    finally:
        await engine.dispose()


async def make_clip(mp4: Path, seconds: int, *codec: str, audio: tuple[str, ...] = ()) -> Path:
    """A 320x240 25 fps test clip written by ffmpeg (codec arguments as given; `audio` adds a 440 Hz
    tone encoded with those arguments)."""
    ffmpeg = require_tool("ffmpeg")
    mp4.parent.mkdir(exist_ok=True)
    tone = ("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100") if audio else ()
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        *tone, "-t", str(seconds), *codec, "-pix_fmt", "yuv420p", *audio, str(mp4))
    assert await proc.wait() == 0
    return mp4


async def test_file_source_plays_an_mp4_in_a_loop(tmp_path: Path) -> None:
    media = tmp_path / "media"
    mp4 = await make_clip(media / "clip.mp4", 2, "-c:v", "libx264", "-g", "25")
    async with node(tmp_path, GBGATE_MEDIA__FILE_SOURCE_ROOT=str(media)) as (gw, base, token), \
            aiohttp.ClientSession() as http:
        await admit_host(gw, CH, "127.0.0.1")
        status, body = await api(http, "POST", f"{base}/api/v1/sources", token,
                                 {"channel_id": CH, "url": "file:///etc/passwd"})
        assert status == 403 and "FILE_OUTSIDE_ROOT" in body["error"]["message"]
        status, body = await api(http, "POST", f"{base}/api/v1/sources", token,
                                 {"channel_id": CH, "url": f"file://{mp4}"})
        assert status == 201, body
        data = await capture(f"{base}/live/{CH}.flv?token={token}", 3.0, tmp_path / "file.flv",
                             until=lambda d: tag_counts(d)[2] > 2200)  # what is asserted next
        tags = video_tags(data)
        assert tags[-1][0] > 2200, "the 2 s clip looped, on one timeline"
        probe = await ffprobe(str(tmp_path / "file.flv"), "-count_frames")
        v = probe["streams"][0]
        assert (v["codec_name"], v["width"], v["height"]) == ("h264", 320, 240)


async def test_h265_file_source_is_passed_through_untouched(tmp_path: Path) -> None:
    """hvcC + length-prefixed HEVC from an mp4 reach the hub as Annex-B with VPS/SPS/PPS (ffmpeg 5 cannot
    read enhanced FLV, so the hub's own view is checked: codec, resolution parsed from our SPS, frames)."""
    media = tmp_path / "media"
    mp4 = await make_clip(media / "clip265.mp4", 2, "-c:v", "libx265", "-x265-params", "keyint=25:log-level=error")
    async with node(tmp_path, GBGATE_MEDIA__FILE_SOURCE_ROOT=str(media)) as (gw, base, token), \
            aiohttp.ClientSession() as http:
        await admit_host(gw, CH, "127.0.0.1")
        status, body = await api(http, "POST", f"{base}/api/v1/sources", token,
                                 {"channel_id": CH, "url": f"file://{mp4}"})
        assert status == 201, body
        viewer = asyncio.create_task(capture(f"{base}/live/{CH}.flv?token={token}", 2.5))
        await asyncio.sleep(2.0)
        status, snap = await api(http, "GET", f"{base}/api/v1/streams/{CH}", token)
        await viewer
        assert status == 200, snap
        assert (snap["codec"], snap["width"], snap["height"]) == ("h265", 320, 240)
        assert snap["frames"] > 25 and snap["rtp"]["codec"] == "h265" and snap["rtp"]["state"] == "live"


async def test_always_on_source_is_pulled_without_a_viewer(tmp_path: Path) -> None:
    media = tmp_path / "media"
    mp4 = await make_clip(media / "clip.mp4", 1, "-c:v", "libx264", "-g", "25")
    async with node(tmp_path, GBGATE_MEDIA__FILE_SOURCE_ROOT=str(media)) as (gw, base, token), \
            aiohttp.ClientSession() as http:
        await admit_host(gw, CH, "127.0.0.1")
        status, body = await api(http, "POST", f"{base}/api/v1/sources", token,
                                 {"channel_id": CH, "url": f"file://{mp4}", "mode": "always_on"})
        assert status == 201, body
        assert gw.services is not None and gw.services.health is not None and gw.services.streams is not None
        for _ in range(50):
            snap = gw.services.streams.snapshot(CH)
            if snap is not None and snap["state"] == "live":
                break
            await asyncio.sleep(0.1)
        assert snap is not None and snap["state"] == "live"
        assert str(gw.services.health.state_of(f"channel:{CH}")) == "online"
        # the security team suspends the channel: the pull stops at once and is not reopened
        from whitelist.model import EntryStatus

        assert gw.services.admission is not None
        await gw.services.admission.set_status(CH, EntryStatus.SUSPENDED, actor="test", reason="check")
        await asyncio.sleep(1.0)
        snap = gw.services.streams.snapshot(CH)
        assert snap is None or snap["state"] != "live"
        pulls = gw.services.extra["sources"].pulls
        assert pulls.counters["revoked"] >= 1 and pulls.counters["refused:NOT_ADMITTED"] >= 1  # the hold's retry
        await gw.services.admission.set_status(CH, EntryStatus.APPROVED, actor="test", reason="back")
        # removing the source ends the stream and the hold
        status, _ = await api(http, "DELETE", f"{base}/api/v1/sources/{CH}", token)
        assert status == 200
        for _ in range(30):
            if gw.services.streams.snapshot(CH) is None:
                break
            await asyncio.sleep(0.1)
        assert gw.services.streams.snapshot(CH) is None


async def test_rtmp_source_from_ffmpeg_to_http_flv(tmp_path: Path) -> None:
    """ffmpeg serves RTMP itself (`-listen 1`): FLV/avcC packets (length-prefixed) → Annex-B → our FLV."""
    ffmpeg = require_tool("ffmpeg")
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
        "-c:v", "libx264", "-g", "25", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-f", "flv", "-listen", "1", f"rtmp://127.0.0.1:{port}/live/cam",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with node(tmp_path) as (gw, base, token), aiohttp.ClientSession() as http:
            await admit_host(gw, CH, "127.0.0.1")
            status, body = await api(http, "POST", f"{base}/api/v1/sources", token,
                                     {"channel_id": CH, "url": f"rtmp://127.0.0.1:{port}/live/cam"})
            assert status == 201, body
            await asyncio.sleep(0.5)  # let ffmpeg listen (an early refusal would only cost one back-off)
            data = await capture(f"{base}/live/{CH}.flv?token={token}", 3.0, tmp_path / "rtmp.flv")
            assert len(video_tags(data)) > 25
            probe = await ffprobe(str(tmp_path / "rtmp.flv"), "-count_frames")
            v = probe["streams"][0]
            assert (v["codec_name"], v["width"], v["height"]) == ("h264", 640, 360)
            assert int(v["nb_read_frames"]) > 25
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


@pytest.mark.parametrize(("container", "audio_args", "probe_name"), [
    ("mp4", ["-c:a", "aac", "-ar", "44100", "-ac", "2"], "aac"),           # raw AAC + AudioSpecificConfig
    ("mkv", ["-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1"], "pcm_alaw"),  # G.711 A-law, as cameras send it
])
async def test_file_source_audio_is_relayed_without_transcoding(tmp_path: Path, container: str,
                                                                audio_args: list[str], probe_name: str) -> None:
    media = tmp_path / "media"
    clip = await make_clip(media / f"av.{container}", 2, "-c:v", "libx264", "-g", "25", audio=tuple(audio_args))
    async with node(tmp_path, GBGATE_MEDIA__FILE_SOURCE_ROOT=str(media)) as (gw, base, token), \
            aiohttp.ClientSession() as http:
        await admit_host(gw, CH, "127.0.0.1")
        status, body = await api(http, "POST", f"{base}/api/v1/sources", token,
                                 {"channel_id": CH, "url": f"file://{clip}"})
        assert status == 201, body
        await capture(f"{base}/live/{CH}.flv?token={token}", 3.0, tmp_path / "av.flv",
                      until=has_tags(10, audio=35))  # over 20 audio frames asserted
        probe = await ffprobe(str(tmp_path / "av.flv"), "-count_frames")
        kinds = {s["codec_type"]: s for s in probe["streams"]}
        assert kinds["video"]["codec_name"] == "h264"
        assert kinds["audio"]["codec_name"] == probe_name and int(kinds["audio"]["nb_read_frames"]) > 20
