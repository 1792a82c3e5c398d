"""Headless Chromium plays our WHEP stream (issue 4 tests): the page posts its SDP offer to
/live/{id}/whep, applies the answer, plays the track in a <video>, and reports `getStats()`
(framesDecoded, frame size, codec) back to a test endpoint; then it DELETEs its session.

The stream comes from an in-memory hub looping the H.264 (pass-through) or H.265 (transcoded)
test vector behind a real aiohttp server with the production route table, so this checks the
WebRTC output alone. Chromium is required in CI (CI=true), skipped locally when missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.api import build_web_app
from gateway.api.services import Services
from gateway.api.webrtc import WebrtcState, setup_webrtc
from gateway.config import load_settings
from tests.gateway.outputs.fakehub import CH, CH265, FakeHub, FakeTokens
from tests.interop.conftest import require_tool

pytestmark = [pytest.mark.interop, pytest.mark.requires("chromium")]

PAGE = """<!doctype html><html><body><video id="v" autoplay muted playsinline></video><script>
const params = new URLSearchParams(location.search);
const whep = params.get('whep');
const want = Number(params.get('frames') || 20);
async function report(result) {
  await fetch('/test/result', {method: 'POST', body: JSON.stringify(result),
                               headers: {'Content-Type': 'application/json'}});
}
async function run() {
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver('video', {direction: 'recvonly'});
  const video = document.getElementById('v');
  pc.ontrack = (ev) => { video.srcObject = new MediaStream([ev.track]); video.play().catch(() => {}); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {  // WHEP without trickle: send the offer with its candidates
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
    setTimeout(resolve, 3000);
  });
  const resp = await fetch(whep, {method: 'POST', body: pc.localDescription.sdp,
                                  headers: {'Content-Type': 'application/sdp'}});
  if (resp.status !== 201) { return report({error: 'POST ' + resp.status + ' ' + await resp.text()}); }
  const resource = resp.headers.get('Location');
  await pc.setRemoteDescription({type: 'answer', sdp: await resp.text()});
  const deadline = Date.now() + 20000;
  let result = {framesDecoded: 0};
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        const codec = s.codecId ? stats.get(s.codecId) : null;
        result = {framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth, frameHeight: s.frameHeight,
                  keyFramesDecoded: s.keyFramesDecoded, packetsLost: s.packetsLost,
                  codec: codec ? codec.mimeType : null, decoder: s.decoderImplementation};
      }
    });
    result.state = pc.connectionState;
    result.videoWidth = video.videoWidth;
    if (result.framesDecoded >= want && video.videoWidth > 0) break;
  }
  const whepUrl = new URL(whep, window.location.href);  // the resource is relative to the WHEP URL
  const del = await fetch(new URL(resource, whepUrl) + '?' + whepUrl.searchParams, {method: 'DELETE'});
  result.deleteStatus = del.status;
  pc.close();
  await report(result);
}
run().catch((e) => report({error: String(e)}));
</script></body></html>
"""


def chromium_args(user_data: Path, url: str) -> list[str]:
    exe = os.environ.get("CHROMIUM") or require_tool("chromium")
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            # host candidates as IP addresses, not mDNS names (no multicast resolver needed)
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            f"--user-data-dir={user_data}", url]


@contextlib.asynccontextmanager
async def page_server(app: web.Application) -> AsyncIterator[tuple[str, asyncio.Future[dict[str, Any]]]]:
    """Serve PAGE and collect the one result it POSTs, on the given app (next to its routes)."""
    result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def post_result(request: web.Request) -> web.Response:
        if not result.done():
            result.set_result(await request.json())
        return web.Response(status=204)

    app.router.add_get("/test/page.html", page)
    app.router.add_post("/test/result", post_result)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", result
    finally:
        await runner.cleanup()


async def play_in_chromium(base: str, whep_path: str, result: asyncio.Future[dict[str, Any]], tmp_path: Path,
                           *, frames: int = 20, timeout: float = 45.0) -> dict[str, Any]:
    """Open the page in headless Chromium and return what it reported."""
    from urllib.parse import quote

    url = f"{base}/test/page.html?whep={quote(whep_path, safe='')}&frames={frames}"
    proc = await asyncio.create_subprocess_exec(
        *chromium_args(tmp_path / "chromium", url), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        return await asyncio.wait_for(asyncio.shield(result), timeout)
    except TimeoutError:
        err = b""
        if proc.stderr is not None:
            with contextlib.suppress(TimeoutError):
                err = await asyncio.wait_for(proc.stderr.read(8000), 1)
        pytest.fail(f"Chromium reported nothing within {timeout:g} s; stderr: {err.decode(errors='replace')}")
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the group we started (chromium's helpers)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


def fake_app(hub: FakeHub) -> tuple[web.Application, WebrtcState]:
    svc = Services(settings=load_settings(env={}), repo=None, tokens=FakeTokens(), streams=hub)
    app = build_web_app(svc)
    return app, setup_webrtc(app)


@pytest.mark.parametrize(("channel", "codec"), [(CH, "h264"), (CH265, "h265")])
async def test_chromium_plays_whep(tmp_path: Path, channel: str, codec: str) -> None:
    hub = FakeHub()
    app, state = fake_app(hub)
    try:
        async with page_server(app) as (base, result):
            got = await play_in_chromium(base, f"/live/{channel}/whep?token=viewer", result, tmp_path)
            print(json.dumps(got))
            assert "error" not in got, got
            assert got["framesDecoded"] >= 20, got
            assert (got["frameWidth"], got["frameHeight"]) == (320, 240), got
            assert got["videoWidth"] == 320, got
            assert got["codec"] == "video/H264", got
            assert got["deleteStatus"] == 200, got
            assert not state.sessions.sessions and not hub.subs  # DELETE closed the pc and the subscription
            assert state.sessions.counters["connected"] == 1
    finally:
        await hub.stop()


# -- the real media plane: a sipp camera answers our INVITE and a sender streams PS over RTP ----


@contextlib.asynccontextmanager
async def camera_rig(tmp_path: Path, **env: str) -> AsyncIterator[tuple[Any, str, WebrtcState, asyncio.Event]]:
    """A real Gateway + sipp camera (UDP) whose media starts when the gateway INVITEs; our route
    table is served next to live.routes on the gateway's own services (until app.py adds it)."""
    from gateway.api import live
    from tests.interop.test_media_sipp import established_leg, rig, start_camera, start_sender, stop_camera

    async with rig(tmp_path, "udp", **env) as r:
        assert r.gw.services is not None
        app = build_web_app(r.gw.services, [live.routes])
        state = setup_webrtc(app)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        stop = asyncio.Event()
        senders: list[asyncio.Task[None]] = []

        async def feed() -> None:  # every INVITE leg gets a sender, as a real camera would
            call = None
            while not stop.is_set():
                leg = await established_leg(r, not_call=call, timeout=3600)
                call = leg.call_id
                senders.append(start_sender("udp", leg, 15060, stop))

        await start_camera(r, tmp_path, "udp", 15060)
        feeder = asyncio.create_task(feed())
        try:
            yield r, base, state, stop
        finally:
            stop.set()
            feeder.cancel()
            await asyncio.gather(feeder, *senders, return_exceptions=True)
            await runner.cleanup()
            await stop_camera(r)


async def test_chromium_plays_whep_from_sipp_camera(tmp_path: Path) -> None:
    from tests.interop.test_media_sipp import CAM

    require_tool("sipp")
    chromium_args(tmp_path, "")  # skip/fail early when Chromium is missing
    async with camera_rig(tmp_path) as (r, base, state, _):
        app = web.Application()
        async with page_server(app) as (page_base, result):
            got = await play_in_chromium(page_base, f"{base}/live/{CAM}/whep?token={r.token}", result, tmp_path)
        print(json.dumps(got))
        assert "error" not in got, got
        assert got["framesDecoded"] >= 20 and (got["frameWidth"], got["frameHeight"]) == (320, 240), got
        assert got["codec"] == "video/H264" and got["deleteStatus"] == 200, got
        assert not state.sessions.sessions
        snap = r.plane.hub.snapshot(CAM)
        assert snap is None or snap["viewers"] == 0  # the hub subscription went with the session
