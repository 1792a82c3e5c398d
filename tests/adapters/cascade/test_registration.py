"""UplinkSession on a fake clock: register with digest, refresh, keepalive, 3-failure offline, back-off."""

from __future__ import annotations

import pytest

from adapters.cascade.registration import (
    RequestKind,
    SendRequest,
    StateChanged,
    UplinkConfig,
    UplinkSession,
    UplinkState,
)
from gateway.gb import manscdp
from gateway.sip import digest
from gateway.sip.message import Request, Response, make_response

T0 = 1_000.0
UPPER = "44000000002000000001"
US = "44010600002000000001"
PW = "cascade-secret"


def config(**kw: object) -> UplinkConfig:
    base: dict[str, object] = dict(
        upper_id=UPPER, upper_domain="4400000000", upper_host="192.0.2.20", upper_port=5060, transport="udp",
        our_id=US, our_domain="4401060000", contact=f"<sip:{US}@192.0.2.10:5060>", user_agent="gbgate-test",
        password=PW, expires=3600, keepalive_interval=60.0, keepalive_failures=3, retry_interval=60.0,
    )
    base.update(kw)
    return UplinkConfig(**base)  # type: ignore[arg-type]


def sends(actions: list[object]) -> list[SendRequest]:
    return [a for a in actions if isinstance(a, SendRequest)]


def states(actions: list[object]) -> list[tuple[UplinkState, str]]:
    return [(a.state, a.cause) for a in actions if isinstance(a, StateChanged)]


def one(actions: list[object], kind: RequestKind) -> SendRequest:
    out = sends(actions)
    assert [s.kind for s in out] == [kind]
    return out[0]


def answer(send: SendRequest, status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    return make_response(send.request, status, to_tag="t", headers=headers or [])


def challenge(nonce: str = "n1", algorithm: str = "MD5", qop: bool = True) -> list[tuple[str, str]]:
    alg = digest.Algorithm.SHA256 if algorithm == "SHA-256" else digest.Algorithm.MD5
    return [("WWW-Authenticate", digest.challenge("4400000000", nonce, alg, qop=qop))]


def online(session: UplinkSession, now: float = T0, algorithm: str = "MD5") -> list[object]:
    first = one(session.start(now), RequestKind.REGISTER)
    second = one(session.on_response(first.seq, answer(first, 401, challenge(algorithm=algorithm)), now),
                 RequestKind.REGISTER)
    return session.on_response(second.seq, answer(second, 200, [("Expires", "3600")]), now + 0.1)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_register_answers_the_challenge_with_a_valid_digest(algorithm: str) -> None:
    s = UplinkSession(config())
    first = one(s.start(T0), RequestKind.REGISTER)
    r1 = first.request
    assert r1.uri == f"sip:{UPPER}@192.0.2.20:5060" and r1.headers.get("Authorization") is None
    assert r1.from_.uri.user == US and r1.to.uri.user == US and r1.headers.get("Expires") == "3600"
    assert s.state is UplinkState.REGISTERING
    second = one(s.on_response(first.seq, answer(first, 401, challenge(algorithm=algorithm)), T0),
                 RequestKind.REGISTER)
    r2 = second.request
    assert (r2.call_id, r2.from_.tag) == (r1.call_id, r1.from_.tag) and r2.cseq[0] == r1.cseq[0] + 1
    creds = digest.parse_credentials(r2.headers.get("Authorization") or "")
    assert creds.username == US and creds.uri == r1.uri and creds.algorithm == algorithm
    assert digest.verify(creds, "REGISTER", digest.ha1(algorithm, US, "4400000000", PW))
    out = s.on_response(second.seq, answer(second, 200, [("Expires", "3600")]), T0 + 0.1)
    assert states(out) == [(UplinkState.ONLINE, "registered")] and s.state is UplinkState.ONLINE


def test_407_is_answered_with_proxy_authorization() -> None:
    s = UplinkSession(config())
    first = one(s.start(T0), RequestKind.REGISTER)
    value = digest.challenge("4400000000", "p1", qop=False)
    second = one(s.on_response(first.seq, answer(first, 407, [("Proxy-Authenticate", value)]), T0),
                 RequestKind.REGISTER)
    assert second.request.headers.get("Proxy-Authorization") is not None


def test_a_wrong_password_is_not_retried_forever_then_backs_off() -> None:
    s = UplinkSession(config())
    first = one(s.start(T0), RequestKind.REGISTER)
    second = one(s.on_response(first.seq, answer(first, 401, challenge("n1")), T0), RequestKind.REGISTER)
    out = s.on_response(second.seq, answer(second, 401, challenge("n1")), T0 + 0.1)
    assert sends(out) == [] and states(out) == [(UplinkState.OFFLINE, "register_auth_failed")]
    assert s.next_timer() == pytest.approx(T0 + 0.1 + 60.0)
    assert s.handle_timer(T0 + 30) == []
    assert one(s.handle_timer(T0 + 60.1), RequestKind.REGISTER).request.headers.get("Authorization")


def test_timeouts_and_errors_go_offline_and_retry_after_60_s() -> None:
    s = UplinkSession(config())
    first = one(s.start(T0), RequestKind.REGISTER)
    assert states(s.on_response(first.seq, None, T0 + 32)) == [(UplinkState.OFFLINE, "register_timeout")]
    again = one(s.handle_timer(T0 + 92), RequestKind.REGISTER)
    assert states(s.on_response(again.seq, answer(again, 503), T0 + 93)) == []  # already offline: no new event
    assert s.state is UplinkState.OFFLINE and s.last_cause == "register_503"


def test_refresh_before_expiry_keeps_call_id_and_does_not_flap() -> None:
    s = UplinkSession(config(expires=120))
    first = one(s.start(T0), RequestKind.REGISTER)
    ok = s.on_response(first.seq, answer(first, 200, [("Expires", "120")]), T0)
    assert states(ok) == [(UplinkState.ONLINE, "registered")]
    assert s.next_timer() == T0 + 60  # keepalive and refresh (max(60, 120 - 60)) both due
    out = s.handle_timer(T0 + 60)
    kinds = sorted(a.kind for a in sends(out))
    assert kinds == [RequestKind.KEEPALIVE, RequestKind.REGISTER]
    refresh = next(a for a in sends(out) if a.kind is RequestKind.REGISTER)
    assert refresh.request.call_id == first.request.call_id and refresh.request.cseq[0] == 2
    assert states(s.on_response(refresh.seq, answer(refresh, 200), T0 + 60.1)) == []
    assert s.state is UplinkState.ONLINE


def test_keepalive_every_interval_three_failures_offline_then_back_off() -> None:
    s = UplinkSession(config())
    online(s)
    t = T0 + 0.1
    for i in range(3):
        t += 60
        ka = one(s.handle_timer(t), RequestKind.KEEPALIVE)
        msg = manscdp.parse(ka.request.body)
        assert (msg.cmd_type, msg.device_id, ka.request.method) == ("Keepalive", US, "MESSAGE")
        assert ka.request.content_type == "application/manscdp+xml"
        out = s.on_response(ka.seq, None if i != 1 else answer(ka, 500), t + 5)
        if i < 2:
            assert states(out) == [] and s.keepalive_misses == i + 1
    assert states(out) == [(UplinkState.OFFLINE, "keepalive_timeout")]
    assert s.next_timer() == pytest.approx(t + 5 + 60)
    assert one(s.handle_timer(t + 65), RequestKind.REGISTER)


def test_a_good_keepalive_resets_the_failure_count() -> None:
    s = UplinkSession(config())
    online(s)
    t = T0 + 0.1
    for status in (None, None, 200, None, None):
        t += 60
        ka = one(s.handle_timer(t), RequestKind.KEEPALIVE)
        s.on_response(ka.seq, None if status is None else answer(ka, status), t + 1)
    assert s.state is UplinkState.ONLINE and s.keepalive_misses == 2


def test_a_keepalive_still_unanswered_at_the_next_tick_counts_as_a_failure() -> None:
    s = UplinkSession(config())
    online(s)
    first = one(s.handle_timer(T0 + 60.1), RequestKind.KEEPALIVE)
    one(s.handle_timer(T0 + 120.1), RequestKind.KEEPALIVE)
    assert s.keepalive_misses == 1
    assert s.on_response(first.seq, None, T0 + 121) == []  # its late timeout is not counted twice
    assert s.keepalive_misses == 1


@pytest.mark.parametrize("status", [403, 404])
def test_403_404_to_a_keepalive_re_registers_at_once(status: int) -> None:
    s = UplinkSession(config())
    online(s)
    ka = one(s.handle_timer(T0 + 60.1), RequestKind.KEEPALIVE)
    out = s.on_response(ka.seq, answer(ka, status), T0 + 60.2)
    assert states(out) == [(UplinkState.OFFLINE, f"keepalive_{status}")]
    assert one(out, RequestKind.REGISTER) and s.state is UplinkState.REGISTERING


def test_stop_unregisters_with_expires_0_when_online() -> None:
    s = UplinkSession(config())
    online(s)
    out = s.stop(T0 + 5)
    unreg = one(out, RequestKind.UNREGISTER)
    assert unreg.request.headers.get("Expires") == "0" and unreg.request.headers.get("Authorization")
    assert states(out) == [(UplinkState.OFFLINE, "stopped")]  # node down: the link is not up
    assert s.next_timer() is None and s.state is UplinkState.IDLE


def test_a_late_answer_to_a_superseded_request_is_ignored() -> None:
    s = UplinkSession(config())
    first = one(s.start(T0), RequestKind.REGISTER)
    s.on_response(first.seq, None, T0 + 32)
    assert s.on_response(first.seq, answer(first, 200), T0 + 33) == []
    assert s.state is UplinkState.OFFLINE


def test_granted_expiry_from_contact_wins() -> None:
    s = UplinkSession(config())
    first = one(s.start(T0), RequestKind.REGISTER)
    req: Request = first.request
    s.on_response(first.seq, answer(first, 200, [("Contact", f"{req.headers.get('Contact')};expires=600")]), T0)
    assert s.expires == 600 and s.next_timer() == T0 + 60  # keepalive first; refresh at T0 + 540
