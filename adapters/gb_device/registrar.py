"""REGISTER admission, sans-IO: `(request, peer, now) → Challenge | Refuse | Accept`.

A table of ordered checks (`CHECKS`), each named by its `Check` and deciding nothing or a
verdict; the first verdict wins:

    FLOOD → ID → EXPIRES → DIGEST → LOCKOUT → NONCE → WHITELIST → CREDENTIALS → REPLAY → CLONE → PRESENCE

No sockets, no tasks, no clock of its own: the in-memory guards (flood buckets, lockout counters,
nonce issuer, replay guard, presence registry) are sans-IO cores it updates, and the caller does
what the verdict says (answer, count, alarm, persist). Security rules of issue 10 live here:

- one answer, 403 Forbidden, to every REGISTER that has not proven its credential (unknown ID,
  wrong password, wrong source, a lock) after the same digest work, so neither status, reason
  phrase nor timing tells them apart (#9); the verdict's `reason` keeps the real cause;
- a nonce is bound to the exact transport/address/port the challenge went to, and a (nonce, nc)
  pair is accepted once (#6);
- a source lock does not apply to an ID registered from that very address (NAT neighbours, #8);
- an approved ID with valid credentials from a second place while the first is online is a
  suspected clone: refused and alarmed; only an authenticated REGISTER moves the binding (#5).

Errors: a malformed header raises `SipParseError` (the router answers 400 with its reason).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from gateway.gb.ids import is_valid_id
from gateway.gb.presence import DeviceRecord, Presence, Transition
from gateway.sip import digest
from gateway.sip.errors import SipParseError
from gateway.sip.events import Peer
from gateway.sip.message import Request
from whitelist.decide import Decision, Policy, Reason, RequestKind
from whitelist.decide import Request as WlRequest
from whitelist.lockout import FloodGuard, Lockout
from whitelist.model import Credential, Entry


class Check(StrEnum):
    """The admission steps, in order; a verdict names the one that decided."""

    FLOOD = "flood"
    ID = "id"
    EXPIRES = "expires"
    DIGEST = "digest"
    LOCKOUT = "lockout"
    NONCE = "nonce"
    WHITELIST = "whitelist"
    CREDENTIALS = "credentials"
    REPLAY = "replay"
    CLONE = "clone"
    PRESENCE = "presence"


@dataclass(frozen=True, slots=True)
class Alarm:
    """A security alarm to raise for the device (de-duplicated by the caller)."""

    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Challenge:
    """Answer 401 with this WWW-Authenticate (statelessly: RFC 3261 §8.2.7)."""

    check: Check
    www_authenticate: str
    counts: tuple[str, ...] = ()
    alarm: Alarm | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer `status` (None: no answer at all); count `refused:<reason>` and `counts`."""

    check: Check
    reason: str
    status: int | None = 403
    phrase: str | None = "Forbidden"
    counts: tuple[str, ...] = ()
    alarm: Alarm | None = None
    pending: bool = False  # an unknown ID proved nothing: record it as a pending whitelist entry


@dataclass(frozen=True, slots=True)
class Accept:
    """Admitted. `expires == 0`: an unregistration (the caller drops the binding); otherwise the
    presence registry already holds `record`, and `transition`/`new_login` say what changed."""

    check: Check
    device_id: str
    expires: int
    contact: str
    entry: Entry | None
    record: DeviceRecord | None = None
    transition: Transition | None = None
    new_login: bool = False
    counts: tuple[str, ...] = ("auth:ok",)


Verdict = Challenge | Refuse | Accept


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrarSettings:
    realm: str
    register_expires_max: int = 3600
    register_expires_min: int = 60
    digest_algorithm: str = "MD5"


@dataclass(slots=True)
class _Attempt:
    """What the checks learn about one REGISTER as they go."""

    request: Request
    peer: Peer
    now: float
    cert_fingerprint: str | None
    device_id: str = ""
    expires: int = 0
    creds: digest.Credentials | None = None
    decision: Decision | None = field(default=None)


def nonce_source(peer: Peer) -> str:
    """What a nonce is bound to: the exact address and port the challenge went to."""
    return f"{peer.transport}:{peer.host}:{peer.port}"


def register_expires(request: Request) -> int | None:
    """The requested lifetime: the Expires header, else the Contact's expires param (§10.2.1.1)."""
    value = request.headers.get("Expires")
    if value is None:
        contact = request.headers.get("Contact") or ""
        idx = contact.lower().find("expires=")
        if idx < 0:
            return None
        value = contact[idx + 8 :].split(";")[0].split(",")[0]
    try:
        n = int(value.strip())
    except ValueError:
        raise SipParseError("Bad Expires") from None
    if n < 0:
        raise SipParseError("Bad Expires")
    return n


class Registrar:
    """Decides one REGISTER at a time; every guard it consults is given, none is created here."""

    def __init__(
        self,
        *,
        settings: RegistrarSettings,
        policy: Policy,
        lockout: Lockout,
        flood: FloodGuard,
        presence: Presence,
        nonces: digest.NonceIssuer,
        replays: digest.ReplayGuard,
        default_credential: Callable[[str], Credential] | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.lockout = lockout
        self.flood = flood
        self.presence = presence
        self.nonces = nonces
        self.replays = replays
        # sip.default_password: a shared credential for admitted entries that have none (off by default)
        self.default_credential = default_credential

    def admit(self, request: Request, peer: Peer, now: float, *, cert_fingerprint: str | None = None) -> Verdict:
        """Run the checks in order; the first verdict is the answer. `cert_fingerprint`: the TLS
        client certificate's pin of the connection `peer` came on (None for UDP/TCP)."""
        attempt = _Attempt(request, peer, now, cert_fingerprint)
        for _check, step in CHECKS:
            verdict = step(self, attempt)
            if verdict is not None:
                return verdict
        raise AssertionError("the PRESENCE check always decides")

    def challenge(self, check: Check, peer: Peer, now: float, *, stale: bool = False,
                  counts: tuple[str, ...] = (), alarm: Alarm | None = None) -> Challenge:
        alg = digest.Algorithm(self.settings.digest_algorithm)
        nonce = self.nonces.issue(now, nonce_source(peer))
        value = digest.challenge(self.settings.realm, nonce, alg, qop=True, stale=stale)
        return Challenge(check, value, counts, alarm)

    # ------------------------------------------------------------------ the checks
    def _flood(self, a: _Attempt) -> Verdict | None:
        if not self.flood.allow(a.peer.host, a.now):
            return Refuse(Check.FLOOD, "flood", status=None, phrase=None)  # ignored source: no answer
        return None

    def _id(self, a: _Attempt) -> Verdict | None:
        a.device_id = a.request.from_.uri.user or ""
        if not is_valid_id(a.device_id):
            return Refuse(Check.ID, "invalid_id")
        return None

    def _expires(self, a: _Attempt) -> Verdict | None:
        expires = register_expires(a.request)
        if expires is None:
            return Refuse(Check.EXPIRES, "bad_request:Missing Expires", status=400, phrase="Missing Expires")
        a.expires = expires
        return None

    def _digest(self, a: _Attempt) -> Verdict | None:
        auth = a.request.headers.get("Authorization")
        if auth is None:
            # Unknown, locked and known IDs all look the same until credentials are presented.
            return self.challenge(Check.DIGEST, a.peer, a.now)
        a.creds = digest.parse_credentials(auth)
        return None

    def _lockout(self, a: _Attempt) -> Verdict | None:
        bound = self.presence.get(a.device_id)
        binding_matches = bound is not None and (bound.host, bound.transport) == (a.peer.host, a.peer.transport)
        locked = self.lockout.is_locked(a.device_id, a.peer.host, a.now, binding_matches=binding_matches)
        if locked is not None:
            return self._deny(Check.LOCKOUT, a, str(locked))
        return None

    def _nonce(self, a: _Attempt) -> Verdict | None:
        assert a.creds is not None
        state = self.nonces.check(a.creds.nonce, a.now, nonce_source(a.peer))
        if state is not digest.NonceState.VALID:
            return self.challenge(Check.NONCE, a.peer, a.now, stale=state is digest.NonceState.STALE,
                                  counts=(f"auth:nonce_{state.value.lower()}",))
        return None

    def _whitelist(self, a: _Attempt) -> Verdict | None:
        decision = self.policy.decide(
            WlRequest(device_id=a.device_id, source_ip=a.peer.host, transport=a.peer.transport,
                      kind=RequestKind.REGISTER, cert_fingerprint=a.cert_fingerprint),
            datetime.fromtimestamp(a.now, UTC),
        )
        if not decision.allowed:
            return self._deny(Check.WHITELIST, a, decision.reason.value,
                              pending=decision.reason is Reason.UNKNOWN_DEVICE)
        a.decision = decision
        return None

    def _credentials(self, a: _Attempt) -> Verdict | None:
        assert a.creds is not None and a.decision is not None
        if self._verify(a.creds, a.decision):
            return None
        alarm = None
        if self.lockout.record_failure(a.device_id, a.peer.host, a.now) is not None:
            alarm = Alarm("alarm_lockout", "too many failed authentications")
        # the digest work is done: no second round for the uniform answer
        return Refuse(Check.CREDENTIALS, "bad_credentials", counts=("auth:failed",), alarm=alarm)

    def _replay(self, a: _Attempt) -> Verdict | None:
        creds = a.creds
        assert creds is not None
        replay = self.replays.accept(creds.nonce, creds.nc, self.nonces.issued_at(creds.nonce), a.now)
        if replay is digest.NonceState.VALID:
            self.lockout.record_success(a.device_id, a.peer.host, a.now)
            return None
        # a (nonce, nc) pair seen before: a captured Authorization played back (issue 10 #6)
        replayed = replay is digest.NonceState.INVALID
        return self.challenge(
            Check.REPLAY, a.peer, a.now, stale=replay is digest.NonceState.STALE,
            counts=("auth:replay" if replayed else "auth:nonce_forgotten",),
            alarm=Alarm("alarm_digest_replay", "digest (nonce, nc) replayed") if replayed else None,
        )

    def _clone(self, a: _Attempt) -> Verdict | None:
        current = self.presence.get(a.device_id)
        if current is not None and current.online and (current.host, current.transport) != (
            a.peer.host, a.peer.transport
        ):
            # The same approved ID, with valid credentials, from a second place while the first is
            # alive: a cloned or swapped camera. Refuse it and raise an alarm; a device that really
            # moved is admitted once its old registration goes offline (keepalive × count).
            return Refuse(Check.CLONE, "clone_suspected", counts=("auth:ok",), alarm=Alarm(
                "alarm_clone_suspected", f"registered from {current.host}/{current.transport}"))
        return None

    def _presence(self, a: _Attempt) -> Verdict:
        assert a.decision is not None
        contact = a.request.headers.get("Contact") or ""
        entry = a.decision.entry
        if a.expires == 0:
            return Accept(Check.PRESENCE, a.device_id, 0, contact, entry)
        s = self.settings
        expires = max(s.register_expires_min, min(a.expires, s.register_expires_max))
        record, transition, new_login = self.presence.register(
            a.device_id, transport=a.peer.transport, host=a.peer.host, port=a.peer.port, conn_id=a.peer.conn_id,
            call_id=a.request.call_id, contact=contact, expires=expires, now=a.now,
            user_agent=a.request.headers.get("User-Agent") or "",
        )
        return Accept(Check.PRESENCE, a.device_id, expires, contact, entry, record, transition, new_login)

    # ------------------------------------------------------------------ helpers
    def _deny(self, check: Check, a: _Attempt, reason: str, *, pending: bool = False) -> Refuse:
        """The uniform refusal of an unproven REGISTER (issue 10 #9), after the same digest work."""
        assert a.creds is not None
        digest.verify(a.creds, "REGISTER", "0" * 32)
        return Refuse(check, reason, pending=pending)

    def verify(self, creds: digest.Credentials, decision: Decision) -> bool:
        """The CREDENTIALS check without its effects: `creds` prove the credential `decision`
        admits (a SIP worker's refresh fast path asks before it changes anything)."""
        return self._verify(creds, decision)

    def _verify(self, creds: digest.Credentials, decision: Decision) -> bool:
        cred = decision.credential
        if cred is None and self.default_credential is not None and decision.entry is not None:
            cred = self.default_credential(decision.entry.device_id)
        if cred is None or creds.username != cred.username or creds.realm != self.settings.realm:
            # still compute a digest so timing does not tell a missing credential apart
            digest.verify(creds, "REGISTER", "0" * 32)
            return False
        alg = (creds.algorithm or "MD5").upper()
        ha1 = cred.ha1_sha256 if alg in ("SHA-256", "SHA256") else cred.ha1_md5
        return digest.verify(creds, "REGISTER", ha1)


_Step = Callable[[Registrar, _Attempt], Verdict | None]

#: The admission pipeline, in order (the one place to read it).
CHECKS: tuple[tuple[Check, _Step], ...] = (
    (Check.FLOOD, Registrar._flood),
    (Check.ID, Registrar._id),
    (Check.EXPIRES, Registrar._expires),
    (Check.DIGEST, Registrar._digest),
    (Check.LOCKOUT, Registrar._lockout),
    (Check.NONCE, Registrar._nonce),
    (Check.WHITELIST, Registrar._whitelist),
    (Check.CREDENTIALS, Registrar._credentials),
    (Check.REPLAY, Registrar._replay),
    (Check.CLONE, Registrar._clone),
    (Check.PRESENCE, Registrar._presence),
)
