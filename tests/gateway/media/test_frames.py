from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.frames import FrameAssembler
from gateway.media.rtp import RtpPacket


def pkt(seq: int, ts: int, payload: bytes, marker: bool = False) -> RtpPacket:
    return RtpPacket(sequence=seq & 0xFFFF, timestamp=ts, payload=payload, marker=marker)


def test_marker_ends_frame_and_payloads_join():
    fa = FrameAssembler()
    assert fa.push(pkt(65535, 3600, b"ab")) == []
    (f,) = fa.push(pkt(0, 3600, b"cd", marker=True))
    assert (f.timestamp, f.payload, f.gap, f.packets, f.marker) == (3600, b"abcd", False, 2, True)


def test_timestamp_change_ends_frame_without_marker():
    fa = FrameAssembler()
    fa.push(pkt(1, 0, b"a"))
    (f,) = fa.push(pkt(2, 3600, b"b"))
    assert f.payload == b"a" and not f.marker and not f.gap
    (g,) = fa.flush()
    assert g.payload == b"b" and g.timestamp == 3600


def test_dahua_continuation_after_marker_is_a_new_chunk_same_timestamp():
    fa = FrameAssembler()
    (h,) = fa.push(pkt(1, 7200, b"PSHDR", marker=True))
    (v,) = fa.push(pkt(2, 7200, b"VIDEO", marker=True))
    assert (h.timestamp, v.timestamp, h.payload, v.payload) == (7200, 7200, b"PSHDR", b"VIDEO")


def test_gap_inside_frame_flags_it():
    fa = FrameAssembler()
    fa.push(pkt(10, 0, b"a"))
    (f,) = fa.push(pkt(12, 0, b"c", marker=True))
    assert f.gap and fa.gap_frames == 1
    (g,) = fa.push(pkt(13, 3600, b"d", marker=True))
    assert not g.gap


def test_gap_at_boundary_flags_open_frame_and_new_frame():
    fa = FrameAssembler()
    fa.push(pkt(10, 0, b"a"))
    (old,) = fa.push(pkt(12, 3600, b"c"))
    (new,) = fa.push(pkt(13, 3600, b"d", marker=True))
    assert old.gap and new.gap
    fa2 = FrameAssembler()
    fa2.push(pkt(10, 0, b"a", marker=True))
    (only,) = fa2.push(pkt(12, 3600, b"c", marker=True))
    assert only.gap and fa2.gap_frames == 1


def test_oversize_frame_is_bounded_and_flagged():
    fa = FrameAssembler(max_frame_bytes=4)
    fa.push(pkt(1, 0, b"abc"))
    (f,) = fa.push(pkt(2, 0, b"def", marker=True))
    assert f.gap and len(f.payload) <= 4 and fa.oversize == 1


def _reference(packets: list[tuple[int, int, bool, bytes]], max_frame_bytes: int) -> list[tuple]:
    """The assembler's rules written plainly (one path for every packet), to check the fast path."""
    out: list[tuple] = []
    ts = last = None
    parts: list[bytes] = []
    size = count = 0
    gap = False

    def emit(marker: bool) -> None:
        nonlocal ts, parts, size, count, gap
        out.append((ts, b"".join(parts), gap, count, marker))
        ts, parts, size, count, gap = None, [], 0, 0, False

    for seq, t, marker, payload in packets:
        jumped = last is not None and seq != (last + 1) & 0xFFFF
        last = seq
        if ts is None:
            ts, gap = t, jumped
        elif t != ts:
            if jumped:
                gap = True
            emit(False)
            ts, gap = t, jumped
        elif jumped:
            gap = True
        size += len(payload)
        if size > max_frame_bytes:
            parts, size, gap = [], 0, True
        else:
            parts.append(payload)
        count += 1
        if marker:
            emit(True)
    if ts is not None:
        emit(False)
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.booleans(), st.integers(0, 40)), max_size=80),
       st.integers(0, 0xFFFF))
def test_add_matches_the_plain_rules(steps: list[tuple[int, int, bool, int]], seq0: int) -> None:
    """Sequence steps of 0 (repeat), 1 (next) or more (loss), timestamps that stay or move,
    markers anywhere, payloads that overflow a small frame limit."""
    packets = []
    seq, ts = seq0, 0
    for i, (dseq, dts, marker, n) in enumerate(steps):
        seq = (seq + dseq) & 0xFFFF
        ts += dts * 3600
        packets.append((seq, ts, marker, bytes([i & 0xFF]) * n))
    fa = FrameAssembler(max_frame_bytes=100)
    got = []
    for p in packets:
        got += [(f.timestamp, f.payload, f.gap, f.packets, f.marker) for f in fa.add(*p) or []]
    got += [(f.timestamp, f.payload, f.gap, f.packets, f.marker) for f in fa.flush()]
    want = _reference(packets, 100)
    assert got == want
    assert fa.frames == len(want) and fa.gap_frames == sum(1 for w in want if w[2])
