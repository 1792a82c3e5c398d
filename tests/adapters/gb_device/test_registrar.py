"""The REGISTER admission table in memory: no sockets, no tasks, a fake clock (`now` passed in)."""

from __future__ import annotations

import pytest

from adapters.gb_device.registrar import (
    CHECKS,
    Accept,
    Challenge,
    Check,
    Refuse,
    Registrar,
    RegistrarSettings,
)
from gateway.gb.presence import Presence
from gateway.sip import digest
from gateway.sip.events import Peer
from gateway.sip.message import Request, parse_message
from whitelist.decide import Policy
from whitelist.lockout import FloodGuard, Lockout
from whitelist.model import Credential, Entry, EntryStatus

REALM = "3402000000"
DEV = "34020000001320000001"
PW = "secret123"
HERE = Peer("udp", "192.0.2.10", 5060)
T0 = 1_700_000_000.0


def make(*, entries: list[Entry] | None = None, flood: float = 1e9, max_failures: int = 3) -> Registrar:
    if entries is None:
        entries = [Entry(device_id=DEV, status=EntryStatus.APPROVED,
                         credential=Credential.from_password(DEV, REALM, PW))]
    nonces = digest.NonceIssuer(b"k" * 32, ttl=300)
    return Registrar(
        settings=RegistrarSettings(realm=REALM), policy=Policy(entries),
        lockout=Lockout(max_failures=max_failures, window=60, lock_for=300), flood=FloodGuard(max_per_second=flood),
        presence=Presence(keepalive_interval=60, keepalive_count=3), nonces=nonces,
        replays=digest.ReplayGuard(ttl=300),
    )


def register(device_id: str = DEV, *, expires: str | None = "3600", auth: str | None = None,
             call_id: str = "c1") -> Request:
    lines = [f"REGISTER sip:{REALM} SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1",
             f"From: <sip:{device_id}@{REALM}>;tag=a", f"To: <sip:{device_id}@{REALM}>", f"Call-ID: {call_id}",
             "CSeq: 1 REGISTER", f"Contact: <sip:{device_id}@192.0.2.10:5060>"]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    msg = parse_message(("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def answer(challenge: Challenge, *, password: str = PW, device_id: str = DEV, nc: int = 1) -> str:
    return digest.authorization(challenge.www_authenticate, method="REGISTER", uri=f"sip:{REALM}",
                                username=device_id, password=password, nc=nc)


def login(reg: Registrar, *, peer: Peer = HERE, now: float = T0, password: str = PW, expires: str = "3600",
          device_id: str = DEV) -> Challenge | Refuse | Accept:
    first = reg.admit(register(device_id, expires=expires), peer, now)
    assert isinstance(first, Challenge) and first.check is Check.DIGEST
    return reg.admit(register(device_id, expires=expires, auth=answer(first, password=password,
                                                                       device_id=device_id)), peer, now + 0.01)


def test_the_table_is_the_documented_order() -> None:
    assert [c for c, _ in CHECKS] == [Check.FLOOD, Check.ID, Check.EXPIRES, Check.DIGEST, Check.LOCKOUT, Check.NONCE,
                                      Check.WHITELIST, Check.CREDENTIALS, Check.REPLAY, Check.CLONE, Check.PRESENCE]


def test_challenge_then_accept_registers_presence() -> None:
    reg = make()
    v = login(reg)
    assert isinstance(v, Accept) and v.check is Check.PRESENCE and v.expires == 3600 and v.new_login
    assert v.counts == ("auth:ok",) and v.transition is not None
    rec = reg.presence.get(DEV)
    assert rec is not None and rec.online and (rec.host, rec.port) == (HERE.host, HERE.port)


def test_expires_clamped_and_zero_is_an_unregistration() -> None:
    reg = make()
    v = login(reg, expires="999999")
    assert isinstance(v, Accept) and v.expires == 3600
    v0 = login(reg, expires="0", now=T0 + 1)
    assert isinstance(v0, Accept) and v0.expires == 0 and v0.record is None


@pytest.mark.parametrize(("request_kw", "check", "status", "reason"), [
    ({"device_id": "not-an-id"}, Check.ID, 403, "invalid_id"),
    ({"expires": None}, Check.EXPIRES, 400, "bad_request:Missing Expires"),
])
def test_refusals_before_any_digest(request_kw: dict[str, object], check: Check, status: int, reason: str) -> None:
    v = make().admit(register(**request_kw), HERE, T0)  # type: ignore[arg-type]
    assert isinstance(v, Refuse) and (v.check, v.status, v.reason) == (check, status, reason)


def test_flood_is_ignored_without_an_answer() -> None:
    reg = make(flood=1)
    assert isinstance(reg.admit(register(), HERE, T0), Challenge)
    v = reg.admit(register(), HERE, T0)
    assert isinstance(v, Refuse) and v.check is Check.FLOOD and v.status is None and v.reason == "flood"


def test_unknown_wrong_password_and_lock_look_the_same() -> None:
    """Issue 10 #9: one answer (403 Forbidden) whatever the reason; the reason is kept."""
    reg = make(max_failures=2)
    unknown = login(reg, device_id="34020000001320000999")
    wrong = [login(reg, password="bad", now=T0 + i) for i in range(2)]
    locked = login(reg, now=T0 + 5)
    for v in (unknown, *wrong, locked):
        assert isinstance(v, Refuse) and (v.status, v.phrase) == (403, "Forbidden")
    assert isinstance(unknown, Refuse) and unknown.reason == "UNKNOWN_DEVICE" and unknown.pending
    assert [w.reason for w in wrong if isinstance(w, Refuse)] == ["bad_credentials"] * 2
    assert isinstance(wrong[1], Refuse) and wrong[1].alarm is not None and wrong[1].alarm.kind == "alarm_lockout"
    assert isinstance(locked, Refuse) and (locked.check, locked.reason) == (Check.LOCKOUT, "LOCKED_ID")


def test_lock_expires_on_the_fake_clock() -> None:
    reg = make(max_failures=1)
    assert isinstance(login(reg, password="bad"), Refuse)
    assert isinstance(login(reg, now=T0 + 10), Refuse)
    assert isinstance(login(reg, now=T0 + 400), Accept)  # lock_for=300 s has passed


def test_nonce_is_bound_to_the_address_it_was_sent_to() -> None:
    reg = make()
    first = reg.admit(register(), HERE, T0)
    assert isinstance(first, Challenge)
    elsewhere = Peer("udp", HERE.host, HERE.port + 1)
    v = reg.admit(register(auth=answer(first)), elsewhere, T0 + 0.01)
    assert isinstance(v, Challenge) and v.check is Check.NONCE and v.counts == ("auth:nonce_invalid",)


def test_stale_nonce_is_rechallenged_stale() -> None:
    reg = make()
    first = reg.admit(register(), HERE, T0)
    assert isinstance(first, Challenge)
    v = reg.admit(register(auth=answer(first)), HERE, T0 + 301)
    assert isinstance(v, Challenge) and v.check is Check.NONCE and "stale=true" in v.www_authenticate.lower()


def test_a_replayed_authorization_is_challenged_and_alarmed() -> None:
    reg = make()
    first = reg.admit(register(), HERE, T0)
    assert isinstance(first, Challenge)
    auth = answer(first)
    assert isinstance(reg.admit(register(auth=auth), HERE, T0 + 0.01), Accept)
    v = reg.admit(register(auth=auth), HERE, T0 + 0.02)
    assert isinstance(v, Challenge) and v.check is Check.REPLAY and v.counts == ("auth:replay",)
    assert v.alarm is not None and v.alarm.kind == "alarm_digest_replay"


def test_second_place_while_online_is_a_suspected_clone() -> None:
    reg = make()
    assert isinstance(login(reg), Accept)
    v = login(reg, peer=Peer("udp", "198.51.100.7", 5060), now=T0 + 1)
    assert isinstance(v, Refuse) and (v.check, v.reason, v.status) == (Check.CLONE, "clone_suspected", 403)
    assert v.alarm is not None and v.alarm.kind == "alarm_clone_suspected"
    rec = reg.presence.get(DEV)
    assert rec is not None and rec.host == HERE.host  # the binding did not move


def test_a_nat_neighbour_lock_does_not_lock_out_a_device_registered_from_there() -> None:
    """Issue 10 #8: a source lock does not apply to an ID already bound to that very address."""
    others = [f"3402000000132000{i:04d}" for i in range(2, 6)]
    entries = [Entry(device_id=d, status=EntryStatus.APPROVED, credential=Credential.from_password(d, REALM, PW))
               for d in (DEV, *others)]
    reg = make(entries=entries)
    assert isinstance(login(reg), Accept)
    for i, other in enumerate(others):
        for j in range(3):
            login(reg, device_id=other, password="bad", now=T0 + 1 + i * 3 + j)
    assert isinstance(login(reg, now=T0 + 30, device_id=others[0]), Refuse)
    assert isinstance(login(reg, now=T0 + 31), Accept)


def test_bad_expires_raises_the_parse_error() -> None:
    from gateway.sip.errors import SipParseError

    with pytest.raises(SipParseError):
        make().admit(register(expires="soon"), HERE, T0)
