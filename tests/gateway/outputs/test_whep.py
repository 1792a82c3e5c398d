"""WHEP output: offer checks, sessions, and real aiortc clients that receive and decode the
pass-through and transcoded streams, over the API routes too (the track itself: test_whep_track.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway.outputs.whep import (
    BadOffer,
    NoCommonCodec,
    TooManySessions,
    TranscodeBusy,
    WhepSessions,
    check_offer,
)
from tests.gateway.outputs.fakehub import CH, CH265, OFFLINE, FakeHub

OFFER_VP8_ONLY = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n" \
                 "c=IN IP4 0.0.0.0\r\na=recvonly\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n"


def test_check_offer() -> None:
    with pytest.raises(BadOffer):
        check_offer("hello")
    with pytest.raises(NoCommonCodec):
        check_offer(OFFER_VP8_ONLY)
    with pytest.raises(BadOffer):
        check_offer(OFFER_VP8_ONLY.replace("m=video", "m=audio").replace("VP8/90000", "opus/48000/2"))
    with pytest.raises(BadOffer):
        check_offer(OFFER_VP8_ONLY.replace("a=recvonly", "a=sendonly").replace("VP8", "H264")
                    + "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n")


async def client_offer(audio: bool = False) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def receive(pc: RTCPeerConnection, answer: str, n: int = 10) -> list[Any]:
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def _on(track: Any) -> None:
        if not got.done():
            got.set_result(track)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    track = await asyncio.wait_for(got, 5)
    return [await asyncio.wait_for(track.recv(), 10) for _ in range(n)]


@pytest.mark.parametrize("channel", [CH, CH265])
async def test_aiortc_client_receives_and_decodes(hub: FakeHub, channel: str) -> None:
    sessions = WhepSessions()
    pc = await client_offer(audio=True)
    sub = await hub.subscribe(channel, "frames")
    codec = hub.stream_info(channel)["codec"]  # type: ignore[index]
    session, answer = await sessions.create(channel, sub, pc.localDescription.sdp, codec=codec)
    try:
        video = answer.split("m=audio")[0] if answer.index("m=video") < answer.find("m=audio") else \
            answer.split("m=video")[1]
        assert "H264/90000" in video and "VP8" not in video and "a=sendonly" in video
        frames = await receive(pc, answer, 10)
        assert all(isinstance(f, av.VideoFrame) and (f.width, f.height) == (320, 240) for f in frames)
        assert session.transcoding is (channel == CH265)
        assert session.track.sent >= 10
    finally:
        await pc.close()
        await sessions.close_all()
    assert sub.closed and not sessions.sessions


async def test_remote_close_ends_session(hub: FakeHub) -> None:
    sessions = WhepSessions()
    pc = await client_offer()
    sub = await hub.subscribe(CH, "frames")
    session, answer = await sessions.create(CH, sub, pc.localDescription.sdp, codec="h264")
    await receive(pc, answer, 2)
    await pc.close()  # DTLS close_notify / ICE consent lost → our side closes
    for _ in range(200):
        if not sessions.sessions:
            break
        await asyncio.sleep(0.05)
    assert not sessions.sessions and sub.closed
    assert session.close_reason is not None
    await sessions.close_all()


async def test_capacity_limits(hub: FakeHub) -> None:
    sessions = WhepSessions(max_sessions=1, max_transcodes=0)
    with pytest.raises(TranscodeBusy):
        sessions.check_capacity("h265")
    pc = await client_offer()
    sub = await hub.subscribe(CH, "frames")
    await sessions.create(CH, sub, pc.localDescription.sdp, codec="h264")
    sub2 = await hub.subscribe(CH, "frames")
    with pytest.raises(TooManySessions):
        await sessions.create(CH, sub2, pc.localDescription.sdp, codec="h264")
    assert sub2.closed  # a refused viewer's subscription is released at once
    await pc.close()
    await sessions.close_all()


async def test_connect_timeout_closes_unanswered_session(hub: FakeHub) -> None:
    sessions = WhepSessions(connect_timeout=0.3)
    pc = await client_offer()
    sub = await hub.subscribe(CH, "frames")
    session, _ = await sessions.create(CH, sub, pc.localDescription.sdp, codec="h264")
    await asyncio.sleep(0.6)  # the client never applies the answer
    assert session.closed and session.close_reason == "connect_timeout" and sub.closed
    await pc.close()
    await sessions.close_all()


# -- the HTTP resource -------------------------------------------------------------------------


async def test_whep_http_post_and_delete(api: Any, hub: FakeHub) -> None:
    pc = await client_offer()
    r = await api.post(f"/live/{CH}/whep?token=viewer", data=pc.localDescription.sdp,
                       headers={"Content-Type": "application/sdp"})
    assert r.status == 201, await r.text()
    assert r.content_type == "application/sdp"
    loc = r.headers["Location"]
    assert loc.startswith(f"/live/{CH}/whep/")
    frames = await receive(pc, await r.text(), 3)
    assert frames[0].width == 320
    assert len(api.state.sessions.sessions) == 1
    r = await api.get("/api/v1/webrtc/sessions", headers={"Authorization": "Bearer ops"})
    assert (await r.json())["count"] == 1
    r = await api.delete(loc, headers={"Authorization": "Bearer viewer"})
    assert r.status == 200
    assert not api.state.sessions.sessions and not hub.subs
    r = await api.delete(loc, headers={"Authorization": "Bearer viewer"})
    assert r.status == 404 and (await r.json())["error"]["code"] == "session_not_found"
    await pc.close()


@pytest.mark.parametrize(("channel", "token", "ctype", "body", "status", "code"), [
    (CH, None, "application/sdp", "v=0", 401, "unauthorized"),
    (CH, "vendor", "application/sdp", "v=0", 403, "forbidden"),
    (CH, "viewer", "application/json", "{}", 415, "unsupported_media_type"),
    (CH, "viewer", "application/sdp", "not sdp", 400, "bad_offer"),
    (CH, "viewer", "application/sdp", OFFER_VP8_ONLY, 415, "no_common_codec"),
    (OFFLINE, "viewer", "application/sdp", None, 409, "device_unavailable"),
    ("34020000001320000099", "viewer", "application/sdp", None, 404, "channel_not_found"),
    ("12345", "viewer", "application/sdp", None, 404, "channel_not_found"),
])
async def test_whep_http_errors(api: Any, hub: FakeHub, channel: str, token: str | None, ctype: str,
                                body: str | None, status: int, code: str) -> None:
    pc = None
    if body is None:
        pc = await client_offer()
        body = pc.localDescription.sdp
    url = f"/live/{channel}/whep" + (f"?token={token}" if token else "")
    r = await api.post(url, data=body, headers={"Content-Type": ctype})
    assert r.status == status
    assert (await r.json())["error"]["code"] == code
    assert not api.state.sessions.sessions and not hub.subs
    if pc is not None:
        await pc.close()


async def test_whep_options_preflight(api: Any) -> None:
    r = await api.options(f"/live/{CH}/whep")
    assert r.status == 204 and "Location" in r.headers["Access-Control-Expose-Headers"]


async def test_session_ages_come_from_the_given_clock(hub: FakeHub) -> None:
    now = [500.0]
    sessions = WhepSessions(clock=lambda: now[0])
    pc = await client_offer()
    sub = await hub.subscribe(CH, "frames")
    session, _ = await sessions.create(CH, sub, pc.localDescription.sdp, codec="h264")
    assert session.created == 500.0
    now[0] += 12.5
    assert [s["age_s"] for s in sessions.snapshot()] == [12.5]
    await pc.close()
    await sessions.close_all()
