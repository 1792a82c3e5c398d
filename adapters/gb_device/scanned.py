"""A REGISTER with credentials, decided from the header scan (sans-IO): main's device adapter and
each SIP worker answer refreshes and logins without the parser.

`plain_register` runs the registrar's checks for the request from the scan —
ID → EXPIRES → DIGEST → LOCKOUT → NONCE → WHITELIST → CREDENTIALS → REPLAY → CLONE → PRESENCE,
each only far enough to know that `Registrar.admit` would accept it with a lifetime, none
changing anything — and says None otherwise, so every other outcome (a challenge, a refusal,
an alarm, an unregistration) comes from `Registrar.admit` on the parsed request, exactly as
before. The caller then does what `admit` does on that path, in the same order: the flood guard
(the registrar's first check, the first that counts), then `apply_register` — the replay guard's
record, the lockout success, the presence update — then what its own shell does after an Accept:
a plain refresh (RFC 3261 §10.2.4: bound there, online, the binding's Call-ID; the storm's
request) is answered 200 at once; a login's 200 waits (main: for its durable online event; a
worker: for main's ACK of its LOGIN).

The one difference in work: a wrong password is verified here, declined, and verified again by
the full path (a few µs; its 403 is no hurry).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from adapters.gb_device.registrar import Registrar, nonce_source
from gateway.gb.ids import is_valid_id
from gateway.gb.presence import DeviceRecord, Transition
from gateway.sip import digest
from gateway.sip.errors import SipParseError
from gateway.sip.events import Peer
from gateway.sip.fastpath import Scan
from whitelist.decide import Decision, Policy, RequestKind
from whitelist.decide import Request as WlRequest
from whitelist.model import Entry


@dataclass(slots=True)
class Admitted:
    """A REGISTER `Registrar.admit` would accept with a lifetime: what its effects need."""

    creds: digest.Credentials
    issued: float  # the nonce's issue time (the replay guard keys on it)
    expires: int  # as granted (clamped to register_expires_min/max)
    contact: str
    user_agent: str
    entry: Entry | None  # the whitelist entry the decision admitted (as Accept.entry)


def whitelist_decision(policy: Policy, device_id: str, peer: Peer, kind: RequestKind, now: float) -> Decision:
    """The whitelist's verdict on `device_id` sending `kind` from `peer` at `now` (epoch seconds),
    as a worker's fast paths ask it."""
    return policy.decide(WlRequest(device_id=device_id, source_ip=peer.host, transport=peer.transport, kind=kind),
                         datetime.fromtimestamp(now, UTC))


def plain_register(reg: Registrar, s: Scan, peer: Peer, now: float) -> Admitted | None:
    """The REGISTER in `s` if `reg.admit` would accept it from `peer` with a lifetime (a plain
    refresh, a new login, or a binding that moves: to another port of its host, or anywhere while
    offline), else None — an unregistration, a challenge, any refusal or alarm is the full path's.
    Changes nothing (the guards' own expiry aside)."""
    auth, expires_text = s.get("Authorization"), s.get("Expires")
    device_id = s.from_user
    # ID and EXPIRES (Expires: 0 unregisters: the full path)
    if auth is None or expires_text is None or not expires_text.isdigit() or not is_valid_id(device_id):
        return None
    requested = int(expires_text)
    if requested == 0:
        return None
    # CLONE, read first: online from another host or transport is the full path's refusal and alarm
    rec = reg.presence.get(device_id)
    bound_here = rec is not None and rec.host == peer.host and rec.transport == peer.transport
    if rec is not None and rec.online and not bound_here:
        return None
    try:  # DIGEST
        creds = digest.parse_credentials(auth)
    except SipParseError:
        return None  # the full path answers 400
    # LOCKOUT (a source lock does not apply to an ID bound at this address)
    if reg.lockout.is_locked(device_id, peer.host, now, binding_matches=bound_here) is not None:
        return None
    # NONCE
    if reg.nonces.check(creds.nonce, now, nonce_source(peer)) is not digest.NonceState.VALID:
        return None
    # WHITELIST
    decision = whitelist_decision(reg.policy, device_id, peer, RequestKind.REGISTER, now)
    if not decision.allowed:
        return None
    # CREDENTIALS
    if not reg.verify(creds, decision):
        return None
    # REPLAY
    issued = reg.nonces.issued_at(creds.nonce)
    if reg.replays.check(creds.nonce, creds.nc, issued, now) is not digest.NonceState.VALID:
        return None
    st = reg.settings
    return Admitted(creds, issued, max(st.register_expires_min, min(requested, st.register_expires_max)),
                   s.get("Contact") or "", s.get("User-Agent") or "", decision.entry)


def apply_register(reg: Registrar, device_id: str, call_id: str, r: Admitted, peer: Peer,
                   now: float) -> tuple[DeviceRecord, Transition | None, bool]:
    """`Registrar.admit`'s effects for the REGISTER `plain_register` found (after the flood guard
    let it through): the (nonce, nc) pair remembered, the lockout's success, the binding recorded.
    Returns what `Presence.register` returns (binding, transition if it came online, new login)."""
    reg.replays.accept(r.creds.nonce, r.creds.nc, r.issued, now)  # VALID: plain_register checked
    reg.lockout.record_success(device_id, peer.host, now)
    return reg.presence.register(
        device_id, transport=peer.transport, host=peer.host, port=peer.port, conn_id=peer.conn_id, call_id=call_id,
        contact=r.contact, expires=r.expires, now=now, user_agent=r.user_agent)

