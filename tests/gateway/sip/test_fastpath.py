"""The header scan and response template (gateway/sip/fastpath.py) against the full parser.

Where the scan says yes, it must agree with `parse_message` on everything a handler reads and its
template must be, byte for byte, what make_response + TransactionLayer.respond + serialize send.
Where a request is unusual (compact forms, duplicates, several Vias, folding, tabs, a To tag,
oversized or odd values, trailing bytes) the scan must say no, so the full path decides as before.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip import fastpath
from gateway.sip.errors import SipParseError
from gateway.sip.events import Peer, RequestReceived, Send
from gateway.sip.message import Request, make_response, parse_message, serialize, stateless_tag
from gateway.sip.transaction import TransactionLayer, server_key

DEVICE = "34020000001320000001"
KEEPALIVE = (b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
             b"<SN>7</SN>\r\n<DeviceID>34020000001320000001</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n")

token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_", min_size=1, max_size=24)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
hostname = st.from_regex(r"[a-z0-9]([a-z0-9.\-]{0,20}[a-z0-9])?", fullmatch=True).filter(lambda h: ".." not in h)


@st.composite
def plain_requests(draw: st.DrawFn) -> tuple[bytes, str]:
    """A request the scan must accept (the shape sipp and GB cameras send), and its method."""
    method = draw(st.sampled_from(["REGISTER", "MESSAGE"]))
    user = draw(st.from_regex(r"[0-9A-Za-z]{1,32}", fullmatch=True))
    host = draw(st.one_of(ipv4, hostname))
    port = draw(st.integers(1, 65535))
    params = draw(st.lists(st.sampled_from(["rport", "rport=5060", "received=10.0.0.1", "ttl=1", "lr"]),
                           max_size=3, unique_by=lambda p: p.partition("=")[0]))
    branch = draw(st.one_of(st.just("z9hG4bK") .map(lambda m: m + draw(token)), token, st.none()))
    if branch is not None:
        params.insert(draw(st.integers(0, len(params))), f"branch={branch}")
    via = f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP']))} {host}:{port}" + "".join(f";{p}" for p in params)
    domain = draw(st.sampled_from(["3402000000", "example.com", "10.1.2.3:5060"]))
    fields = [
        ("Via", via),
        ("From", f"<sip:{user}@{domain}>;tag={draw(token)}"),
        ("To", f"<sip:{draw(st.sampled_from([user, '34020000002000000001']))}@{domain}>"),
        ("Call-ID", draw(st.from_regex(r"[A-Za-z0-9.\-_@:!%*+~]{1,60}", fullmatch=True))),
        ("CSeq", f"{draw(st.integers(0, 999_999_999))} {method}"),
    ]
    optional = [("Max-Forwards", str(draw(st.integers(0, 255)))), ("User-Agent", "IP Camera"),
                ("Contact", f"<sip:{user}@{host}:{port}>"), ("Expires", str(draw(st.integers(0, 86400)))),
                ("Content-Type", "Application/MANSCDP+xml")]
    if method == "MESSAGE":  # a REGISTER with credentials is the full path's (see the next test)
        optional.append(("Authorization", 'Digest username="a", realm="3402000000", nonce="n", response="r"'))
    fields += draw(st.lists(st.sampled_from(optional), unique=True, max_size=len(optional)))
    fields = draw(st.permutations(fields))
    body = draw(st.sampled_from([b"", KEEPALIVE, b"<x>\xff\x00</x>"])) if method == "MESSAGE" else b""
    pad = " " * draw(st.integers(1, 8))
    head = [f"{method} sip:34020000002000000001@{domain} SIP/2.0"] + [f"{n}: {v}" for n, v in fields]
    head.append(f"Content-Length:{pad}{len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body, method


def full_path_bytes(data: bytes, status: int, received: tuple[str, int], reason: str | None,
                    extra: tuple[tuple[str, str], ...]) -> bytes:
    """What the device adapter's stateless answer puts on the wire through the full path."""
    req = parse_message(data)
    assert isinstance(req, Request)
    tl = TransactionLayer()
    peer = Peer("udp", *received)
    (ev,) = tl.receive(req, peer, 0.0)
    assert isinstance(ev, RequestReceived)
    resp = make_response(req, status, reason, to_tag=stateless_tag(req), headers=list(extra), received=received)
    (send,) = tl.respond(ev.key, resp, 0.0, stateless=True)
    assert isinstance(send, Send)
    return send.data


@settings(max_examples=400, deadline=None)
@given(plain_requests(), st.sampled_from([200, 401, 403, 404]), st.sampled_from([None, "Device Not Registered"]),
       st.sampled_from([(), (("WWW-Authenticate", 'Digest realm="3402000000", nonce="abc", qop="auth"'),)]),
       st.tuples(ipv4, st.integers(1, 65535)))
def test_scan_agrees_with_the_parser_and_the_template_with_the_full_answer(
        req: tuple[bytes, str], status: int, reason: str | None, extra: tuple[tuple[str, str], ...],
        received: tuple[str, int]) -> None:
    data, _method = req
    s = fastpath.scan(data)
    assert s is not None, data
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert (s.method, s.uri, s.body) == (msg.method, msg.uri, msg.body)
    assert s.from_user == msg.from_.uri.user and s.from_tag == msg.from_.tag and msg.to.tag is None
    assert s.cseq == msg.cseq[0] and s.headers["Call-ID"] == msg.call_id
    assert s.server_key == server_key(msg)
    for name, value in s.headers.items():
        assert msg.headers.get(name) == value
    assert fastpath.stateless_tag(s) == stateless_tag(msg)
    fast = fastpath.respond(s, status, received, to_tag=fastpath.stateless_tag(s), reason=reason, extra=extra)
    assert fast == full_path_bytes(data, status, received, reason, extra)


SIPP_KEEPALIVE = (
    b"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:15999;rport;branch=z9hG4bK-26347-1-0\r\nMax-Forwards: 70\r\n"
    b"From: <sip:34020000001320000001@3402000000>;tag=26347SIPpTag001\r\n"
    b"To: <sip:34020000002000000001@3402000000>\r\nCall-ID: 1-26347@127.0.0.1\r\nCSeq: 20 MESSAGE\r\n"
    b"Content-Type: Application/MANSCDP+xml\r\nUser-Agent: sipp-gb28181-ipc\r\n"
    b"Content-Length:   " + str(len(KEEPALIVE)).encode() + b"\r\n\r\n" + KEEPALIVE
)


def _swap(old: bytes, new: bytes) -> bytes:
    assert old in SIPP_KEEPALIVE
    return SIPP_KEEPALIVE.replace(old, new, 1)


HOSTILE = {
    "compact From": _swap(b"From: <", b"f: <"),
    "compact Content-Length": _swap(b"Content-Length:   ", b"l: "),
    "lower-case name": _swap(b"Call-ID:", b"call-id:"),
    "duplicate Call-ID": _swap(b"CSeq: 20", b"Call-ID: other\r\nCSeq: 20"),
    "duplicate Content-Length": _swap(b"User-Agent", b"Content-Length: 0\r\nUser-Agent"),
    "two Via headers": _swap(b"Max-Forwards", b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\nMax-Forwards"),
    "Via list": _swap(b"branch=z9hG4bK-26347-1-0", b"branch=z9hG4bK-26347-1-0, SIP/2.0/UDP 10.0.0.1:5060"),
    "folded header": _swap(b"User-Agent: sipp", b"User-Agent:\r\n sipp"),
    "tab": _swap(b"User-Agent: sipp", b"User-Agent:\tsipp"),
    "tab in value": _swap(b"sipp-gb28181", b"sipp\tgb28181"),
    "header injection (bare LF)": _swap(b"User-Agent: sipp",
                                        b"User-Agent: x\nVia: SIP/2.0/UDP 6.6.6.6:1;branch=z9hG4bKy"),
    "header injection (bare CR)": _swap(b"User-Agent: sipp", b"User-Agent: x\rVia: SIP/2.0/UDP 6.6.6.6:1"),
    "NUL in value": _swap(b"sipp-gb28181", b"sipp\x00gb28181"),
    "non-ASCII header": _swap(b"sipp-gb28181", "摄像机".encode()),
    "unknown header": _swap(b"User-Agent", b"X-Extra: 1\r\nUser-Agent"),
    "Route header": _swap(b"User-Agent", b"Route: <sip:6.6.6.6;lr>\r\nUser-Agent"),
    "To tag": _swap(b"@3402000000>\r\nCall-ID", b"@3402000000>;tag=abc\r\nCall-ID"),
    "display name": _swap(b"From: <", b'From: "cam" <'),
    "From without tag": _swap(b";tag=26347SIPpTag001", b""),
    "escaped user": _swap(b"<sip:34020000001320000001@", b"<sip:3402%30000001320000001@"),
    "oversized Call-ID": _swap(b"1-26347@127.0.0.1", b"c" * 2000),
    "oversized datagram": SIPP_KEEPALIVE.replace(b"</Notify>", b"<X>" + b"a" * 5000 + b"</X></Notify>"),
    "CSeq method mismatch": _swap(b"CSeq: 20 MESSAGE", b"CSeq: 20 REGISTER"),
    "CSeq overflow": _swap(b"CSeq: 20 MESSAGE", b"CSeq: 99999999999 MESSAGE"),
    "Max-Forwards overflow": _swap(b"Max-Forwards: 70", b"Max-Forwards: 256"),
    "Content-Length too small": _swap(b"Content-Length:   1", b"Content-Length:   0"),
    "trailing bytes": SIPP_KEEPALIVE + b"\r\n",
    "padded From": _swap(b"From: <", b"From:  <"),
    "trailing blank": _swap(b"sipp-gb28181-ipc", b"sipp-gb28181-ipc "),
    "LF-only lines": SIPP_KEEPALIVE.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n") + b"\n\n" + KEEPALIVE,
    "other method": SIPP_KEEPALIVE.replace(b"MESSAGE", b"NOTIFY"),
    "SIP/3.0": _swap(b"3402000000 SIP/2.0", b"3402000000 SIP/3.0"),
    "sips URI": _swap(b"MESSAGE sip:", b"MESSAGE sips:"),
    "valueless branch": _swap(b";branch=z9hG4bK-26347-1-0", b";branch"),
    "duplicate Via param": _swap(b";rport;", b";rport;rport=1;"),
    "upper-case Via param": _swap(b";rport;", b";RPORT;"),
    "IPv6 Via": _swap(b"127.0.0.1:15999;", b"[::1]:15999;"),
    "Via without port": _swap(b"127.0.0.1:15999;", b"127.0.0.1;"),
    "Via port overflow": _swap(b"127.0.0.1:15999;", b"127.0.0.1:99999;"),
    "Via TLS": _swap(b"SIP/2.0/UDP", b"SIP/2.0/TLS"),
    "missing To": _swap(b"To: <sip:34020000002000000001@3402000000>\r\n", b""),
}


def test_a_register_with_credentials_is_scanned_only_when_asked() -> None:
    first = (b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
             b"Via: SIP/2.0/UDP 127.0.0.1:15999;rport;branch=z9hG4bK-1\r\n"
             b"From: <sip:34020000001320000001@3402000000>;tag=1\r\nTo: <sip:34020000001320000001@3402000000>\r\n"
             b"Call-ID: 1@h\r\nCSeq: 1 REGISTER\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n")
    assert fastpath.scan(first) is not None
    second = first.replace(b"Expires:", b'Authorization: Digest username="34020000001320000001", response="0"\r\n'
                                        b"Expires:")
    assert fastpath.scan(second) is None
    s = fastpath.scan(second, credentials=True)  # as main and the SIP workers ask (gateway/app/sip.py)
    assert s is not None and s.get("Authorization") == 'Digest username="34020000001320000001", response="0"'


def test_the_sipp_keepalive_takes_the_fast_path() -> None:
    s = fastpath.scan(SIPP_KEEPALIVE)
    assert s is not None and s.from_user == DEVICE and s.body == KEEPALIVE


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_unusual_requests_take_the_full_path(name: str) -> None:
    assert fastpath.scan(HOSTILE[name]) is None


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_whatever_the_scan_accepts_the_parser_reads_the_same_way(data: st.DataObject) -> None:
    """Random byte edits of a plain request: the scan either refuses, or agrees with the parser
    (and its answer is the full path's answer byte for byte)."""
    raw = bytearray(data.draw(plain_requests())[0])
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = rnd.choice(["printable", "printable", "flip", "insert", "delete", "dup_line"])
        i = rnd.randrange(len(raw))
        if op == "printable":  # mostly keeps the shape: exercises what the scan lets through
            raw[i] = rnd.randrange(0x20, 0x7F)
        elif op == "flip":
            raw[i] = rnd.choice(b" \t\r\n:;,<>\"=%\x00\x7f\xffAz09")
        elif op == "insert":
            raw[i:i] = rnd.choice([b"\r\n", b" ", b";tag=x", b",", b"\r\nVia: SIP/2.0/UDP 1.2.3.4:5", b"l: 3\r\n"])
        elif op == "delete":
            del raw[i : i + rnd.randint(1, 8)]
        else:
            lines = bytes(raw).split(b"\r\n")
            if len(lines) > 2:
                j = rnd.randrange(1, len(lines) - 1)
                lines.insert(j, lines[j])
                raw = bytearray(b"\r\n".join(lines))
    blob = bytes(raw)
    s = fastpath.scan(blob)
    if s is None:
        return
    try:
        msg = parse_message(blob)
    except SipParseError as exc:  # pragma: no cover - the failure this test exists to find
        raise AssertionError(f"scan accepted what the parser refuses ({exc.reason}): {blob!r}") from None
    assert isinstance(msg, Request)
    assert (s.method, s.from_user, s.from_tag, s.cseq, s.body) == (
        msg.method, msg.from_.uri.user, msg.from_.tag, msg.cseq[0], msg.body)
    assert msg.to.tag is None and len(msg.vias) == 1 and s.server_key == server_key(msg)
    for name, value in s.headers.items():
        assert msg.headers.get(name) == value
    received = ("192.0.2.1", 5060)
    assert fastpath.respond(s, 200, received, to_tag=fastpath.stateless_tag(s)) == full_path_bytes(
        blob, 200, received, None, ())


via_values = st.builds(
    lambda transport, host, port, params: f"SIP/2.0/{transport} {host}:{port}" + "".join(f";{p}" for p in params),
    st.sampled_from(["UDP", "TCP", "TLS", "udp", "SCTP"]), st.one_of(ipv4, hostname, st.just("Cam.Example")),
    st.integers(0, 70000).map(str) | st.just("05060"),
    st.lists(st.sampled_from(["rport", "rport=1", "received=1.2.3.4", "branch=z9hG4bK1", "lr", "ttl=1", "RPORT",
                              "maddr=h", "rport"]), max_size=5))


@settings(max_examples=500, deadline=None)
@given(via_values, st.tuples(st.one_of(ipv4, st.just("::1")), st.integers(1, 65535)))
def test_with_received_splice_is_the_parsed_answer(via: str, received: tuple[str, int]) -> None:
    """The text splice for plain Vias gives what parse_via + str(Via) give (or both refuse)."""
    from gateway.sip import message

    try:
        slow = message._with_received_parsed(via, received)
    except SipParseError:
        with pytest.raises(SipParseError):
            message.with_received(via, received)
        return
    assert message.with_received(via, received) == slow


@settings(max_examples=200, deadline=None)
@given(plain_requests(), st.sampled_from(["abc", "0123456789"]))
def test_make_response_hands_over_the_to_it_would_parse(req: tuple[bytes, str], tag: str) -> None:
    msg = parse_message(req[0])
    assert isinstance(msg, Request)
    resp = make_response(msg, 200, to_tag=tag, received=("192.0.2.1", 5060))
    seeded = resp.headers._cache.get("to")
    reparsed = parse_message(serialize(resp)).to
    assert seeded is None or seeded == reparsed
    assert resp.to == reparsed
