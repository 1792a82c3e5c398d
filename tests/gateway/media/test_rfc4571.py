import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.rfc4571 import Rfc4571Deframer, frame
from gateway.media.rtp import is_rtcp, parse_rtp

from .vectors import SSRC, read

STREAM = read("rtp_h264_tcp.rfc4571")


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("!H", data, pos)
        out.append((pos, data[pos + 2:pos + 2 + n]))
        pos += 2 + n
    return out


OFFSETS = _packets(STREAM)
PACKETS = [p for _, p in OFFSETS]
MAX = 10 * 1024  # ZLMediaKit's rtpMaxSize: a corrupted length swallows at most this


def _consistent(d: Rfc4571Deframer, out: list[bytes]) -> None:
    assert d.bytes_in == sum(len(p) + 2 for p in out) + d.bytes_skipped + d.buffered


def test_frame_prefix():
    assert frame(b"\x80\x60" + bytes(10)) == b"\x00\x0c\x80\x60" + bytes(10)


def test_vector_whole_and_byte_by_byte():
    whole = Rfc4571Deframer()
    out = whole.feed(STREAM)
    assert out == PACKETS and len(out) > 20
    assert sum(is_rtcp(p) for p in out) == 1
    assert {parse_rtp(p).ssrc for p in out if not is_rtcp(p)} == {SSRC}
    one = Rfc4571Deframer()
    got = [p for i in range(len(STREAM)) for p in one.feed(STREAM[i:i + 1])]
    assert got == PACKETS
    assert (one.resyncs, one.bytes_skipped, one.buffered) == (0, 0, 0)


def test_resync_after_garbage_with_and_without_ssrc():
    junk = b"\x00\x05\xff\x80\x60\x13garbage\x00\x00"
    data = b"".join(frame(p) for p in PACKETS[:3]) + junk + b"".join(frame(p) for p in PACKETS[3:])
    for d in (Rfc4571Deframer(), Rfc4571Deframer(ssrc=SSRC)):
        out = d.feed(data)
        assert out == PACKETS
        assert d.resyncs == 1 and d.bytes_skipped == len(junk)
        _consistent(d, out)


def test_oversized_length_is_resynced():
    bad = b"\x30\x00" + PACKETS[0][:12]  # plausible header, but 12288 > max_frame
    d = Rfc4571Deframer(max_frame=10 * 1024)
    out = d.feed(bad + b"".join(frame(p) for p in PACKETS))
    assert out == PACKETS and d.resyncs == 1 and d.bytes_skipped == len(bad)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_corruption_never_raises_and_recovers(data):
    stream = bytearray(STREAM)
    start = data.draw(st.integers(0, len(stream) - MAX - 3000))
    junk = data.draw(st.binary(min_size=1, max_size=300))
    mode = data.draw(st.sampled_from(["overwrite", "insert", "delete"]))
    if mode == "overwrite":
        stream[start:start + len(junk)] = junk
    elif mode == "insert":
        stream[start:start] = junk
    else:
        del stream[start:start + len(junk)]
    sizes = data.draw(st.lists(st.integers(1, 3000), min_size=1, max_size=40))
    ssrc = data.draw(st.sampled_from([None, SSRC]))
    # Packets starting past the damage plus one maximal swallowed frame must all come out.
    damage_end = start + len(junk) + (len(junk) if mode == "insert" else 0) + MAX + 2
    shift = len(junk) if mode == "insert" else -len(junk) if mode == "delete" else 0
    tail = [p for off, p in OFFSETS if off + (shift if off > start else 0) >= damage_end]
    chunked, pos, k = Rfc4571Deframer(MAX, ssrc=ssrc), 0, 0
    got: list[bytes] = []
    while pos < len(stream):
        n = sizes[k % len(sizes)]
        got += chunked.feed(bytes(stream[pos:pos + n]))
        pos, k = pos + n, k + 1
    _consistent(chunked, got)
    assert tail and got[-len(tail):] == tail
    whole = Rfc4571Deframer(MAX, ssrc=ssrc)
    once = whole.feed(bytes(stream))
    _consistent(whole, once)
    assert once[-len(tail):] == tail
