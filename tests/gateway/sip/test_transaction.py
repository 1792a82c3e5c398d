"""TransactionLayer with a fake clock: every timer of RFC 3261 §17 at its exact instant."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sip import (
    AckReceived,
    Headers,
    Peer,
    Request,
    RequestReceived,
    Response,
    ResponseReceived,
    Send,
    StrayResponse,
    TransactionError,
    TransactionLayer,
    TransactionTimeout,
    make_response,
    new_branch,
    parse_message,
    serialize,
)
from gateway.sip.transaction import TxState, _Tx

DATA = Path(__file__).parents[2] / "data" / "sip"
UDP = Peer("udp", "192.0.2.10", 5060)
TCP = Peer("tcp", "192.0.2.10", 40000, conn_id=7)


def request(method: str = "MESSAGE", branch: str | None = None, cseq: int = 1) -> Request:
    h = Headers([
        ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;rport;branch={branch or new_branch()}"),
        ("From", "<sip:44010600002000000001@4401060000>;tag=f1"),
        ("To", "<sip:44010600001320000101@4401060000>"),
        ("Call-ID", "call-1"),
        ("CSeq", f"{cseq} {method}"),
        ("Max-Forwards", "70"),
    ])
    return Request(method, "sip:44010600001320000101@192.0.2.10", h)


def wire(msg: Request | Response) -> Request | Response:
    return parse_message(serialize(msg))


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, object]]:
    """Advance a fake clock timer by timer; return (time, event) pairs."""
    out: list[tuple[float, object]] = []
    while (t := layer.next_timer()) is not None and t <= end:
        out += [(t, e) for e in layer.handle_timer(t)]
    return out


def test_non_invite_client_timer_e_and_f() -> None:
    layer = TransactionLayer()
    key, ev = layer.send_request(request(), UDP, 0.0)
    assert [type(e) for e in ev] == [Send]
    fired = run_until(layer, 100.0)
    sends = [t for t, e in fired if isinstance(e, Send)]
    assert sends == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # capped at T2
    assert [(t, e) for t, e in fired if isinstance(e, TransactionTimeout)] == [(32.0, TransactionTimeout(key))]
    assert len(layer) == 0 and layer.next_timer() is None


def test_invite_client_timer_a_unbounded_and_b() -> None:
    layer = TransactionLayer()
    _key, _ = layer.send_request(request("INVITE"), UDP, 0.0)
    fired = run_until(layer, 100.0)
    assert [t for t, e in fired if isinstance(e, Send)] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [t for t, e in fired if isinstance(e, TransactionTimeout)] == [32.0]


def test_client_over_tcp_never_retransmits() -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(request(), TCP, 0.0)
    fired = run_until(layer, 100.0)
    assert fired == [(32.0, TransactionTimeout(key))]


def test_non_invite_client_proceeding_and_timer_k() -> None:
    layer = TransactionLayer()
    req = request()
    key, _ = layer.send_request(req, UDP, 0.0)
    ev = layer.receive(wire(make_response(req, 100)), UDP, 0.2)
    assert isinstance(ev[0], ResponseReceived) and not ev[0].final
    fired = run_until(layer, 8.2)
    assert [t for t, e in fired if isinstance(e, Send)] == [4.2, 8.2]  # T2 in Proceeding
    ok = wire(make_response(req, 200, to_tag="t"))
    ev = layer.receive(ok, UDP, 9.0)
    assert isinstance(ev[0], ResponseReceived) and ev[0].final and ev[0].key == key
    assert layer.receive(ok, UDP, 9.5) == []  # retransmitted final absorbed
    assert run_until(layer, 13.9) == [] and len(layer) == 1
    assert run_until(layer, 14.0) == [] and len(layer) == 0  # Timer K = T4
    assert isinstance(layer.receive(ok, UDP, 15.0)[0], StrayResponse)


def test_invite_client_non_2xx_is_acked_and_timer_d() -> None:
    layer = TransactionLayer()
    req = request("INVITE")
    _key, _ = layer.send_request(req, UDP, 0.0)
    busy = wire(make_response(req, 486, to_tag="x"))
    ev = layer.receive(busy, UDP, 0.1)
    assert isinstance(ev[0], ResponseReceived) and ev[0].final
    ack = parse_message(ev[1].data)  # type: ignore[union-attr]
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.cseq == (1, "ACK")
    assert ack.top_via.branch == req.top_via.branch and ack.to.tag == "x"
    assert layer.receive(busy, UDP, 1.0) == [Send(ev[1].data, UDP)]  # type: ignore[union-attr]
    assert run_until(layer, 32.09) == [] and len(layer) == 1
    run_until(layer, 32.1)
    assert len(layer) == 0


def test_invite_client_2xx_retransmissions_reach_the_tu() -> None:
    layer = TransactionLayer()
    req = request("INVITE")
    _key, _ = layer.send_request(req, UDP, 0.0)
    assert not layer.receive(wire(make_response(req, 180, to_tag="d")), UDP, 0.1)[0].final  # type: ignore
    assert run_until(layer, 10.0) == []  # provisional stopped Timer A
    ok = wire(make_response(req, 200, to_tag="d"))
    assert layer.receive(ok, UDP, 10.0)[0].final  # type: ignore[union-attr]
    again = layer.receive(ok, UDP, 10.5)
    assert isinstance(again[0], ResponseReceived) and again[0].final  # so the TU re-sends its ACK


def test_non_invite_server_absorbs_and_timer_j() -> None:
    layer = TransactionLayer()
    req = wire(request())
    ev = layer.receive(req, UDP, 0.0)
    assert isinstance(ev[0], RequestReceived)
    key = ev[0].key
    assert layer.receive(wire(req), UDP, 0.4) == []  # no response yet: nothing
    out = layer.respond(key, make_response(req, 200), 0.5)  # type: ignore[arg-type]
    sent = out[0].data  # type: ignore[union-attr]
    resp = parse_message(sent)
    assert isinstance(resp, Response) and resp.to.tag  # tag added
    assert resp.top_via.received == "192.0.2.10" and resp.top_via.rport == 5060
    assert layer.receive(wire(req), UDP, 1.0) == [Send(sent, UDP)]  # cached response, no new request
    with pytest.raises(TransactionError):
        layer.respond(key, make_response(req, 200), 1.0)  # type: ignore[arg-type]
    assert run_until(layer, 32.49) == [] and len(layer) == 1
    run_until(layer, 32.5)  # Timer J = 64*T1 after the response
    assert len(layer) == 0
    assert isinstance(layer.receive(wire(req), UDP, 33.0)[0], RequestReceived)
    assert layer.stats["retransmissions_absorbed"] == 2


def test_server_over_tcp_has_zero_timer_j() -> None:
    layer = TransactionLayer()
    req = wire(request())
    key = layer.receive(req, TCP, 0.0)[0].key  # type: ignore[union-attr]
    layer.respond(key, make_response(req, 200), 0.0)  # type: ignore[arg-type]
    assert len(layer) == 0


def test_provisional_then_final_and_retransmit_of_provisional() -> None:
    layer = TransactionLayer()
    req = wire(request())
    key = layer.receive(req, UDP, 0.0)[0].key  # type: ignore[union-attr]
    p = layer.respond(key, make_response(req, 100), 0.0)[0]  # type: ignore[arg-type]
    assert layer.receive(wire(req), UDP, 0.5) == [p]
    f = layer.respond(key, make_response(req, 200), 0.6)[0]  # type: ignore[arg-type]
    assert layer.receive(wire(req), UDP, 0.7) == [f]
    assert parse_message(p.data).to.tag == parse_message(f.data).to.tag  # type: ignore[union-attr]


def test_invite_server_non_2xx_timer_g_h_and_ack_absorbed() -> None:
    layer = TransactionLayer()
    inv = wire(request("INVITE"))
    key = layer.receive(inv, UDP, 0.0)[0].key  # type: ignore[union-attr]
    layer.respond(key, make_response(inv, 486), 0.0)  # type: ignore[arg-type]
    fired = run_until(layer, 4.0)
    assert [t for t, e in fired if isinstance(e, Send)] == [0.5, 1.5, 3.5]
    ack = request("ACK", branch=inv.top_via.branch)
    assert layer.receive(wire(ack), UDP, 4.0) == []  # absorbed (matches the INVITE transaction)
    assert run_until(layer, 8.99) == [] and len(layer) == 1  # Timer I = T4
    run_until(layer, 9.0)
    assert len(layer) == 0


def test_invite_server_timer_h_without_ack() -> None:
    layer = TransactionLayer()
    inv = wire(request("INVITE"))
    key = layer.receive(inv, UDP, 0.0)[0].key  # type: ignore[union-attr]
    layer.respond(key, make_response(inv, 500), 0.0)  # type: ignore[arg-type]
    fired = run_until(layer, 40.0)
    assert [t for t, e in fired if isinstance(e, Send)] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5,
                                                             31.5]
    assert [(t, e) for t, e in fired if isinstance(e, TransactionTimeout)] == [
        (32.0, TransactionTimeout(key, server=True))]


def test_invite_server_2xx_retransmitted_until_ack() -> None:
    layer = TransactionLayer()
    inv = wire(request("INVITE"))
    key = layer.receive(inv, UDP, 0.0)[0].key  # type: ignore[union-attr]
    layer.respond(key, make_response(inv, 200, to_tag="dlg"), 0.0)  # type: ignore[arg-type]
    fired = run_until(layer, 2.0)
    assert [t for t, e in fired if isinstance(e, Send)] == [0.5, 1.5]
    ack = request("ACK")  # new branch: an ACK for 2xx is its own transaction (RFC 3261 §17.1.1.3)
    ev = layer.receive(wire(ack), UDP, 2.0)
    assert [type(e) for e in ev] == [AckReceived]
    assert [e for t, e in run_until(layer, 40.0) if isinstance(e, Send | TransactionTimeout)] == []
    assert len(layer) == 0
    assert layer.receive(wire(inv), UDP, 41.0)[0].key == key  # type: ignore[union-attr]


def test_stray_ack_and_cancel() -> None:
    layer = TransactionLayer()
    assert isinstance(layer.receive(wire(request("ACK")), UDP, 0.0)[0], AckReceived)
    inv = wire(request("INVITE", branch="z9hG4bKinv"))
    key = layer.receive(inv, UDP, 0.0)[0].key  # type: ignore[union-attr]
    cancel = wire(request("CANCEL", branch="z9hG4bKinv"))
    ev = layer.receive(cancel, UDP, 0.1)
    assert isinstance(ev[0], RequestReceived) and ev[0].key != key
    assert layer.cancel_target(cancel) == key  # type: ignore[arg-type]


def test_abandoned_server_transaction_is_dropped() -> None:
    layer = TransactionLayer()
    layer.receive(wire(request()), UDP, 0.0)
    run_until(layer, 32.0)
    assert len(layer) == 0 and layer.stats["server_abandoned"] == 1


def test_connection_lost_fails_pending_client_transactions() -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(request(), TCP, 0.0)
    layer.receive(wire(request(branch="z9hG4bKsrv")), TCP, 0.0)
    assert layer.connection_lost(7, 1.0) == [TransactionTimeout(key)]
    assert len(layer) == 0


def test_misuse_raises_transaction_error() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionError):
        layer.send_request(request("ACK"), UDP, 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request(branch="oldstyle"), UDP, 0.0)
    r = request(branch="z9hG4bKdup")
    layer.send_request(r, UDP, 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(r, UDP, 0.0)
    with pytest.raises(TransactionError):
        layer.respond(("nope",), make_response(r, 200), 0.0)


def test_scales_to_many_timer_j_transactions() -> None:
    """200,000 keepalive transactions: one heap entry each, all gone after Timer J."""
    layer = TransactionLayer()
    req = wire(request())
    resp = make_response(req, 200, to_tag="t")  # type: ignore[arg-type]
    data = serialize(resp)
    n = 200_000
    for i in range(n):
        key = ("s", f"z9hG4bK{i}", "h", 5060, "MESSAGE")
        tx = layer._txs  # direct insertion keeps the test fast; the path is the same as receive()
        t = _Tx(key, UDP, True, False, TxState.COMPLETED)
        t.last = data
        t.end_at = i / 5000 + 32.0
        tx[key] = t
        layer._arm(t)
    assert len(layer._heap) == n
    run_until(layer, n / 5000 + 32.0)
    assert len(layer) == 0 and not layer._heap


def test_stateless_final_response_keeps_no_transaction() -> None:
    """RFC 3261 §8.2.7: a stateless answer forgets the request at once, so its retransmission
    reaches the application again (which answers it again) instead of being absorbed."""
    layer = TransactionLayer()
    req = wire(request("MESSAGE", branch="z9hG4bKstateless1"))
    [ev] = layer.receive(req, UDP, 0.0)
    assert isinstance(ev, RequestReceived)
    out = layer.respond(ev.key, make_response(req, 200, to_tag="t1"), 0.0, stateless=True)
    assert [type(e) for e in out] == [Send]
    assert len(layer) == 0 and layer.next_timer() is None
    assert layer.stats["stateless_responses"] == 1
    again = layer.receive(req, UDP, 1.0)
    assert [type(e) for e in again] == [RequestReceived]  # not absorbed: answered again
    stateful = layer.respond(again[0].key, make_response(req, 200, to_tag="t1"), 1.0)
    assert [type(e) for e in stateful] == [Send] and len(layer) == 1  # the default keeps Timer J
    assert layer.receive(req, UDP, 2.0) == [Send(stateful[0].data, UDP)]  # ...and absorbs


def test_a_held_request_absorbs_retransmissions_until_its_answer_then_keeps_timer_j() -> None:
    """`hold` + `answer`: the fast path's login, taken from a scan (no parsed request) and
    answered once durable, leaves the transaction `receive` + `respond` leave — a retransmission
    before the answer is absorbed without an event, one after it gets the answer's bytes, Timer J
    ends it 64·T1 after the answer; an unanswered hold is abandoned after 64·T1 like any request."""
    layer = TransactionLayer()
    req = wire(request("REGISTER", branch="z9hG4bKheld1"))
    key = ("s", "z9hG4bKheld1", "192.0.2.1", 5060, "REGISTER")
    assert key == layer.receive(req, UDP, 0.0)[0].key  # the key a scan computes is the parser's
    layer = TransactionLayer()
    layer.hold(key, UDP, 0.0)
    assert key in layer and layer.next_timer() == 32.0
    assert layer.receive(req, UDP, 1.0) == []  # absorbed: nothing to resend yet
    out = layer.answer(key, b"SIP/2.0 200 OK\r\n\r\n", 2.0)
    assert out == [Send(b"SIP/2.0 200 OK\r\n\r\n", UDP)]
    assert layer.receive(req, UDP, 3.0) == out  # Timer J: the same answer
    with pytest.raises(TransactionError):
        layer.answer(key, b"again", 3.0)
    assert run_until(layer, 2.0 + 32.0 - 0.001) == [] and key in layer
    run_until(layer, 2.0 + 32.0)
    assert key not in layer
    with pytest.raises(TransactionError):
        layer.answer(key, b"late", 40.0)  # gone: the caller counts a failed respond

    layer.hold(key, UDP, 100.0)
    run_until(layer, 132.0)
    assert key not in layer and layer.stats["server_abandoned"] == 1
    layer.hold(key, TCP, 200.0)  # reliable: no Timer J
    assert layer.answer(key, b"ok", 201.0) == [Send(b"ok", TCP)] and key not in layer
