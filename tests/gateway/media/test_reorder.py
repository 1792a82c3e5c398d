import random

from hypothesis import given
from hypothesis import strategies as st

from gateway.media.reorder import ReorderBuffer
from gateway.media.rtp import RtpPacket


def _run(buf: ReorderBuffer, seqs: list[int], flush: bool = True) -> list[int]:
    out = [p.sequence for s in seqs for p in buf.push(RtpPacket(sequence=s & 0xFFFF))]
    if flush:
        out += [p.sequence for p in buf.flush()]
    return out


def test_in_order_passes_straight_through_across_wrap():
    buf = ReorderBuffer()
    seqs = [(65530 + i) & 0xFFFF for i in range(12)]
    assert [p.sequence for s in seqs for p in buf.push(RtpPacket(sequence=s))] == seqs
    assert (buf.lost, buf.duplicate, buf.late, buf.reordered, len(buf)) == (0, 0, 0, 0, 0)


def test_wrap_reorder_duplicate_late_and_gap():
    buf = ReorderBuffer(capacity=4)
    out = _run(buf, [65533, 65535, 65534, 0, 2, 1, 1, 5, 6, 7, 8, 9, 3])
    assert out == [65533, 65534, 65535, 0, 1, 2, 5, 6, 7, 8, 9]
    assert buf.lost == 2  # 3 and 4 given up when 9 arrived (>= 4 past the gap)
    assert buf.duplicate == 1 and buf.late == 1 and buf.reordered == 2
    assert buf.received == 13 and buf.released == 11


def test_gap_waits_for_capacity_or_flush():
    buf = ReorderBuffer(capacity=8)
    assert _run(buf, [10, 12, 13], flush=False) == [10]
    assert len(buf) == 2 and buf.lost == 0
    assert [p.sequence for p in buf.push(RtpPacket(sequence=11))] == [11, 12, 13]
    assert _run(buf, [15, 17]) == [15, 17]
    assert buf.lost == 2  # 14 and 16
    assert buf.reordered == 1


def test_restart_with_new_sequence_space():
    buf = ReorderBuffer()
    assert _run(buf, [100, 101, 40000, 40001], flush=False) == [100, 101, 40000, 40001]
    assert buf.resets == 1 and buf.lost == 0


@given(st.integers(0, 65535), st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_bounded_shuffle_releases_everything_in_order(first, count, seed):
    rng = random.Random(seed)
    seqs = [first + i for i in range(count)]
    window = 8
    # The first packet fixes the start (it is released at once); shuffle the rest within
    # windows the buffer can absorb.
    for i in range(1, count, window):
        part = seqs[i:i + window]
        rng.shuffle(part)
        seqs[i:i + window] = part
    buf = ReorderBuffer(capacity=32)
    out = _run(buf, seqs)
    assert out == [(first + i) & 0xFFFF for i in range(count)]
    assert buf.lost == buf.late == buf.duplicate == 0
    assert buf.released == count


@given(st.lists(st.integers(0, 400), max_size=300), st.integers(0, 65535))
def test_counters_add_up_for_any_arrival_order(offsets, base):
    buf = ReorderBuffer(capacity=16)
    out = _run(buf, [base + o for o in offsets])
    assert buf.received == len(offsets)
    assert buf.released + buf.duplicate + buf.late == buf.received
    ext = [o for o in offsets]
    # Released sequence numbers are strictly increasing in extended space and unique.
    if out:
        unwrapped = [((s - base) & 0xFFFF) for s in out]
        assert unwrapped == sorted(set(unwrapped))
        assert set(unwrapped) <= set(ext)
        assert buf.lost == unwrapped[-1] - unwrapped[0] + 1 - len(unwrapped)
