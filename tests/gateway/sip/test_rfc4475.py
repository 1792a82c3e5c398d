"""RFC 4475 torture messages from the sibling ../shared/conformance checkout (not copied here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.sip import Peer, Request, SipParseError, TransactionLayer, make_response, parse_message, serialize
from gateway.sip.framer import MessageBytes, StreamFramer
from gateway.sip.transaction import server_key
from gateway.sip.transport import stateless_error

SHARED = Path(__file__).parents[3] / ".." / "shared"
DIR = SHARED / "conformance" / "rfc4475"
if not (DIR / "manifest.json").exists():
    pytest.skip("../shared/conformance/rfc4475 not available", allow_module_level=True)

MANIFEST: list[dict[str, Any]] = json.loads((DIR / "manifest.json").read_text())["messages"]
VALID = [m for m in MANIFEST if m["expected"] == "valid"]
INVALID = [m for m in MANIFEST if m["expected"] == "invalid"]


def load(m: dict[str, Any]) -> bytes:
    data = (DIR / m["file"]).read_bytes()
    assert len(data) == m["bytes"]
    return data


def touch(msg: Any) -> None:
    _ = (msg.call_id, msg.cseq, msg.from_, msg.to, msg.vias, msg.top_via, msg.content_type)
    assert parse_message(serialize(msg)) is not None


def test_manifest_covers_the_rfc() -> None:
    assert len(MANIFEST) == 50 and len(VALID) >= 25 and len(INVALID) >= 18


@pytest.mark.parametrize("m", VALID, ids=[m["name"] for m in VALID])
def test_valid_messages_parse(m: dict[str, Any]) -> None:
    msg = parse_message(load(m))
    touch(msg)
    if isinstance(msg, Request):
        assert msg.cseq[1] == msg.method
        r = make_response(msg, 200, to_tag="x", received=("192.0.2.1", 5060))
        assert parse_message(serialize(r)).call_id == msg.call_id


@pytest.mark.parametrize("m", INVALID, ids=[m["name"] for m in INVALID])
def test_invalid_messages_rejected_with_parse_error_only(m: dict[str, Any]) -> None:
    data = load(m)
    if m["liberal_accept_ok"]:
        try:
            touch(parse_message(data))
        except SipParseError:
            pass
        return
    with pytest.raises(SipParseError) as e:
        touch(parse_message(data))
    if m["expected_response"] in (400, 505):
        assert e.value.status == m["expected_response"]


@pytest.mark.parametrize("m", MANIFEST, ids=[m["name"] for m in MANIFEST])
def test_no_crash_anywhere(m: dict[str, Any]) -> None:
    """Every message through every entry point: only SipParseError may come out."""
    data = load(m)
    try:
        touch(parse_message(data))
    except SipParseError as e:
        out = stateless_error(data, e, ("192.0.2.1", 5060))
        if out is not None:  # echoes the peer's (possibly broken) headers, so only check its shape
            assert out.startswith(f"SIP/2.0 {e.status} {e.reason}\r\nVia: ".encode())
            assert out.endswith(b"\r\nContent-Length: 0\r\n\r\n")
            to = [ln for ln in out.split(b"\r\n") if ln.startswith(b"To:")]
            assert all(b";tag=" in ln.replace(b" ", b"") for ln in to)
    framer = StreamFramer()
    try:
        for i in range(0, len(data), 13):
            for ev in framer.feed(data[i : i + 13]):
                if isinstance(ev, MessageBytes):
                    touch(parse_message(ev.data))
    except SipParseError:
        pass


def test_specific_semantics() -> None:
    by = {m["name"]: m for m in MANIFEST}
    esc02 = parse_message(load(by["esc02"]))
    assert isinstance(esc02, Request) and esc02.method == "RE%47IST%45R"
    assert len(esc02.headers.get_all("Contact")) == 2  # C%6Fntact is another header
    semi = parse_message(load(by["semiuri"]))
    assert isinstance(semi, Request) and semi.request_uri.user == "user;par=u%40example.net"
    dbl = parse_message(load(by["dblreq"]))
    assert isinstance(dbl, Request) and dbl.method == "REGISTER" and dbl.body == b""
    ws = parse_message(load(by["wsinv"]))
    assert ws.cseq == (9, "INVITE") and ws.to.tag == "1918181833n" and ws.from_.tag == "98asjd8"
    assert [v.branch for v in ws.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert ws.from_.display == 'J Rosenberg \\"'
    cp1 = parse_message(load(by["cparam01"]))
    contact = cp1.headers.get("Contact") or ""
    assert "unknownparam" in contact
    mp = parse_message(load(by["mpart01"]))
    assert len(mp.body) == int(mp.headers.get("Content-Length") or -1)
    with pytest.raises(SipParseError) as e:
        parse_message(load(by["badvers"]))
    assert e.value.status == 505


def test_badbranch_uses_rfc2543_matching() -> None:
    by = {m["name"]: m for m in MANIFEST}
    req = parse_message(load(by["badbranch"]))
    assert isinstance(req, Request)
    key = server_key(req)
    assert key[0] == "s2543"
    layer = TransactionLayer()
    peer = Peer("udp", "192.0.2.1", 5060)
    assert len(layer.receive(req, peer, 0.0)) == 1
    layer.respond(key, make_response(req, 200), 0.0)
    again = layer.receive(parse_message(load(by["badbranch"])), peer, 0.1)
    assert len(again) == 1 and type(again[0]).__name__ == "Send"
