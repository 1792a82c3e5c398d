"""The receiver's in-order fast path must be indistinguishable from the general path.

`RtpSession.feed` short-cuts the common packet (locked source, plain header, expected SSRC, next
sequence number) through `ReorderBuffer.accept_next` and `FrameAssembler.add`. For any arrival
order — reordered, duplicated, lost, RTCP and foreign packets mixed in — the frames it emits and
every counter it keeps must equal those of the reference pipeline built from the general APIs
(`parse_rtp` → `ReorderBuffer.push` → `FrameAssembler.push` → `PsDemuxer`).
"""

from __future__ import annotations

import mmap
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.frames import FrameAssembler, MediaFrame, RtpFrame
from gateway.media.ps import PsDemuxer
from gateway.media.receiver import RtpSession
from gateway.media.reorder import ReorderBuffer
from gateway.media.rtp import RtpPacket, parse_rtp
from load_tests.bench_media import PsRtpSender

SSRC = 424242
SRC = ("127.0.0.1", 4000)
_STREAM: list[bytes] = []


def _stream() -> list[bytes]:
    if not _STREAM:
        s = PsRtpSender(ssrc=SSRC, start_ts=90_000, audio=True)
        s.seq = 65_500  # cross the 16-bit wrap
        for _ in range(30):
            _STREAM.extend(s.next_frame())
    return _STREAM


class Sink:
    def __init__(self) -> None:
        self.frames: list[MediaFrame] = []

    def push(self, frame: MediaFrame) -> None:
        self.frames.append(frame)


def _reference(arrivals: list[bytes]) -> tuple[list[MediaFrame], dict[str, int]]:
    """The general path only, with the session's rules: a frame with a gap is dropped and
    video resumes at the next keyframe (audio is never held back)."""
    reorder, assembler, demux = ReorderBuffer(64), FrameAssembler(), PsDemuxer()
    out: list[MediaFrame] = []
    need_key = True

    def emit(f: RtpFrame) -> None:
        nonlocal need_key
        if f.gap:
            need_key = True
            return
        for m in demux.feed(f.payload, frame_end=True):
            if m.kind == "video":
                if m.keyframe:
                    need_key = False
                elif need_key:
                    continue
            out.append(m)

    def frames(p: RtpPacket) -> None:
        for f in assembler.push(p):
            emit(f)

    for data in arrivals:
        if data[1] in range(200, 205):
            continue
        pkt = parse_rtp(data)
        if pkt.ssrc != SSRC:
            continue
        for p in reorder.push(pkt):
            frames(p)
    for p in reorder.flush():
        frames(p)
    for f in assembler.flush():
        emit(f)
    counters = {"lost": reorder.lost, "reordered": reorder.reordered, "duplicated": reorder.duplicate,
                "late": reorder.late, "frames": assembler.frames}
    return out, counters


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), swap=st.floats(0, 0.3), dup=st.floats(0, 0.1), loss=st.floats(0, 0.05))
def test_fast_path_matches_general_path(seed: int, swap: float, dup: float, loss: float) -> None:
    rng = random.Random(seed)
    arrivals: list[bytes] = []
    for p in _stream():
        if rng.random() < loss:
            continue
        arrivals.append(p)
        if rng.random() < dup:
            arrivals.append(p)
        if rng.random() < 0.02:
            arrivals.append(b"\x80\xc9\x00\x01" + SSRC.to_bytes(4, "big"))  # RTCP RR, first octet 0x80
    for i in range(len(arrivals) - 1):
        if rng.random() < swap:
            j = min(len(arrivals) - 1, i + rng.randrange(1, 6))
            arrivals[i], arrivals[j] = arrivals[j], arrivals[i]

    sink = Sink()
    session = RtpSession(sink, ssrc=SSRC, allowed_hosts=[SRC[0]])
    for data in arrivals:
        session.feed(data, SRC)
        if rng.random() < 0.05:
            session.feed(data, ("127.0.0.1", 4001))  # same host, other port: dropped once locked
    session.flush()

    want, counters = _reference(arrivals)
    stats = session.stats()
    for k, v in counters.items():
        assert stats[k] == v, k
    assert stats["packets"] == len(arrivals) + stats["dropped_wrong_source"]
    assert stats["rtcp"] == sum(1 for a in arrivals if a[1] == 0xC9)
    assert stats["received"] == len(arrivals) - stats["rtcp"]
    assert sink.frames == want


def test_accept_next_only_takes_the_exact_next_number_with_nothing_held() -> None:
    r = ReorderBuffer(8)
    assert not r.accept_next(10)  # nothing seen yet: the general path sets the start
    r.push(RtpPacket(sequence=65535))
    assert r.accept_next(0) and not r.accept_next(0)  # wraps; a repeat is not "next"
    r.push(RtpPacket(sequence=3))  # a gap: 1 and 2 missing, 3 held
    assert not r.accept_next(1)  # something held: must go through push to release in order
    assert (r.received, r.released) == (3, 2)


def _batches(arrivals: list[tuple[bytes, tuple[str, int]]], rng: random.Random,
             step: int) -> list[tuple[mmap.mmap, list[int], tuple[str, int]]]:
    """Runs of one source cut into batches of 1–70 datagrams, laid out as UdpReceiver reads them."""
    out: list[tuple[mmap.mmap, list[int], tuple[str, int]]] = []
    i = 0
    while i < len(arrivals):
        src = arrivals[i][1]
        j = i
        limit = i + rng.randrange(1, 71)
        while j < len(arrivals) and j < limit and arrivals[j][1] == src:
            j += 1
        buf = mmap.mmap(-1, step * (j - i))  # as UdpReceiver hands over: the reader's mapping
        for k, (data, _src) in enumerate(arrivals[i:j]):
            buf[k * step:k * step + len(data)] = data
        out.append((buf, [len(d) for d, _s in arrivals[i:j]], src))
        i = j
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), swap=st.floats(0, 0.3), dup=st.floats(0, 0.1), loss=st.floats(0, 0.05),
       reorder=st.booleans())
def test_feed_many_is_feed_on_each(seed: int, swap: float, dup: float, loss: float, reorder: bool) -> None:
    """A batch from one source (UdpReceiver's) gives the frames, counters and trace steps of the
    same datagrams fed one by one — spoofed, RTCP, garbage and wrong-SSRC packets mixed in."""
    from gateway.media.session_stats import Trace

    rng = random.Random(seed)
    arrivals: list[tuple[bytes, tuple[str, int]]] = []
    other = _other_ssrc()
    for p in _stream():
        if rng.random() < loss:
            continue
        arrivals.append((p, SRC))
        if rng.random() < dup:
            arrivals.append((p, SRC))
        r = rng.random()
        if r < 0.02:
            arrivals.append((b"\x80\xc9\x00\x01" + SSRC.to_bytes(4, "big"), SRC))
        elif r < 0.04:
            arrivals.append((p, ("127.0.0.1", 4001)))
        elif r < 0.05:
            arrivals.append((p[:rng.randrange(0, 14)], SRC))
        elif r < 0.06:
            arrivals.append((other[rng.randrange(len(other))], SRC))
    for i in range(len(arrivals) - 1):
        if rng.random() < swap:
            j = min(len(arrivals) - 1, i + rng.randrange(1, 6))
            arrivals[i], arrivals[j] = arrivals[j], arrivals[i]

    one, many = Sink(), Sink()
    def clock() -> float:
        return 100.0

    a = RtpSession(one, ssrc=SSRC, allowed_hosts=[SRC[0]], trace=Trace(clock=clock), reorder=reorder, clock=clock)
    b = RtpSession(many, ssrc=SSRC, allowed_hosts=[SRC[0]], trace=Trace(clock=clock), reorder=reorder, clock=clock)
    for data, src in arrivals:
        a.feed(data, src)
    for buf, sizes, src in _batches(arrivals, rng, 1500):
        b.feed_many(buf, 1500, sizes, src)
    a.flush()
    b.flush()
    assert a.stats() == b.stats()
    assert many.frames == one.frames
    assert (a.packets, a.bytes, a.received, a.payload_bytes) == (b.packets, b.bytes, b.received, b.payload_bytes)
    assert a.trace is not None and b.trace is not None
    assert a.trace.steps == b.trace.steps
    assert a.last_packet_at == b.last_packet_at


def _other_ssrc() -> list[bytes]:
    s = PsRtpSender(ssrc=SSRC + 1, start_ts=0)
    return s.next_frame() + s.next_frame()


def test_a_sink_that_raises_mid_batch_loses_that_frame_only() -> None:
    """The batch goes on past a frame the sink raised on: the same frames and counters as the
    packets fed one by one, one sink error counted, nothing lost."""

    class Once(Sink):
        raised = False

        def push(self, frame: MediaFrame) -> None:
            if not self.raised:
                self.raised = True
                raise RuntimeError("viewer side broke")
            super().push(frame)

    stream = _stream()
    step = 1500
    buf = mmap.mmap(-1, step * len(stream))  # as UdpReceiver hands over: the reader's mapping
    for i, p in enumerate(stream):
        buf[i * step:i * step + len(p)] = p
    sink = Once()
    session = RtpSession(sink, ssrc=SSRC, allowed_hosts=[SRC[0]])
    session.feed_many(buf, step, [len(p) for p in stream], SRC)  # does not raise
    ref_sink = Once()
    ref = RtpSession(ref_sink, ssrc=SSRC, allowed_hosts=[SRC[0]])
    plain = Sink()
    whole = RtpSession(plain, ssrc=SSRC, allowed_hosts=[SRC[0]])
    for p in stream:
        ref.feed(p, SRC)
        whole.feed(p, SRC)
    for s in (session, ref, whole):
        s.flush()
    assert session.stats() == ref.stats() and sink.frames == ref_sink.frames
    assert session.stats()["sink_errors"] == 1 and whole.stats()["sink_errors"] == 0
    assert len(sink.frames) == len(plain.frames) - 1 and sink.frames == plain.frames[1:]
    assert session.stats()["lost"] == 0 and session.received == len(stream)


_PADDED: list[bytes] = []


def _padded_stream() -> list[bytes]:
    """2 Mbit/s with audio: frames of several datagrams, the sequence crossing the wrap."""
    if not _PADDED:
        s = PsRtpSender(ssrc=SSRC, start_ts=90_000, audio=True, bitrate=2_000_000)
        s.seq = 65_400
        for _ in range(30):
            _PADDED.extend(s.next_frame())
    return _PADDED


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), loss=st.sampled_from([0.0, 0.0, 0.02]), dup=st.sampled_from([0.0, 0.0, 0.02]),
       reorder=st.booleans(), relatch=st.booleans())
def test_clean_batches_equal_feed(seed: int, loss: float, dup: float, reorder: bool, relatch: bool) -> None:
    """Batches as a camera's bursts arrive (a frame, part of one, several; nothing foreign, the
    fast path's usual case): frames, counters, trace and clock reads equal `feed` on each
    datagram, across the sequence wrap, with a lost or repeated datagram now and then and a
    source that moves to another port (`relatch`)."""
    from gateway.media.session_stats import Trace

    rng = random.Random(seed)
    arrivals: list[tuple[bytes, tuple[str, int]]] = []
    stream = _padded_stream()
    for i, p in enumerate(stream):
        if rng.random() < loss:
            continue
        src = ("127.0.0.1", 4002) if relatch and i >= len(stream) // 2 else SRC
        arrivals.append((p, src))
        if rng.random() < dup:
            arrivals.append((p, src))
    now = [100.0]
    one, many = Sink(), Sink()
    a = RtpSession(one, ssrc=SSRC, allowed_hosts=[SRC[0]], trace=Trace(clock=lambda: now[0]), reorder=reorder,
                   clock=lambda: now[0])
    b = RtpSession(many, ssrc=SSRC, allowed_hosts=[SRC[0]], trace=Trace(clock=lambda: now[0]), reorder=reorder,
                   clock=lambda: now[0])
    step = 1500
    i = 0
    while i < len(arrivals):
        n = rng.choice([1, 2, 3, 5, 8, 13, 40])
        src = arrivals[i][1]
        j = i
        while j < len(arrivals) and j < i + n and arrivals[j][1] == src:
            j += 1
        if src != SRC:
            now[0] += 1.0  # the old source fell silent: the new port may take over
        for data, s in arrivals[i:j]:
            a.feed(data, s)
        buf = mmap.mmap(-1, step * (j - i))  # as UdpReceiver hands over: the reader's mapping
        for k, (data, _s) in enumerate(arrivals[i:j]):
            buf[k * step:k * step + len(data)] = data
        b.feed_many(buf, step, [len(d) for d, _s in arrivals[i:j]], src)
        i = j
    a.flush()
    b.flush()
    if not loss:
        assert len(one.frames) > 20
    assert a.stats() == b.stats()
    assert many.frames == one.frames
    assert (a.packets, a.bytes, a.received, a.payload_bytes) == (b.packets, b.bytes, b.received, b.payload_bytes)
    assert a.trace is not None and b.trace is not None and a.trace.steps == b.trace.steps
    assert a.last_packet_at == b.last_packet_at
