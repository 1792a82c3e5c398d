import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.media.errors import MediaError, RtpError
from gateway.media.rtp import RtpPacket, is_rtcp, packetize, parse_rtp


def test_doc_example_header():
    # gb28181.md §6.1: seq 0x1234, ts 7200, SSRC 0x06516E81, marker set.
    pkt = parse_rtp(bytes.fromhex("80E012340000 1C2006516E81".replace(" ", "")) + b"PS")
    assert (pkt.version, pkt.marker, pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc) == \
        (2, True, 96, 0x1234, 7200, 0x06516E81)
    assert pkt.payload == b"PS"
    assert isinstance(pkt.payload, memoryview)
    assert parse_rtp(bytes.fromhex("80601234000 01C2006516E81".replace(" ", ""))).marker is False


def test_csrc_extension_padding_round_trip():
    pkt = RtpPacket(padding=4, marker=True, payload_type=8, sequence=65535, timestamp=0xFFFFFFFF,
                    ssrc=1, csrc=(7, 8), extension=(0xBEDE, b"\x10\xaa\x00\x00"), payload=b"abc")
    data = pkt.serialize()
    assert data[0] == 0x80 | 0x20 | 0x10 | 2
    assert data[-1] == 4 and len(data) == 12 + 8 + 4 + 4 + 3 + 4
    back = parse_rtp(data)
    assert back.csrc == (7, 8) and back.extension == (0xBEDE, b"\x10\xaa\x00\x00")
    assert back.padding == 4 and bytes(back.payload) == b"abc"
    assert back.serialize() == data


@pytest.mark.parametrize("data,why", [
    (b"\x80\x60\x00", "short"),
    (bytes(12), "version"),
    (b"\x40" + bytes(11), "version"),
    (b"\xa0\x60" + bytes(10), "padding 0"),
    (b"\xa0\x60" + bytes(9) + b"\x09", "padding > length"),
    (b"\x83\x60" + bytes(10) + bytes(8), "csrc"),
    (b"\x90\x60" + bytes(10) + b"\xbe\xde", "ext header"),
    (b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x02" + bytes(4), "ext body"),
])
def test_invalid_packets_raise_rtp_error(data, why):
    with pytest.raises(RtpError):
        parse_rtp(data)


def test_rtp_error_is_media_error():
    assert issubclass(RtpError, MediaError)


def test_rtcp_detection():
    assert is_rtcp(struct.pack("!BBHI", 0x80, 201, 1, 5))
    assert not is_rtcp(b"\x80\x60" + bytes(10))


def test_packetize_one_frame():
    payload = bytes(range(256)) * 12  # 3072 bytes → 1400 + 1400 + 272
    pkts = packetize(payload, ssrc=0x06516E81, timestamp=7200, first_sequence=65534)
    parsed = [parse_rtp(p) for p in pkts]
    assert [p.sequence for p in parsed] == [65534, 65535, 0]
    assert [p.marker for p in parsed] == [False, False, True]
    assert {p.timestamp for p in parsed} == {7200}
    assert {p.payload_type for p in parsed} == {96}
    assert [len(p.payload) for p in parsed] == [1400, 1400, 272]
    assert b"".join(bytes(p.payload) for p in parsed) == payload
    assert pkts[0][:12] == bytes.fromhex("8060fffe00001c2006516e81")
    no_marker = packetize(b"x", ssrc=1, timestamp=1, first_sequence=1, marker_last=False)
    assert len(no_marker) == 1 and not parse_rtp(no_marker[0]).marker


@given(st.builds(RtpPacket, padding=st.integers(0, 255), marker=st.booleans(),
                 payload_type=st.integers(0, 127), sequence=st.integers(0, 65535),
                 timestamp=st.integers(0, 2**32 - 1), ssrc=st.integers(0, 2**32 - 1),
                 csrc=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
                 extension=st.none() | st.tuples(st.integers(0, 65535),
                                                  st.binary(max_size=16).map(lambda b: b + bytes(-len(b) % 4))),
                 payload=st.binary(max_size=64)))
def test_round_trip(pkt):
    data = pkt.serialize()
    back = parse_rtp(data)
    assert back.serialize() == data
    assert bytes(back.payload) == pkt.payload and back.sequence == pkt.sequence


@given(st.binary(max_size=80))
def test_garbage_raises_only_rtp_error(data):
    try:
        parse_rtp(data)
    except RtpError:
        pass
