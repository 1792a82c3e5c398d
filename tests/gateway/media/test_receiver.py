"""RTP receivers: source/SSRC checks (spoofed RTP never reaches a viewer), reorder, TCP framing,
garbage and floods counted, over real loopback sockets."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import struct

import pytest

from gateway.media import rfc4571
from gateway.media.errors import MediaError
from gateway.media.frames import Codec, MediaFrame
from gateway.media.hub import FRAMES, StreamHub
from gateway.media.receiver import RtpSession, TcpPassiveReceiver, UdpReceiver, open_tcp_active
from gateway.media.session_stats import Trace
from load_tests.bench_media import PsRtpSender

SSRC = 106000001


class Sink:
    def __init__(self) -> None:
        self.frames: list[MediaFrame] = []

    def push(self, frame: MediaFrame) -> None:
        self.frames.append(frame)


def packets(n_frames: int, ssrc: int = SSRC, **kw: object) -> list[bytes]:
    s = PsRtpSender(ssrc=ssrc, start_ts=0, **kw)  # type: ignore[arg-type]
    out: list[bytes] = []
    for _ in range(n_frames):
        out += s.next_frame()
    return out


def test_in_order_stream_gives_every_frame() -> None:
    sink = Sink()
    trace = Trace()
    s = RtpSession(sink, ssrc=SSRC, allowed_hosts=["127.0.0.1"], trace=trace)
    for p in packets(25):
        s.feed(p, ("127.0.0.1", 4000))
    s.flush()
    assert len(sink.frames) == 25 and sink.frames[0].keyframe and sink.frames[0].codec is Codec.H264
    st = s.stats()
    assert st["lost"] == 0 and st["dropped_wrong_ssrc"] == 0 and st["ps_errors"] == 0
    steps = [x["step"] for x in trace.steps]
    assert steps == ["first_rtp", "first_keyframe", "first_ps_pack"] or set(steps) == {
        "first_rtp", "first_keyframe", "first_ps_pack"}
    assert trace.diagnosis() == "streaming"


def test_wrong_ssrc_and_wrong_source_are_dropped_and_counted() -> None:
    sink = Sink()
    trace = Trace()
    trace.add("offer_sent")
    trace.add("answer", status=200)
    s = RtpSession(sink, ssrc=SSRC, allowed_hosts=["127.0.0.1"], trace=trace)
    spoof_ssrc = packets(25, ssrc=SSRC + 1)
    for p in spoof_ssrc:  # right host, wrong SSRC: nothing passes, not even a source lock
        s.feed(p, ("127.0.0.1", 4000))
    assert sink.frames == [] and s.source is None
    assert s.counters["dropped_wrong_ssrc"] == len(spoof_ssrc)
    assert trace.diagnosis().startswith("RTP arrived only with an unexpected SSRC")
    assert trace.steps[2]["expected"] == SSRC and trace.steps[2]["seen"] == SSRC + 1
    good = packets(25)
    for p in good[:3]:
        s.feed(p, ("127.0.0.1", 4000))  # locks 127.0.0.1:4000
    for p in packets(25):  # right SSRC, another port / another host: spoofed
        s.feed(p, ("127.0.0.1", 4001))
        s.feed(p, ("10.9.9.9", 4000))
    for p in good[3:]:
        s.feed(p, ("127.0.0.1", 4000))
    assert s.counters["dropped_wrong_source"] == 2 * len(good)
    assert len(sink.frames) == 25
    assert [f.pts for f in sink.frames] == sorted(f.pts for f in sink.frames)


def test_no_ssrc_in_answer_locks_to_the_first_seen() -> None:
    sink = Sink()
    s = RtpSession(sink, ssrc=None)
    for p in packets(5, ssrc=777):
        s.feed(p, ("127.0.0.1", 4000))
    for p in packets(5, ssrc=778):
        s.feed(p, ("127.0.0.1", 4000))
    assert s.expected_ssrc == 777 and s.counters["dropped_wrong_ssrc"] > 0


def test_reordered_and_duplicated_udp_and_gap_waits_for_keyframe() -> None:
    sink = Sink()
    s = RtpSession(sink, ssrc=SSRC)
    pk = packets(25)
    pk[5], pk[6] = pk[6], pk[5]
    pk.insert(10, pk[9])
    for p in pk:
        s.feed(p, ("127.0.0.1", 4000))
    s.flush()
    st = s.stats()
    assert st["reordered"] == 1 and st["duplicated"] == 1 and st["lost"] == 0
    assert len(sink.frames) == 25
    # now lose one packet in the middle of frame 3: frames 3..9 are dropped (wait for IDR 10)
    sink2 = Sink()
    s2 = RtpSession(sink2, ssrc=SSRC, reorder_capacity=4)
    sender = PsRtpSender(ssrc=SSRC, start_ts=0, bitrate=1_000_000)
    per_frame = [sender.next_frame() for _ in range(25)]
    assert len(per_frame[3]) >= 3
    del per_frame[3][1]
    for frame in per_frame:
        for p in frame:
            s2.feed(p, ("127.0.0.1", 4000))
    s2.flush()
    pts = [f.pts for f in sink2.frames]
    assert s2.stats()["lost"] == 1 and s2.counters["frames_dropped_gap"] >= 1
    assert pts[:3] == [0, 3600, 7200] and pts[3] == 10 * 3600 and sink2.frames[3].keyframe


def test_garbage_datagrams_are_counted_and_never_raise() -> None:
    sink = Sink()
    s = RtpSession(sink, ssrc=None)
    rng = random.Random(3)
    for _ in range(2000):
        s.feed(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60))), ("127.0.0.1", 4000))
    # random RTP-looking packets with a valid header but PS garbage payload
    for i in range(200):
        s.feed(struct.pack("!BBHII", 0x80, 96, i, 1000 + i // 4, 5) + rng.randbytes(300), ("127.0.0.1", 4000))
    s.flush()
    assert sink.frames == []
    assert s.counters["bad_rtp"] > 0 and s.stats()["packets"] == 2200
    assert s.stats()["ps_errors"] > 0 or s.stats()["ps_bytes_skipped"] > 0


class HubOpener:
    """Opens a UDP receiver for the hub on a fixed port (a mini InviteManager)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.session: RtpSession | None = None

    async def open(self, channel_id: str, sink: object) -> object:
        self.session = RtpSession(sink, ssrc=SSRC, allowed_hosts=["127.0.0.1"])  # type: ignore[arg-type]
        rx = await UdpReceiver.open(self.session, "127.0.0.1", self.port)
        session = self.session

        class H:
            async def close(self) -> None:
                await rx.close()

            def stats(self) -> dict[str, object]:
                return session.stats()
        return H()


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_spoofed_rtp_over_udp_never_reaches_a_subscriber() -> None:
    port = free_port()
    opener = HubOpener(port)
    hub = StreamHub(opener, ready_timeout=3)  # type: ignore[arg-type]
    stop = asyncio.Event()
    good = PsRtpSender(ssrc=SSRC)
    spoof = PsRtpSender(ssrc=SSRC + 5, aus=None)
    spoof_src = PsRtpSender(ssrc=SSRC)  # right SSRC, other source port (started later)
    sub_task = asyncio.create_task(hub.subscribe("c", FRAMES))
    await asyncio.sleep(0.05)
    tasks = [asyncio.create_task(good.run_udp("127.0.0.1", port, stop=stop))]
    sub = await sub_task
    tasks.append(asyncio.create_task(spoof.run_udp("127.0.0.1", port, stop=stop)))
    tasks.append(asyncio.create_task(spoof_src.run_udp("127.0.0.1", port, stop=stop)))
    got: list[MediaFrame] = []
    async with asyncio.timeout(3):
        while len(got) < 20:
            got += await sub.get_batch()
    stop.set()
    await asyncio.gather(*tasks)
    assert opener.session is not None
    c = opener.session.counters
    spoofed = spoof.packets_sent + spoof_src.packets_sent
    assert spoofed > 0 and c["dropped_wrong_source"] + c["dropped_wrong_ssrc"] == spoofed
    # every delivered frame is the good sender's: consecutive 3600 steps, no duplicates
    pts = [f.pts for f in got]
    assert all(b - a == 3600 for a, b in itertools.pairwise(pts))
    await hub.stop()


async def test_udp_receiver_sets_rcvbuf() -> None:
    s = RtpSession(Sink(), ssrc=None)
    rx = await UdpReceiver.open(s, "127.0.0.1", free_port(), rcvbuf=1 << 20)
    sock = rx.sock
    assert sock is not None
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 20 or True  # capped by rmem_max
    await rx.close()


async def test_tcp_passive_accepts_the_device_and_streams() -> None:
    port = free_port(socket.SOCK_STREAM)
    sink = Sink()
    trace = Trace()
    s = RtpSession(sink, ssrc=SSRC, allowed_hosts=["127.0.0.1"], trace=trace, reorder=False)
    rx = await TcpPassiveReceiver.open(s, "127.0.0.1", port)
    await PsRtpSender(ssrc=SSRC).run_tcp_connect("127.0.0.1", port, seconds=0.5)
    await asyncio.sleep(0.05)
    assert len(sink.frames) >= 10 and sink.frames[0].keyframe
    assert trace.has("tcp_connected")
    # a second connection is refused (a=connection:new): the listener was closed
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    await rx.close()


async def test_tcp_garbage_is_resynced_then_disconnected() -> None:
    port = free_port(socket.SOCK_STREAM)
    sink = Sink()
    s = RtpSession(sink, ssrc=SSRC, reorder=False)
    rx = await TcpPassiveReceiver.open(s, "127.0.0.1", port, max_garbage=64 << 10)
    _r, w = await asyncio.open_connection("127.0.0.1", port)
    pk = packets(12)
    # good packets, a burst of corruption, good packets again: resynced
    w.write(b"".join(rfc4571.frame(p) for p in pk[:40]))
    w.write(b"\x00\x01\xff\xfe" * 100)
    w.write(b"".join(rfc4571.frame(p) for p in pk[40:]))
    await w.drain()
    await asyncio.sleep(0.1)
    assert s.counters["tcp_resyncs"] >= 1 and len(sink.frames) >= 1
    # only garbage from now on: disconnected after max_garbage
    rng = random.Random(5)
    for _ in range(40):
        w.write(rng.randbytes(4096))
    await w.drain()
    await asyncio.sleep(0.2)
    assert s.counters["tcp_garbage"] == 1 and s.counters["tcp_disconnects"] == 1
    assert rx.conn is not None and rx.conn.closed.done()
    w.close()
    await rx.close()


async def test_tcp_flood_is_disconnected() -> None:
    port = free_port(socket.SOCK_STREAM)
    s = RtpSession(Sink(), ssrc=SSRC, reorder=False)
    rx = await TcpPassiveReceiver.open(s, "127.0.0.1", port, max_rate=256 << 10)
    _r, w = await asyncio.open_connection("127.0.0.1", port)
    data = b"".join(rfc4571.frame(p) for p in packets(25, bitrate=8_000_000))
    # the peer sees its connection closed: a reset on asyncio's loop, "handler is closed" on uvloop's
    with pytest.raises((ConnectionError, OSError, RuntimeError)):
        for _ in range(100):
            w.write(data)
            await w.drain()
            await asyncio.sleep(0.01)
    assert s.counters["tcp_flood"] == 1
    await rx.close()


async def test_tcp_passive_refuses_other_hosts() -> None:
    port = free_port(socket.SOCK_STREAM)
    s = RtpSession(Sink(), ssrc=SSRC, allowed_hosts=["127.0.0.9"])
    rx = await TcpPassiveReceiver.open(s, "127.0.0.1", port)
    _r, w = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.05)
    assert s.counters["dropped_wrong_source"] == 1 and rx.conn is None
    w.close()
    await rx.close()


async def test_tcp_active_retries_until_the_device_listens() -> None:
    port = free_port(socket.SOCK_STREAM)
    sink = Sink()
    trace = Trace()
    s = RtpSession(sink, ssrc=SSRC, trace=trace, reorder=False)
    sender = PsRtpSender(ssrc=SSRC)

    async def device() -> None:
        await asyncio.sleep(0.3)  # listens late
        await sender.run_tcp_listen("127.0.0.1", port, seconds=0.5)
    dev = asyncio.create_task(device())
    rx = await open_tcp_active(s, "127.0.0.1", port, retry_for=3)
    await dev
    await asyncio.sleep(0.05)
    assert len(sink.frames) >= 10
    assert any(x["step"] == "tcp_connected" and x["attempts"] > 1 for x in trace.steps)
    await rx.close()
    with pytest.raises(MediaError):
        await open_tcp_active(RtpSession(Sink(), ssrc=None, trace=trace), "127.0.0.1", free_port(socket.SOCK_STREAM),
                              retry_for=0.2)
