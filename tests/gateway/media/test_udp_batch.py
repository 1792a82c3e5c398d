"""The batched UDP receive shell over real sockets: what a batch holds never changes what the
session decides.

Every test queues datagrams on the receiver's socket before the loop runs (loopback delivers in
`sendto`), so one wake-up reads them as one or more recvmmsg batches; the session's frames and
counters must equal those of a reference session fed the same datagrams one by one with `feed`
(the DatagramProtocol path it replaces). Each runs with recvmmsg and with the recvmsg_into loop.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from gateway.media import udp_batch
from gateway.media.frames import MediaFrame
from gateway.media.receiver import RtpSession, UdpReceiver
from gateway.media.session_stats import Trace
from gateway.media.udp_batch import BatchReader, decode_sockaddr
from load_tests.bench_media import PsRtpSender

SSRC = 106000001
SLOT = 4096  # small slots, so an oversized datagram is easy to make


class Sink:
    def __init__(self) -> None:
        self.frames: list[MediaFrame] = []

    def push(self, frame: MediaFrame) -> None:
        self.frames.append(frame)


def packets(n_frames: int, ssrc: int = SSRC, seq: int = 65_500) -> list[bytes]:
    """A 2 Mbit/s stream with audio (about 8 packets a frame)."""
    s = PsRtpSender(ssrc=ssrc, start_ts=0, audio=True, bitrate=2_000_000)
    s.seq = seq  # cross the 16-bit wrap
    out: list[bytes] = []
    for _ in range(n_frames):
        out += s.next_frame()
    return out


def new_session(sink: Sink) -> RtpSession:
    return RtpSession(sink, ssrc=SSRC, allowed_hosts=["127.0.0.1"], trace=Trace())


@pytest.fixture(params=["recvmmsg", "recvmsg_into"])
def reader(request: pytest.FixtureRequest) -> BatchReader:
    r = BatchReader(socket.AF_INET, slot_size=SLOT, use_recvmmsg=request.param == "recvmmsg")
    if request.param == "recvmmsg" and not r.batched:
        pytest.skip("no recvmmsg here")
    return r


class Rig:
    """A receiver on a free port, two senders (the camera and a stranger on the same host)."""

    def __init__(self, rx: UdpReceiver, session: RtpSession, sink: Sink) -> None:
        self.rx, self.session, self.sink = rx, session, sink
        assert rx.sock is not None
        self.port = rx.sock.getsockname()[1]
        self.camera = self._sender()
        self.stranger = self._sender()
        self.sent: list[tuple[bytes, tuple[str, int]]] = []  # what the receiver should see, in order

    def _sender(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.bind(("127.0.0.1", 0))
        return s

    def send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendto(data, ("127.0.0.1", self.port))
        self.sent.append((data, sock.getsockname()))

    async def drain(self) -> None:
        """Let the loop read everything queued (the counter stops moving; the poller reads at
        most once per window)."""
        last = -1
        for _ in range(2000):
            await asyncio.sleep(0.001)
            total = self.session.packets + self.session.counters["udp_truncated"]
            if total == len(self.sent) and total == last:
                return
            last = total
        raise AssertionError(f"read {last} of {len(self.sent)} datagrams")

    def reference(self) -> tuple[RtpSession, Sink]:
        """The same datagrams through `feed`, one by one (oversized ones skipped)."""
        sink = Sink()
        ref = new_session(sink)
        for data, src in self.sent:
            if len(data) <= SLOT:
                ref.feed(data, src)
        return ref, sink

    def close(self) -> None:
        self.camera.close()
        self.stranger.close()


async def open_rig(reader: BatchReader) -> Rig:
    sink = Sink()
    session = new_session(sink)
    rx = await UdpReceiver.open(session, "127.0.0.1", 0, reader=reader)
    return Rig(rx, session, sink)


def assert_same(rig: Rig) -> None:
    ref, ref_sink = rig.reference()
    rig.session.flush()
    ref.flush()
    got, want = rig.session.stats(), ref.stats()
    # the per-datagram reference is fed only what fits a slot: it never sees a truncated datagram
    assert want.pop("udp_truncated") == 0
    got.pop("udp_truncated")
    assert got == want
    assert rig.sink.frames == ref_sink.frames
    assert rig.session.trace is not None and ref.trace is not None
    assert [s["step"] for s in rig.session.trace.steps] == [s["step"] for s in ref.trace.steps]


async def test_a_mixed_batch_is_judged_datagram_by_datagram(reader: BatchReader) -> None:
    rig = await open_rig(reader)
    pk = packets(12)
    rtcp = b"\x80\xc9\x00\x01" + SSRC.to_bytes(4, "big")
    garbage = [b"", b"\x80", b"\x00" * 11, b"\x40" + b"\x01" * 40, b"\x90\x60" + b"\x00" * 12]
    oversized = pk[0][:12] + b"\x00" * (SLOT + 100)
    for i, p in enumerate(pk):
        rig.send(rig.camera, p)
        if i % 7 == 3:
            rig.send(rig.stranger, p)  # right SSRC, wrong source port: spoofed
        if i % 11 == 5:
            rig.send(rig.camera, rtcp)
        if i % 13 == 6:
            rig.send(rig.camera, garbage[(i // 13) % len(garbage)])
        if i == 20:
            rig.send(rig.camera, oversized)
    await rig.drain()
    s = rig.session
    assert s.counters["udp_truncated"] == 1
    assert s.stats()["udp_truncated"] == 1 and s.totals()["udp_truncated"] == 1  # /streams and /metrics
    assert s.counters["dropped_wrong_source"] > 0 and s.counters["rtcp"] > 0 and s.counters["bad_rtp"] > 0
    assert s.source == ("127.0.0.1", rig.camera.getsockname()[1])
    assert len(rig.sink.frames) >= 11
    assert_same(rig)
    await rig.rx.close()
    rig.close()


async def test_a_batch_from_the_camera_alone_takes_the_batch_path(reader: BatchReader) -> None:
    """RTCP, garbage, a wrong SSRC and reordering inside one source's batch: the general path
    for those, the fast path around them, the same result."""
    rig = await open_rig(reader)
    pk = packets(10)
    pk[8], pk[9] = pk[9], pk[8]
    pk.insert(20, pk[19])  # a duplicate
    pk.insert(25, b"\x80\xc8\x00\x06" + b"\x00" * 24)  # RTCP SR
    pk.insert(30, b"\x80\x60garbage")  # too short for RTP
    pk.insert(35, packets(1, ssrc=SSRC + 1)[0])  # another SSRC from the camera: dropped, counted
    pk.insert(40, pk[39][:12] + b"\x00" * (SLOT + 1))  # oversized
    for p in pk:
        rig.send(rig.camera, p)
    await rig.drain()
    s = rig.session
    assert s.counters["udp_truncated"] == 1 and s.counters["rtcp"] == 1 and s.counters["bad_rtp"] == 1
    assert s.counters["dropped_wrong_ssrc"] == 1
    st = s.stats()
    assert st["reordered"] == 1 and st["duplicated"] == 1
    assert_same(rig)
    await rig.rx.close()
    rig.close()


async def test_nothing_is_lost_when_many_batches_are_queued(reader: BatchReader) -> None:
    """More than one recvmmsg worth, and more than one wake-up's worth (MAX_BATCHES × slots)."""
    rig = await open_rig(reader)
    pk = packets(75)
    assert len(pk) > UdpReceiver.MAX_BATCHES * reader.slots
    for p in pk:
        rig.send(rig.camera, p)
    await rig.drain()
    st = rig.session.stats()
    assert st["received"] == len(pk) and st["lost"] == 0 and st["frames"] == 75
    assert_same(rig)
    assert len(rig.sink.frames) == 150  # video and audio of every frame
    await rig.rx.close()
    rig.close()


async def test_before_the_offer_nothing_latches_then_the_camera_does(reader: BatchReader) -> None:
    sink = Sink()
    session = RtpSession(sink, ssrc=SSRC, allowed_hosts=["127.0.0.1"], trace=Trace(), armed=False)
    rx = await UdpReceiver.open(session, "127.0.0.1", 0, reader=reader)
    rig = Rig(rx, session, sink)
    pk = packets(4)
    for p in pk[:10]:
        rig.send(rig.stranger, p)
    await rig.drain()
    assert session.counters["dropped_before_offer"] == 10 and session.source is None
    session.arm()
    for p in pk[10:]:
        rig.send(rig.camera, p)
    await rig.drain()
    assert session.source == ("127.0.0.1", rig.camera.getsockname()[1]) and len(sink.frames) >= 2
    await rx.close()
    rig.close()


async def test_close_releases_the_port_and_stops_reading(reader: BatchReader) -> None:
    rig = await open_rig(reader)
    rig.send(rig.camera, packets(1)[0])
    await rig.drain()
    await rig.rx.close()
    assert rig.rx.sock is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", rig.port))  # free again
    await rig.rx.close()  # twice is fine
    rig.close()


async def test_the_shared_reader_serves_every_receiver_of_the_loop() -> None:
    sinks = [Sink(), Sink()]
    sessions = [new_session(s) for s in sinks]
    rxs = [await UdpReceiver.open(s, "127.0.0.1", 0) for s in sessions]
    ports = [rx.sock.getsockname()[1] for rx in rxs if rx.sock is not None]
    pk = [packets(5, seq=100), packets(5, seq=40_000)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for a, b in zip(pk[0], pk[1], strict=False):
            tx.sendto(a, ("127.0.0.1", ports[0]))
            tx.sendto(b, ("127.0.0.1", ports[1]))
        for _ in range(2000):
            await asyncio.sleep(0.001)
            if all(s.packets == len(p) for s, p in zip(sessions, pk, strict=True)):
                break
    for s, p in zip(sessions, pk, strict=True):
        st = s.stats()
        assert st["received"] == len(p) and st["lost"] == 0 and st["frames"] == 5
    for rx in rxs:
        await rx.close()


async def test_ipv6_source_is_reported_as_the_socket_module_does() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    sink = Sink()
    session = RtpSession(sink, ssrc=SSRC, allowed_hosts=["::1"])
    try:
        rx = await UdpReceiver.open(session, "::1", 0)
    except OSError:
        pytest.skip("no ::1")
    assert rx.sock is not None
    port = rx.sock.getsockname()[1]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
        tx.bind(("::1", 0))
        for p in packets(3):
            tx.sendto(p, ("::1", port))
        for _ in range(2000):
            await asyncio.sleep(0.001)
            if session.received >= 10:
                break
        assert session.source == ("::1", tx.getsockname()[1])
    assert session.received > 10 and session.counters["dropped_wrong_source"] == 0
    await rx.close()


def test_decode_sockaddr_matches_the_socket_module() -> None:
    v4 = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 5004) + socket.inet_aton("10.1.2.3") + bytes(8)
    assert decode_sockaddr(v4) == ("10.1.2.3", 5004)
    v6 = (struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 6000) + bytes(4)
          + socket.inet_pton(socket.AF_INET6, "::ffff:10.0.0.9") + bytes(4))
    assert decode_sockaddr(v6) == ("::ffff:10.0.0.9", 6000)


async def test_the_poller_reads_at_once_then_at_most_once_per_window() -> None:
    """A burst on an idle loop is read at once; one arriving within the window waits for it."""
    sinks = [Sink(), Sink()]
    sessions = [new_session(s) for s in sinks]
    rxs = [await UdpReceiver.open(s, "127.0.0.1", 0, window=0.2) for s in sessions]
    ports = [rx.sock.getsockname()[1] for rx in rxs if rx.sock is not None]
    pk = packets(2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(pk[0], ("127.0.0.1", ports[0]))
        for _ in range(20):
            await asyncio.sleep(0)
        assert sessions[0].packets == 1  # at once
        tx.sendto(pk[1], ("127.0.0.1", ports[0]))
        tx.sendto(pk[0], ("127.0.0.1", ports[1]))
        for _ in range(20):
            await asyncio.sleep(0)
        assert (sessions[0].packets, sessions[1].packets) == (1, 0)  # the window is open
        for _ in range(2000):
            await asyncio.sleep(0.001)
            if sessions[0].packets == 2 and sessions[1].packets == 1:
                break
        assert (sessions[0].packets, sessions[1].packets) == (2, 1)  # both in the next pass
    for rx in rxs:
        await rx.close()
    assert not udp_batch._pollers.get(asyncio.get_running_loop())  # the last one closed its epoll set


async def test_after_each_window_the_poller_rejoins_the_loop_so_the_next_frame_is_read_at_once() -> None:
    """The pass at a window's end hands the epoll set back to the loop even when it found
    datagrams: a frame arriving after it is read at once, not at the end of another window."""
    session = new_session(Sink())
    rx = await UdpReceiver.open(session, "127.0.0.1", 0, window=0.05)
    assert rx.sock is not None and rx._poller is not None
    poller = rx._poller
    dest = rx.sock.getsockname()
    pk = packets(2)

    async def until(cond: object) -> None:
        for _ in range(2000):
            if cond():  # type: ignore[operator]
                return
            await asyncio.sleep(0.001)
        raise AssertionError("timed out")

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(pk[0], dest)
        await until(lambda: session.packets == 1)  # read at once, the window opens
        assert not poller._registered and poller._timer is not None
        tx.sendto(pk[1], dest)
        await until(lambda: session.packets == 2)  # read by the pass at the window's end …
        assert poller._registered and poller._timer is None  # … which found it, and rejoined the loop
        tx.sendto(pk[2], dest)
        for _ in range(20):
            await asyncio.sleep(0)
        assert session.packets == 3  # at once
    await rx.close()
    assert poller._timer is None and not poller._registered


async def test_one_streams_failure_does_not_stop_the_others() -> None:
    """A bug beneath the sink's guard (the session itself raising): the poller reports it and
    goes on with the other streams."""

    def broken_clock() -> float:
        raise RuntimeError("session broke")

    errors: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    good = Sink()
    sessions = [RtpSession(Sink(), ssrc=SSRC, allowed_hosts=["127.0.0.1"], clock=broken_clock), new_session(good)]
    rxs = [await UdpReceiver.open(s, "127.0.0.1", 0) for s in sessions]
    ports = [rx.sock.getsockname()[1] for rx in rxs if rx.sock is not None]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for p in packets(3):
            tx.sendto(p, ("127.0.0.1", ports[0]))
            tx.sendto(p, ("127.0.0.1", ports[1]))
        for _ in range(2000):
            await asyncio.sleep(0.001)
            if len(good.frames) >= 4:
                break
    assert len(good.frames) >= 4 and errors
    assert isinstance(errors[0]["exception"], RuntimeError)
    loop.set_exception_handler(None)
    for rx in rxs:
        await rx.close()


async def test_without_a_window_every_wakeup_is_read_at_once() -> None:
    sink = Sink()
    session = new_session(sink)
    rx = await UdpReceiver.open(session, "127.0.0.1", 0, window=0)
    assert rx.sock is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for i, p in enumerate(packets(2)[:4]):
            tx.sendto(p, rx.sock.getsockname())
            for _ in range(20):
                await asyncio.sleep(0)
            assert session.packets == i + 1
    await rx.close()


async def test_a_socket_error_is_counted_not_raised(reader: BatchReader) -> None:
    """A queued ICMP error (here: port unreachable, after sending from the receiving socket to a
    closed port) makes the next receive fail with ECONNREFUSED: counted, not raised."""
    session = new_session(Sink())
    rx = await UdpReceiver.open(session, "127.0.0.1", 0, reader=reader)
    assert rx.sock is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()
    rx.sock.connect(dead)
    rx.sock.send(b"x")
    for _ in range(200):
        rx._readable()
        if session.counters["socket_errors"]:
            break
        await asyncio.sleep(0.001)
    assert session.counters["socket_errors"] == 1
    await rx.close()


class ChokingSink(Sink):
    """A sink that raises on its `bad`-th frame (1-based), as a bug in the hub would."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.bad, self.seen = bad, 0

    def push(self, frame: MediaFrame) -> None:
        self.seen += 1
        if self.seen == self.bad:
            raise RuntimeError("sink bug")
        super().push(frame)


async def test_a_sink_that_raises_loses_one_frame_not_the_rest_of_the_batch(
    reader: BatchReader, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ChokingSink(bad=5)
    session = RtpSession(sink, ssrc=SSRC, allowed_hosts=["127.0.0.1"], trace=Trace())
    rx = await UdpReceiver.open(session, "127.0.0.1", 0, reader=reader)
    rig = Rig(rx, session, sink)
    for p in packets(20):  # one wake-up's worth, read as a few batches
        rig.send(rig.camera, p)
    await rig.drain()
    st = session.stats()
    assert st["received"] == len(rig.sent) and st["sink_errors"] == 1
    assert session.totals()["sink_errors"] == 1  # /metrics
    assert sink.seen == 40 and len(sink.frames) == 39  # video and audio of every frame, one refused
    assert sum("stream sink failed" in r.getMessage() for r in caplog.records) == 1
    await rx.close()
    rig.close()


@pytest.mark.parametrize("window", [0.0, 0.2])
async def test_the_configured_window_reaches_the_ingests_receiver(window: float) -> None:
    """`media.rx_window` (passed by the INVITE path to `listen_udp`) decides whether a second
    datagram right after a first waits for the window or is read at once."""
    from gateway.media.ingest import LocalIngest
    from gateway.media.pool import PortPool

    session = new_session(Sink())
    rx = await LocalIngest(PortPool(31000, 31099, "3402000000")).listen_udp(
        session, "127.0.0.1", 0, rcvbuf=1 << 20, window=window)
    try:
        assert isinstance(rx, UdpReceiver) and rx.sock is not None
        port = rx.sock.getsockname()[1]
        pk = packets(2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(pk[0], ("127.0.0.1", port))
            for _ in range(20):
                await asyncio.sleep(0)
            assert session.packets == 1
            tx.sendto(pk[1], ("127.0.0.1", port))
            for _ in range(20):
                await asyncio.sleep(0)
            assert session.packets == (2 if window == 0 else 1)
    finally:
        await rx.close()
