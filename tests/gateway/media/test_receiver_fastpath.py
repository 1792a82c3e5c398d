"""The receiver's in-order fast path must be indistinguishable from the general path.

`RtpSession.feed` short-cuts the common packet (locked source, plain header, expected SSRC, next
sequence number) through `ReorderBuffer.accept_next` and `FrameAssembler.add`. For any arrival
order — reordered, duplicated, lost, RTCP and foreign packets mixed in — the frames it emits and
every counter it keeps must equal those of the reference pipeline built from the general APIs
(`parse_rtp` → `ReorderBuffer.push` → `FrameAssembler.push` → `PsDemuxer`).
"""

from __future__ import annotations

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
