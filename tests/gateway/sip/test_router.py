"""SipRouter in memory: method table, dialog table, default answers, handler errors."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from gateway.sip.errors import SipParseError
from gateway.sip.events import Peer
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.router import SipRouter

PEER = Peer("udp", "192.0.2.1", 5060)


class Responder:
    def __init__(self) -> None:
        self.sent: list[Response] = []

    def respond(self, key: Hashable, response: Response, *, stateless: bool = False) -> None:
        self.sent.append(response)


def req(method: str, call_id: str = "c1", sender: str = "a") -> Request:
    raw = (f"{method} sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{method}\r\n"
           f"From: <sip:{sender}@example.com>;tag=f\r\nTo: <sip:x@example.com>\r\nCall-ID: {call_id}\r\n"
           f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode()
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


def make() -> tuple[SipRouter, Responder]:
    router, out = SipRouter(), Responder()
    router.bind(out)
    return router, out


@pytest.mark.parametrize(("method", "status"), [("OPTIONS", 200), ("BYE", 481), ("CANCEL", 481), ("INFO", 481),
                                                ("INVITE", 488), ("SUBSCRIBE", 405), ("X0001AB", 501)])
def test_default_answers(method: str, status: int) -> None:
    router, out = make()
    router.on_request(req(method), PEER, "k")
    assert [r.status for r in out.sent] == [status]
    assert router.stats[f"responses:{status}"] == 1
    assert router.stats["requests:other" if method.startswith("X") else f"requests:{method}"] == 1


def test_methods_go_to_their_handler_and_allow_lists_them() -> None:
    router, out = make()
    seen: list[str] = []
    for m in ("REGISTER", "MESSAGE", "NOTIFY"):
        router.add_method(m, lambda r, p, k: seen.append(r.method))
    router.on_request(req("MESSAGE"), PEER, "k")
    assert seen == ["MESSAGE"] and out.sent == []
    assert router.allow == "REGISTER, MESSAGE, NOTIFY, INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"
    with pytest.raises(ValueError):
        router.add_method("MESSAGE", lambda r, p, k: None)


def test_handler_errors_become_400_or_500() -> None:
    router, out = make()

    def bad_header(r: Request, p: Peer, k: Hashable) -> None:
        raise SipParseError("Bad Expires")

    def broken(r: Request, p: Peer, k: Hashable) -> None:
        raise RuntimeError("bug")

    router.add_method("REGISTER", bad_header)
    router.add_method("MESSAGE", broken)
    router.on_request(req("REGISTER"), PEER, "k")
    router.on_request(req("MESSAGE"), PEER, "k")
    assert [(r.status, r.reason) for r in out.sent] == [(400, "Bad Expires"), (500, "Server Internal Error")]
    assert router.stats["refused:bad_request:Bad Expires"] == 1 and router.stats["internal_errors"] == 1


class Dialog:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.responses: list[int] = []
        self.acks: list[str] = []

    def on_dialog_request(self, request: Request, peer: Peer, key: Hashable) -> int:
        self.requests.append(request.method)
        return 200 if request.method == "BYE" else 481

    def on_dialog_response(self, response: Response, peer: Peer) -> bool:
        self.responses.append(response.status)
        return True

    def on_dialog_ack(self, request: Request, peer: Peer) -> None:
        self.acks.append(request.call_id)


def test_in_dialog_requests_and_stray_responses_reach_the_dialog_owner() -> None:
    router, out = make()
    dialog = Dialog()
    router.add_dialog("d1", dialog)
    router.on_request(req("BYE", "d1"), PEER, "k")
    router.on_request(req("INFO", "d1"), PEER, "k")
    router.on_request(req("BYE", "other"), PEER, "k")
    assert dialog.requests == ["BYE", "INFO"] and [r.status for r in out.sent] == [200, 481, 481]
    router.on_stray_response(make_response(req("INVITE", "d1"), 200), PEER)
    router.on_stray_response(make_response(req("INVITE", "nobody"), 200), PEER)
    assert dialog.responses == [200] and router.stats["stray_responses"] == 1
    router.remove_dialog("d1")
    router.on_request(req("BYE", "d1"), PEER, "k")
    assert out.sent[-1].status == 481 and router.dialogs() == 0


def test_connection_listeners_hear_closed_connections() -> None:
    router, _ = make()
    closed: list[Peer] = []
    router.add_connection_listener(closed.append)
    tcp = Peer("tcp", "192.0.2.1", 40000, 7)
    router.on_connection_closed(tcp)
    assert closed == [tcp]


def test_requests_from_a_registered_sender_go_to_its_handler_others_to_the_method_table() -> None:
    """A cascade upper's MESSAGE/INVITE reach the uplink; every other sender's MESSAGE the device adapter."""
    router, out = make()
    seen: list[tuple[str, str]] = []
    router.add_method("MESSAGE", lambda r, p, k: seen.append(("devices", r.method)))
    router.add_sender("upper", ("MESSAGE", "INVITE"), lambda r, p, k: seen.append(("upper", r.method)))
    router.on_request(req("MESSAGE", sender="upper"), PEER, "k")
    router.on_request(req("INVITE", sender="upper"), PEER, "k")
    router.on_request(req("MESSAGE", sender="camera"), PEER, "k")
    router.on_request(req("NOTIFY", sender="upper"), PEER, "k")  # not in its methods: default answer
    assert seen == [("upper", "MESSAGE"), ("upper", "INVITE"), ("devices", "MESSAGE")]
    assert [r.status for r in out.sent] == [501]
    with pytest.raises(ValueError):
        router.add_sender("upper", ("MESSAGE",), lambda r, p, k: None)
    router.remove_sender("upper")
    router.on_request(req("MESSAGE", sender="upper"), PEER, "k")
    assert seen[-1] == ("devices", "MESSAGE")


def test_an_ack_goes_to_its_dialog_owner() -> None:
    router, _ = make()
    dialog = Dialog()
    router.add_dialog("d1", dialog)
    router.on_ack(req("ACK", "d1"), PEER)
    router.on_ack(req("ACK", "other"), PEER)
    assert dialog.acks == ["d1"] and router.stats["acks"] == 2
