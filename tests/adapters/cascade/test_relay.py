"""The upper's INVITE served from the hub: offer checks, PS/RTP packetizing, the relay's dialog
(100, 200 + SDP, ACK → RTP to the offer's c=/m= with its SSRC, BYE → stop and unsubscribe)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Hashable, Mapping
from typing import Any

import pytest

from adapters.cascade.relay import PsRtpPacketizer, StreamRelay, check_offer
from gateway.gb import sdp
from gateway.gb.ssrc import ssrc_to_int
from gateway.media.frames import Codec, MediaFrame
from gateway.media.pool import PortPool
from gateway.media.ps import PsDemuxer
from gateway.media.rtp import parse_rtp
from gateway.sip.events import Peer
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.router import SipRouter
from tests.gateway.media.vectors import video_frames

CH = "34020000001310000301"
UPPER = "44000000002000000001"
PEER = Peer("udp", "127.0.0.1", 5070)
SSRC = "0440000123"


def offer(port: int, *, pts: str = "96 97 98", proto: str = "RTP/AVP", setup: str = "", ssrc: str | None = SSRC,
          session: str = "Play") -> bytes:
    lines = ["v=0", f"o={CH} 0 0 IN IP4 127.0.0.1", f"s={session}", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=video {port} {proto} {pts}", "a=recvonly", "a=rtpmap:96 PS/90000", "a=rtpmap:98 H264/90000"]
    if setup:
        lines.append(f"a=setup:{setup}")
    if ssrc:
        lines.append(f"y={ssrc}")
    return ("\r\n".join(lines) + "\r\n").encode()


def invite(body: bytes, channel: str = CH, call_id: str = "play-1") -> Request:
    head = (f"INVITE sip:{channel}@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:{UPPER}@4400000000>;tag=up\r\nTo: <sip:{channel}@3402000000>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:{UPPER}@127.0.0.1:5070>\r\nSubject: {channel}:0,{UPPER}:0\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    msg = parse_message(head + body)
    assert isinstance(msg, Request)
    return msg


def in_dialog(method: str, call_id: str = "play-1") -> Request:
    msg = parse_message((f"{method} sip:{CH}@127.0.0.1 SIP/2.0\r\n"
                         f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{method}\r\n"
                         f"From: <sip:{UPPER}@4400000000>;tag=up\r\nTo: <sip:{CH}@3402000000>;tag=x\r\n"
                         f"Call-ID: {call_id}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def shared(channel_id: str) -> bool:
    return channel_id == CH


@pytest.mark.parametrize(("kw", "channel", "status", "reason"), [
    ({}, CH, 0, "ok"),
    ({}, "34020000001310000999", 404, "not_shared"),
    ({"pts": "98"}, CH, 415, "no_ps_96"),
    ({"proto": "TCP/RTP/AVP", "setup": "passive"}, CH, 0, "ok"),
    ({"ssrc": None}, CH, 400, "no_ssrc"),
    ({"session": "Playback"}, CH, 488, "session_playback"),
])
def test_offer_checks(kw: dict[str, Any], channel: str, status: int, reason: str) -> None:
    verdict = check_offer(invite(offer(40000, **kw), channel=channel), shared)
    assert (verdict.status, verdict.reason) == (status, reason)
    if status == 0:
        assert verdict.offer is not None and (verdict.offer.ip, verdict.offer.port, verdict.offer.ssrc) == \
            ("127.0.0.1", 40000, SSRC)


def test_packetizer_starts_on_a_keyframe_and_round_trips_through_the_demuxer() -> None:
    frames = video_frames(Codec.H264)
    rtp = PsRtpPacketizer(ssrc_to_int(SSRC), mtu=200)
    assert rtp.packets(frames[1]) == []  # not a keyframe: wait for one
    demux = PsDemuxer()
    out: list[MediaFrame] = []
    for frame in frames:
        packets = [parse_rtp(p) for p in rtp.packets(frame)]
        assert packets and all(p.ssrc == ssrc_to_int(SSRC) and p.payload_type == 96 for p in packets)
        assert [p.marker for p in packets] == [False] * (len(packets) - 1) + [True]
        assert len({p.timestamp for p in packets}) == 1 and packets[0].timestamp == frame.pts
        out += demux.feed(b"".join(bytes(p.payload) for p in packets), frame_end=True)
    assert [f.data for f in out] == [f.data for f in frames]


class FakeStream:
    def __init__(self, frames: list[MediaFrame]) -> None:
        self.queue: asyncio.Queue[MediaFrame | None] = asyncio.Queue()
        for f in frames:
            self.queue.put_nowait(f)
        self.closed = False
        self.reason = ""

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> MediaFrame:
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    def close(self, reason: str = "closed") -> None:
        self.closed, self.reason = True, reason
        self.queue.put_nowait(None)


class FakeHub:
    def __init__(self, frames: list[MediaFrame]) -> None:
        self.frames = frames
        self.streams: list[FakeStream] = []

    async def subscribe(self, channel_id: str, kind: str = "flv", *, timeout: float | None = None) -> FakeStream:
        assert kind == "frames"
        stream = FakeStream(self.frames)
        self.streams.append(stream)
        return stream


class Endpoint:
    def __init__(self) -> None:
        self.responses: list[Response] = []

    def respond(self, key: Hashable, response: Response, *, stateless: bool = False) -> None:
        self.responses.append(response)

    async def request(self, request: Request, peer: Peer, *, timeout: float | None = None) -> Response:
        raise AssertionError("no request expected")


class UpperMedia:
    """The upper's media receiver for one transport: a UDP socket, a TCP listener (it offered
    a=setup:passive) or a TCP client connecting to our answer's port (it offered a=setup:active)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.packets: asyncio.Queue[bytes] = asyncio.Queue()
        self.udp: socket.socket | None = None
        self.server: asyncio.Server | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.port = 9

    async def start(self) -> None:
        if self.mode == "udp":
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.udp.setblocking(False)
            self.port = self.udp.getsockname()[1]
            self.tasks.append(asyncio.create_task(self._udp_loop()))
        elif self.mode == "tcp-passive":
            self.server = await asyncio.start_server(
                lambda r, w: self.tasks.append(asyncio.create_task(self._tcp_loop(r, w))), "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]

    async def connect(self, port: int) -> None:
        if self.mode == "tcp-active":
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            self.tasks.append(asyncio.create_task(self._tcp_loop(reader, writer)))

    def offer(self) -> bytes:
        if self.mode == "udp":
            return offer(self.port)
        setup = "passive" if self.mode == "tcp-passive" else "active"
        return offer(self.port, proto="TCP/RTP/AVP", setup=setup)

    async def _udp_loop(self) -> None:
        assert self.udp is not None
        loop = asyncio.get_running_loop()
        while True:
            self.packets.put_nowait(await loop.sock_recv(self.udp, 65536))

    async def _tcp_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                self.packets.put_nowait(await reader.readexactly(size))
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.udp is not None:
            self.udp.close()
        if self.server is not None:
            self.server.close()


@pytest.mark.parametrize("mode", ["udp", "tcp-passive", "tcp-active"])
async def test_invite_ack_rtp_then_bye_stops_and_unsubscribes(mode: str) -> None:
    upper = UpperMedia(mode)
    await upper.start()
    frames = video_frames(Codec.H264)
    hub, endpoint, router = FakeHub(frames), Endpoint(), SipRouter()
    router.bind(endpoint)
    pool = PortPool(41000, 41099, "3402000000")
    relay = StreamRelay(endpoint=endpoint, router=router, hub=hub, pool=pool, media_host="127.0.0.1",
                        sdp_host="127.0.0.1", contact="<sip:34020000002000000001@127.0.0.1:5060>")
    try:
        relay.on_invite(invite(upper.offer()), PEER, "k", shared)
        async with asyncio.timeout(2):
            while len(endpoint.responses) < 2:
                await asyncio.sleep(0.01)
        trying, ok = endpoint.responses
        assert (trying.status, ok.status) == (100, 200) and ok.headers.get("Contact")
        assert trying.to.tag == ok.to.tag  # one To tag for the whole transaction
        answer = sdp.parse_answer(ok.body)
        assert answer.ssrc == SSRC and ok.body.count(b"a=sendonly") == 1 and pool.in_use == 1
        expected = {"udp": sdp.MediaTransport.UDP, "tcp-passive": sdp.MediaTransport.TCP_PASSIVE,
                    "tcp-active": sdp.MediaTransport.TCP_ACTIVE}[mode]
        assert answer.transport is expected  # as the upper sees it: our a=setup is the reverse of its own
        await upper.connect(answer.port)
        router.on_ack(in_dialog("ACK"), PEER)
        received = []
        async with asyncio.timeout(3):
            while len(received) < len(frames):
                pkt = parse_rtp(await upper.packets.get())
                assert pkt.ssrc == ssrc_to_int(SSRC) and pkt.payload_type == 96
                if pkt.marker:
                    received.append(pkt.timestamp)
        assert received == [f.pts for f in frames]
        router.on_request(in_dialog("BYE"), PEER, "bye")
        assert endpoint.responses[-1].status == 200
        async with asyncio.timeout(2):
            while relay.sessions:
                await asyncio.sleep(0.01)
        assert hub.streams[0].closed and pool.in_use == 0 and router.dialogs() == 0
        assert relay.stats["invite:ok"] == 1 and relay.stats["ended:upper_bye"] == 1
    finally:
        await relay.stop()
        await upper.close()


async def test_refusals_are_answered_without_touching_the_hub() -> None:
    hub, endpoint, router = FakeHub([]), Endpoint(), SipRouter()
    router.bind(endpoint)
    relay = StreamRelay(endpoint=endpoint, router=router, hub=hub, pool=PortPool(41100, 41199, "3402000000"),
                        media_host="127.0.0.1", sdp_host="127.0.0.1", contact="<sip:x@127.0.0.1>")
    relay.on_invite(invite(offer(40000), channel="34020000001310000999"), PEER, "k1", shared)
    relay.on_invite(invite(offer(40000, pts="98"), call_id="c2"), PEER, "k2", shared)
    assert [r.status for r in endpoint.responses] == [100, 404, 100, 415]
    assert hub.streams == [] and relay.sessions == {}
    await relay.stop()


class SlowHub(FakeHub):
    async def subscribe(self, channel_id: str, kind: str = "flv", *, timeout: float | None = None) -> FakeStream:
        await asyncio.sleep(10)  # the camera takes its time
        raise AssertionError("cancelled before")


async def test_a_cancel_before_the_stream_is_up_answers_487_and_releases() -> None:
    hub, endpoint, router = SlowHub([]), Endpoint(), SipRouter()
    router.bind(endpoint)
    relay = StreamRelay(endpoint=endpoint, router=router, hub=hub, pool=PortPool(41200, 41299, "3402000000"),
                        media_host="127.0.0.1", sdp_host="127.0.0.1", contact="<sip:x@127.0.0.1>")
    relay.on_invite(invite(offer(40000)), PEER, "k", shared)
    await asyncio.sleep(0.01)
    router.on_request(in_dialog("CANCEL"), PEER, "cancel")
    assert [r.status for r in endpoint.responses] == [100, 487, 200]
    assert endpoint.responses[1].cseq[1] == "INVITE" and endpoint.responses[2].cseq[1] == "CANCEL"
    async with asyncio.timeout(2):
        while relay.sessions:
            await asyncio.sleep(0.01)
    assert router.dialogs() == 0 and relay.stats["ended:upper_cancel"] == 1
    await relay.stop()


class ByeEndpoint(Endpoint):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Request] = []

    async def request(self, request: Request, peer: Peer, *, timeout: float | None = None) -> Response:
        self.sent.append(request)
        return make_response(request, 200, to_tag="u")


class RecordingHub(FakeHub):
    def __init__(self, frames: list[MediaFrame]) -> None:
        super().__init__(frames)
        self.asked: list[str] = []

    async def subscribe(self, channel_id: str, kind: str = "flv", *, timeout: float | None = None) -> FakeStream:
        self.asked.append(channel_id)
        return await super().subscribe(channel_id, kind, timeout=timeout)


class Ledger:
    def __init__(self) -> None:
        self.states: list[tuple[str, str, str]] = []

    def set_state(self, subject: str, state: str, cause: str, ts: float,
                  evidence: Mapping[str, Any] | None = None) -> None:
        self.states.append((subject, state, cause))


async def test_shutdown_hangs_up_the_upper_and_the_ledger_has_the_play_per_upper() -> None:
    upper = UpperMedia("udp")
    await upper.start()
    hub, endpoint, router, ledger = RecordingHub(video_frames(Codec.H264)), ByeEndpoint(), SipRouter(), Ledger()
    router.bind(endpoint)
    relay = StreamRelay(endpoint=endpoint, router=router, hub=hub, pool=PortPool(41300, 41399, "3402000000"),
                        media_host="127.0.0.1", sdp_host="127.0.0.1", contact="<sip:x@127.0.0.1>",
                        upper_id="44000000002000000001", health=ledger, clock=lambda: 1e9)
    try:
        relay.on_invite(invite(upper.offer()), PEER, "k", shared, source=lambda cid: "34020000001310000777")
        async with asyncio.timeout(2):
            while len(endpoint.responses) < 2:
                await asyncio.sleep(0.01)
        router.on_ack(in_dialog("ACK"), PEER)
        await upper.packets.get()  # playing
        assert hub.asked == ["34020000001310000777"]  # the mapped ID's own channel on our side
        (session,) = relay.sessions.values()
        subject = f"cascade:44000000002000000001/{session.channel_id}"
        assert ledger.states == [(subject, "online", "upper_play")]
        await relay.stop()
        (bye,) = endpoint.sent
        assert bye.method == "BYE" and bye.call_id == session.call_id and relay.stats["bye:sent"] == 1
        assert ledger.states[-1] == (subject, "offline", "shutdown") and not relay.sessions
    finally:
        await relay.stop()
        await upper.close()


def free_block(kind: int, n: int, start: int = 41400, stop: int = 42400) -> int:
    """The first even port from `start` whose `n` even ports are all free to bind now: the test
    squats them itself, so on a machine where something else holds one it moves on instead of
    failing (41400… lies in the ephemeral range)."""
    for base in range(start, stop, 2 * n):
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + 2 * n, 2):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no {n} free even ports in {start}..{stop}")


@pytest.mark.parametrize("mode", ["udp", "tcp-active"])
async def test_a_leased_port_bound_by_someone_else_is_quarantined_and_the_next_one_served(mode: str) -> None:
    """The relay's port range may overlap the ephemeral ports (bench_cascade_relay hit it: one play
    in 20 refused 503): a busy port is skipped like on the device side, and only when every try is
    busy does the upper get 503, with no lease left behind."""
    kind = socket.SOCK_DGRAM if mode == "udp" else socket.SOCK_STREAM
    base = free_block(kind, 4)
    pool = PortPool(base, base + 7, "3402000000")  # 4 even ports
    assert pool.capacity == 4
    squatters = []
    for port in (base, base + 2, base + 4):
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", port))
        if kind == socket.SOCK_STREAM:
            s.listen(1)
        squatters.append(s)
    hub, endpoint, router = FakeHub(video_frames(Codec.H264)), Endpoint(), SipRouter()
    router.bind(endpoint)
    relay = StreamRelay(endpoint=endpoint, router=router, hub=hub, pool=pool, media_host="127.0.0.1",
                        sdp_host="127.0.0.1", contact="<sip:x@127.0.0.1>")
    body = offer(40000) if mode == "udp" else offer(40000, proto="TCP/RTP/AVP", setup="active")
    try:
        relay.on_invite(invite(body), PEER, "k", shared)
        async with asyncio.timeout(2):
            while len(endpoint.responses) < 2:
                await asyncio.sleep(0.01)
        assert endpoint.responses[1].status == 200
        assert sdp.parse_answer(endpoint.responses[1].body).port == base + 6  # the one port nobody holds
        assert pool.in_use == 1 and relay.stats["ports_busy"] <= 3
        (session,) = relay.sessions.values()
        relay._end(session, "test")  # the upper's play ends before its ACK: the port goes back
        async with asyncio.timeout(2):
            while relay.sessions:
                await asyncio.sleep(0.01)
        s = socket.socket(socket.AF_INET, kind)  # now every port is held by someone else
        s.bind(("127.0.0.1", base + 6))
        if kind == socket.SOCK_STREAM:
            s.listen(1)
        squatters.append(s)
        relay.on_invite(invite(body, call_id="play-2"), PEER, "k2", shared)
        async with asyncio.timeout(2):
            while len(endpoint.responses) < 4:
                await asyncio.sleep(0.01)
        assert endpoint.responses[3].status == 503 and relay.stats["invite:refused:no_port"] == 1
        assert pool.in_use == 0
    finally:
        await relay.stop()
        for s in squatters:
            s.close()
