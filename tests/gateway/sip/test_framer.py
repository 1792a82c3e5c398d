"""StreamFramer and parse_datagram: pings, chunking, limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip import MessageTooLarge, SipParseError
from gateway.sip.framer import MessageBytes, Ping, StreamFramer, content_length, parse_datagram

DATA = Path(__file__).parents[2] / "data" / "sip"
KA = (DATA / "valid_keepalive.txt").read_bytes()
REG = (DATA / "valid_register_initial.txt").read_bytes()


def test_datagram_keepalives_are_none() -> None:
    assert parse_datagram(b"\r\n\r\n") is None
    assert parse_datagram(b"\r\n") is None
    msg = parse_datagram(KA)
    assert msg is not None and msg.call_id == "2084736615"
    with pytest.raises(MessageTooLarge):
        parse_datagram(KA, max_size=100)


def test_pings_between_messages() -> None:
    f = StreamFramer()
    ev = f.feed(b"\r\n\r\n" + KA + b"\r\n\r\n\r\n\r\n" + REG)
    assert [type(e) for e in ev] == [Ping, MessageBytes, Ping, Ping, MessageBytes]
    assert f.buffered == 0


def test_ping_byte_by_byte_and_lone_crlf() -> None:
    f = StreamFramer()
    out = []
    for b in b"\r\n\r\n":
        out += f.feed(bytes([b]))
    assert out == [Ping()]
    assert f.feed(b"\r\n") == [] and f.buffered == 2  # maybe the start of a ping
    assert f.feed(KA) == [MessageBytes(KA)]  # a lone CRLF before a message is skipped


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=60))
def test_any_chunking(cuts: list[int]) -> None:
    stream = KA + b"\r\n\r\n" + REG + KA
    f = StreamFramer()
    events = []
    pos = 0
    for c in cuts:
        events += f.feed(stream[pos : pos + c])
        pos += c
    events += f.feed(stream[pos:])
    assert [e.data if isinstance(e, MessageBytes) else "ping" for e in events] == [KA, "ping", REG, KA]


def test_lf_only_head_and_missing_content_length() -> None:
    head = b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nCall-ID: x\n\n"
    f = StreamFramer()
    assert f.feed(head + b"REST") == [MessageBytes(head)]  # no Content-Length on TCP: 0
    assert f.buffered == 4


def test_limits_are_fatal() -> None:
    f = StreamFramer(max_message=1024)
    with pytest.raises(MessageTooLarge) as e:
        f.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: " + b"a" * 2000)
    assert e.value.fatal
    f = StreamFramer(max_message=1024)
    with pytest.raises(MessageTooLarge):
        f.feed(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
    for bad in (b"Content-Length: -1", b"Content-Length: abc", b"l: 1\r\nContent-Length: 2"):
        with pytest.raises(SipParseError) as e2:
            StreamFramer().feed(b"MESSAGE sip:a@b SIP/2.0\r\n" + bad + b"\r\n\r\n")
        assert e2.value.fatal


def test_buffer_stays_bounded_while_waiting() -> None:
    f = StreamFramer(max_message=4096)
    f.feed(KA[:-10])
    assert f.buffered == len(KA) - 10
    assert f.feed(KA[-10:]) == [MessageBytes(KA)]


def test_content_length_helper() -> None:
    assert content_length(b"A: b\r\nl:  12 \r\n") == 12
    assert content_length(b"A: b\r\n") == 0
    assert content_length(b"CONTENT-LENGTH : 7\n") == 7
