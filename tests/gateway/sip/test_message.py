"""Parser/serializer table over tests/data/sip, value types, make_response, hypothesis round trips."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip import (
    Headers,
    NameAddr,
    Request,
    Response,
    SipParseError,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    serialize,
)
from gateway.sip.framer import MessageBytes, StreamFramer

DATA = Path(__file__).parents[2] / "data" / "sip"
VALID = sorted(DATA.glob("valid_*.txt"))
LENIENT = sorted(DATA.glob("lenient_*.txt"))
INVALID = sorted(DATA.glob("invalid_*.txt"))
REASONS = json.loads((DATA / "invalid_reasons.json").read_text())


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_vectors_present_and_binary() -> None:
    assert len(VALID) >= 10 and len(INVALID) >= 10 and len(LENIENT) >= 2
    assert b"* -text" in (DATA / ".gitattributes").read_bytes()
    for p in VALID:
        assert b"\r\n\r\n" in p.read_bytes(), p.name  # CRLF kept on disk


@pytest.mark.parametrize("path", VALID, ids=ids(VALID))
def test_valid_whole_round_trip_exact(path: Path) -> None:
    data = path.read_bytes()
    msg = parse_message(data)
    assert serialize(msg) == data
    assert msg.call_id and msg.cseq[0] >= 0 and msg.vias and msg.from_.uri and msg.to.uri
    if isinstance(msg, Request):
        assert msg.cseq[1] == msg.method


@pytest.mark.parametrize("path", VALID + LENIENT, ids=ids(VALID + LENIENT))
def test_valid_byte_by_byte_through_framer(path: Path) -> None:
    data = path.read_bytes()
    framer = StreamFramer()
    events = []
    for i in range(len(data)):
        events += framer.feed(data[i : i + 1])
    assert len(events) == 1 and isinstance(events[0], MessageBytes)
    assert events[0].data == data and framer.buffered == 0
    assert parse_message(events[0].data) == parse_message(data)


@pytest.mark.parametrize("path", VALID + LENIENT, ids=ids(VALID + LENIENT))
def test_valid_with_trailing_data(path: Path) -> None:
    data = path.read_bytes()
    whole = parse_message(data)
    assert parse_message(data + b"TRAILING GARBAGE\r\n") == whole  # UDP: truncate to Content-Length
    framer = StreamFramer()
    events = framer.feed(data + data + b"INVITE sip:x")
    assert [e.data for e in events if isinstance(e, MessageBytes)] == [data, data]
    assert framer.buffered == len(b"INVITE sip:x")


@pytest.mark.parametrize("path", LENIENT, ids=ids(LENIENT))
def test_lenient_parse_semantically(path: Path) -> None:
    msg = parse_message(path.read_bytes())
    again = parse_message(serialize(msg))
    assert again == msg and b"\r\n" in serialize(msg)


@pytest.mark.parametrize("path", INVALID, ids=ids(INVALID))
def test_invalid_twins_raise_parse_error_only(path: Path) -> None:
    data = path.read_bytes()
    with pytest.raises(SipParseError) as e:
        parse_message(data)
    assert e.value.reason == REASONS[path.stem]
    assert e.value.status == (505 if "Version" in e.value.reason else 400)
    framer = StreamFramer()
    try:
        for i in range(len(data)):
            for ev in framer.feed(data[i : i + 1]):
                if isinstance(ev, MessageBytes):
                    parse_message(ev.data)
    except SipParseError:
        pass


def test_lookup_case_and_compact_forms() -> None:
    msg = parse_message((DATA / "valid_compact_bare_addr.txt").read_bytes())
    h = msg.headers
    assert h.get("via") == h.get("VIA") == h.get("v")
    assert "Call-ID" in h and "i" in h and "call-id" in h and "X-Nope" not in h
    assert msg.call_id == "compact-1@192.168.1.10"
    assert msg.from_.tag == "99" and msg.from_.uri.user == "44010600002000000001"
    assert h.get("Supported") == "path" and h.get("content-length") == "0"
    assert [n for n, _ in h.items()][:2] == ["v", "f"]  # original names preserved


def test_multi_value_split_and_properties() -> None:
    msg = parse_message((DATA / "valid_multi_via_response.txt").read_bytes())
    assert isinstance(msg, Response) and (msg.status, msg.reason) == (180, "Ringing")
    assert [v.branch for v in msg.vias] == ["z9hG4bKaaa", "z9hG4bKbbb", "z9hG4bKccc"]
    assert msg.headers.get_all("Via")[1] == "SIP/2.0/TCP 10.0.0.2;branch=z9hG4bKbbb"
    assert msg.top_via.received == "10.0.0.1" and msg.vias[1].transport == "TCP" and msg.vias[1].port is None
    assert msg.headers.get_all("record-route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert msg.from_.display == 'A "quoted" name'
    assert msg.cseq == (9, "INVITE")


def test_content_type_lower_and_body() -> None:
    msg = parse_message((DATA / "valid_invite_sdp.txt").read_bytes())
    assert msg.content_type == "application/sdp"
    assert msg.body.startswith(b"v=0\r\n") and b"y=0100000001" in msg.body
    assert isinstance(msg, Request) and msg.request_uri.port == 5060


def test_hikvision_spaces_and_gb2312_body() -> None:
    data = (DATA / "valid_catalog_hikvision_spaces.txt").read_bytes()
    msg = parse_message(data)
    assert "南门摄像机".encode("gb2312") in msg.body and len(msg.body) == int(msg.headers.get("l") or 0)


def test_ipv6() -> None:
    msg = parse_message((DATA / "valid_ipv6.txt").read_bytes())
    assert isinstance(msg, Request)
    assert msg.top_via.host == "2001:db8::1" and msg.top_via.port == 5062 and msg.top_via.has_rport
    assert msg.request_uri.host == "2001:db8::10" and msg.request_uri.params == {"transport": "udp"}
    assert str(msg.request_uri) == "sip:dev@[2001:db8::10]:5060;transport=udp"
    assert msg.from_.display == "Platform" and msg.from_.uri.host == "2001:db8::1"
    assert str(parse_via("SIP/2.0/TCP [::1];branch=z9hG4bKx")) == "SIP/2.0/TCP [::1];branch=z9hG4bKx"


def test_uri_and_name_addr_forms() -> None:
    u = parse_uri("sip:alice:pw@Example.com:5070;transport=tcp;lr?subject=x")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sip", "alice", "pw", "Example.com", 5070)
    assert u.params == {"transport": "tcp", "lr": None} and u.headers == "subject=x"
    assert str(u) == "sip:alice:pw@Example.com:5070;transport=tcp;lr?subject=x"
    assert parse_uri("tel:+123").opaque == "+123" and str(parse_uri("tel:+123")) == "tel:+123"
    assert parse_uri("sip:user;par=u@example.net").user == "user;par=u"  # RFC 4475 §3.1.1.9
    bare = parse_name_addr("sip:a@b;tag=1")  # bracket-less: ;tag is a header param
    assert bare.tag == "1" and bare.uri.params == {}
    br = parse_name_addr("<sip:a@b;lr>;tag=2")
    assert br.tag == "2" and br.uri.params == {"lr": None}
    assert parse_name_addr("caller<sip:caller@example.com>;tag=3").display == "caller"
    assert str(NameAddr("Cam 1", parse_uri("sip:1@d"), {"tag": "x"})) == '"Cam 1" <sip:1@d>;tag=x'
    for bad in ["", "sip:", "<sip:a@b", '"abc <sip:a@b>', "sip:a@b:99999", "sip:a b@c", "<sip:a@b> x"]:
        with pytest.raises(SipParseError):
            parse_name_addr(bad)
    for bad in ["SIP/2.0/UDP", "SIP/2.0 host", "SIP/1.0/UDP host", "SIP/2.0/UDP host;;", "SIP/2.0/UDP h:x"]:
        with pytest.raises(SipParseError):
            parse_via(bad)


def test_headers_mutation() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("X-A", "1"), ("x-a", "2"), ("Contact", "<sip:a@b>")])
    assert h.get_all("X-A") == ["1", "2"] and len(h) == 4
    h.set("x-A", "3")
    assert h.get_all("x-a") == ["3"] and [n for n, _ in h.items()] == ["Via", "x-A", "Contact"]
    h.add("Contact", "<sip:c@d>, <sip:e@f>")
    assert h.get_all("m") == ["<sip:a@b>", "<sip:c@d>", "<sip:e@f>"]
    h.prepend("v", "SIP/2.0/TCP top;branch=z9hG4bK0")
    assert h.items()[0] == ("Via", "SIP/2.0/TCP top;branch=z9hG4bK0")
    h.remove("CONTACT")
    assert "Contact" not in h and len(h) == 3


def test_parse_caches_are_invalidated_on_change() -> None:
    msg = parse_message((DATA / "valid_keepalive.txt").read_bytes())
    assert msg.cseq == (20, "MESSAGE")
    msg.headers.set("CSeq", "21 MESSAGE")
    assert msg.cseq == (21, "MESSAGE")
    msg.headers.remove("Call-ID")
    with pytest.raises(SipParseError, match="Missing Call-ID"):
        _ = msg.call_id


def test_serialize_fixes_content_length() -> None:
    msg = parse_message((DATA / "valid_keepalive.txt").read_bytes())
    msg.body = b"<x/>"
    assert b"\r\nContent-Length: 4\r\n\r\n<x/>" in serialize(msg)
    msg.headers.remove("Content-Length")
    assert serialize(msg).endswith(b"Content-Length: 4\r\n\r\n<x/>")


def test_make_response_copies_and_stamps() -> None:
    req = parse_message((DATA / "valid_register_initial.txt").read_bytes())
    assert isinstance(req, Request)
    r = make_response(req, 401, to_tag="a73f19c2", received=("203.0.113.9", 40000),
                      headers=[("WWW-Authenticate", 'Digest realm="x", nonce="y"')])
    assert (r.status, r.reason) == (401, "Unauthorized")
    v = r.top_via
    assert (v.received, v.rport, v.branch) == ("203.0.113.9", 40000, "z9hG4bK1839527461")
    assert r.to.tag == "a73f19c2" and r.from_ == req.from_ and r.call_id == req.call_id and r.cseq == req.cseq
    assert r.headers.get("Contact") is None and r.headers.get("Content-Length") == "0"
    out = parse_message(serialize(r))
    assert isinstance(out, Response) and out.headers.get("WWW-Authenticate") == 'Digest realm="x", nonce="y"'
    assert make_response(req, 299).reason == "OK" and make_response(req, 499).reason == "Bad Request"
    tagged = make_response(make_request_with_to_tag(req), 200, to_tag="new")
    assert tagged.to.tag == "old"  # an existing tag is kept


def make_request_with_to_tag(req: Request) -> Request:
    h = req.headers.copy()
    h.set("To", (h.get("To") or "") + ";tag=old")
    return Request(req.method, req.uri, h, req.body)


def test_identifiers() -> None:
    b = new_branch()
    assert b.startswith("z9hG4bK") and len(b) > 12 and b != new_branch()
    assert new_tag() != new_tag()
    assert new_call_id("10.0.0.1").endswith("@10.0.0.1")


# ------------------------------------------------------------------ hypothesis
_TOKEN = st.text(string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=20)
_NAME = _TOKEN.filter(lambda n: n.lower() not in {
    "via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "content-length", "l", "max-forwards"})
_VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters=","), max_size=40).map(
    lambda s: s.strip())


@settings(max_examples=200, deadline=None)
@given(
    method=_TOKEN.filter(lambda m: m != "ACK" or True),
    extra=st.lists(st.tuples(_NAME, _VALUE), max_size=12),
    body=st.binary(max_size=300),
    cseq=st.integers(0, 2**32 - 1),
    user=st.text(string.ascii_letters + string.digits, min_size=1, max_size=20),
    display=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10),
)
def test_round_trip_generated_requests(method: str, extra: list[tuple[str, str]], body: bytes, cseq: int,
                                       user: str, display: str) -> None:
    frm = str(NameAddr(display, parse_uri(f"sip:{user}@example.com"), {"tag": "t1"}))
    h = Headers([
        ("Via", f"SIP/2.0/UDP 10.0.0.1:5060;branch={new_branch()}"),
        ("From", frm),
        ("To", f"<sip:{user}@example.com>"),
        ("Call-ID", f"{user}@host"),
        ("CSeq", f"{cseq} {method}"),
        *extra,
    ])
    req = Request(method, f"sip:{user}@example.com", h, body)
    data = serialize(req)
    back = parse_message(data)
    assert isinstance(back, Request)
    assert (back.method, back.uri, back.body) == (method, req.uri, body)
    assert [(n, v) for n, v in back.headers.items() if n != "Content-Length"] == h.items()
    assert back.from_.display == display.strip(" ") or back.from_.display == display
    assert back.cseq == (cseq, method)
    assert serialize(back) == data
    events = StreamFramer().feed(data[:-1] + data[-1:] + data)
    assert [e.data for e in events if isinstance(e, MessageBytes)] == [data, data]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    try:
        parse_message(b"INVITE sip:a@b SIP/2.0\r\n" + data)
    except SipParseError:
        pass
    try:
        for ev in StreamFramer(max_message=512).feed(data):
            if isinstance(ev, MessageBytes):
                parse_message(ev.data)
    except SipParseError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_vectors_raise_only_parse_error(data: st.DataObject) -> None:
    raw = bytearray(data.draw(st.sampled_from(VALID)).read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from(b" \t\r\n:;,<>\"@=/0123456789aZ\x00\xff"))
    try:
        msg = parse_message(bytes(raw))
        _ = (msg.call_id, msg.cseq, msg.from_, msg.to, msg.vias, msg.content_type)
        parse_message(serialize(msg))
    except SipParseError:
        pass
