"""Our registration with one upper platform, sans-IO (gb28181.md §7.2, §3.3 client side).

    (now, responses, timer) in → actions out: send this REGISTER / keepalive MESSAGE, state changed

    IDLE ─start─► REGISTERING ─200─► ONLINE ─refresh─► REGISTERING …
                    │  401/407: once more with Authorization (same Call-ID and From tag, CSeq+1)
                    └─ error, timeout, a challenge refused twice ─► OFFLINE ─back-off (60 s)─► REGISTERING
    ONLINE: a keepalive every `keepalive_interval`; 3 failures in a row (timeout or error) → OFFLINE
            and re-register after the back-off; 403/404 to a keepalive (the upper forgot us) → re-register now.

No sockets, no clock, no tasks: the shell (`uplink.py`) sends what `SendRequest` says, reports
each outcome back with the `seq` it was given (a late answer to a superseded request is ignored),
and calls `handle_timer(now)` at `next_timer()`. Requests carry no Via: the endpoint adds one.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass

from gateway.gb import builders
from gateway.sip import digest
from gateway.sip.errors import SipParseError
from gateway.sip.message import Headers, Request, Response, new_call_id, new_tag

_INF = float("inf")


class UplinkState(enum.StrEnum):
    IDLE = "idle"
    REGISTERING = "registering"
    ONLINE = "online"
    OFFLINE = "offline"


class RequestKind(enum.StrEnum):
    REGISTER = "register"
    KEEPALIVE = "keepalive"
    UNREGISTER = "unregister"


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    """One `[[cascade]]` entry as the core needs it (our side from `sip.*`)."""

    upper_id: str
    upper_domain: str
    upper_host: str
    upper_port: int
    transport: str
    our_id: str
    our_domain: str
    contact: str  # our Contact header value, "<sip:id@host:port>"
    user_agent: str
    password: str | None = None
    username: str | None = None  # digest username; default our ID (WVP)
    expires: int = 3600
    keepalive_interval: float = 60.0
    keepalive_failures: int = 3
    retry_interval: float = 60.0
    charset: str = "GB2312"

    @property
    def request_uri(self) -> str:
        return f"sip:{self.upper_id}@{self.upper_host}:{self.upper_port}"


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send `request` to the upper in a client transaction; report the outcome with `seq`."""

    kind: RequestKind
    seq: int
    request: Request


@dataclass(frozen=True, slots=True)
class StateChanged:
    """Online/offline towards the upper changed (for the health ledger and /healthz)."""

    state: UplinkState
    cause: str


Action = SendRequest | StateChanged


class UplinkSession:
    """The registration and keepalive state machine towards one upper platform."""

    def __init__(self, config: UplinkConfig) -> None:
        self.config = config
        self.state = UplinkState.IDLE
        self.call_id = new_call_id(config.our_domain)  # one registration dialog for our whole life
        self.from_tag = new_tag()
        self._cseq = 0
        self._seq = itertools.count(1)
        self._register_seq = 0  # the REGISTER whose answer we wait for (0: none)
        self._keepalive_seq = 0
        self._challenge: tuple[str, str] | None = None  # (header name, challenge) to answer on refresh
        self._nc = 0
        self._auth_tries = 0  # challenges answered in this attempt
        self._register_at = _INF  # refresh or retry
        self._keepalive_at = _INF
        self._keepalive_sn = 0
        self.keepalive_misses = 0
        self.expires = 0
        self.last_cause = ""
        self._reported: UplinkState | None = None  # the last state told to the ledger

    # ------------------------------------------------------------------ inputs
    def start(self, now: float) -> list[Action]:
        return self._register(now, [])

    def stop(self, now: float) -> list[Action]:
        """Unregister (Expires: 0) when online; no more timers either way. The ledger hears
        "offline, stopped", so a node's downtime does not count as the link being up."""
        out: list[Action] = []
        was_online = self.state is UplinkState.ONLINE
        self._register_at = self._keepalive_at = _INF
        self._register_seq = self._keepalive_seq = 0
        if was_online:
            out.append(SendRequest(RequestKind.UNREGISTER, next(self._seq), self._register_request(0)))
        if self._reported is UplinkState.ONLINE:
            self._reported = UplinkState.OFFLINE
            out.append(StateChanged(UplinkState.OFFLINE, "stopped"))
        self._set(UplinkState.IDLE, "stopped", out)
        return out

    def next_timer(self) -> float | None:
        at = min(self._register_at, self._keepalive_at)
        return None if at == _INF else at

    def handle_timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        if now >= self._register_at:
            self._register_at = _INF
            self._register(now, out)
        if now >= self._keepalive_at:
            self._keepalive_at = _INF
            if self.state is UplinkState.ONLINE:
                self._keepalive_at = now + self.config.keepalive_interval
                if self._keepalive_seq:
                    self._keepalive_failed(now, "keepalive_timeout", out)  # the last one never came back
                if self.state is UplinkState.ONLINE:
                    self._send_keepalive(out)
        return out

    def on_response(self, seq: int, response: Response | None, now: float) -> list[Action]:
        """The final response to request `seq`, or None for a timeout / transport failure."""
        out: list[Action] = []
        if seq and seq == self._register_seq:
            self._register_seq = 0
            self._register_answer(response, now, out)
        elif seq and seq == self._keepalive_seq:
            self._keepalive_seq = 0
            self._keepalive_answer(response, now, out)
        return out

    # ------------------------------------------------------------------ REGISTER
    def _register(self, now: float, out: list[Action], *, fresh: bool = True) -> list[Action]:
        if fresh:
            self._auth_tries = 0
        if self.state is not UplinkState.ONLINE:
            self._set(UplinkState.REGISTERING, "registering", out, quiet=True)
        seq = next(self._seq)
        self._register_seq = seq
        out.append(SendRequest(RequestKind.REGISTER, seq, self._register_request(self.config.expires)))
        return out

    def _register_request(self, expires: int) -> Request:
        c = self.config
        self._cseq += 1
        aor = f"<sip:{c.our_id}@{c.our_domain}>"
        h = Headers()
        h.add("From", f"{aor};tag={self.from_tag}")
        h.add("To", aor)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self._cseq} REGISTER")
        h.add("Contact", c.contact)
        h.add("Max-Forwards", "70")
        h.add("Expires", str(expires))
        h.add("User-Agent", c.user_agent)
        if self._challenge is not None and c.password is not None:
            name, value = self._challenge
            self._nc += 1
            h.add(name, digest.authorization(value, method="REGISTER", uri=c.request_uri,
                                             username=c.username or c.our_id, password=c.password, nc=self._nc))
        h.add("Content-Length", "0")
        return Request(method="REGISTER", uri=c.request_uri, headers=h, body=b"")

    def _register_answer(self, response: Response | None, now: float, out: list[Action]) -> None:
        if response is None:
            self._failed(now, "register_timeout", out)
            return
        status = response.status
        if status in (401, 407):
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            value = response.headers.get(header)
            if value is None or self.config.password is None or self._auth_tries >= 2:
                self._failed(now, "register_auth_failed", out)
                return
            if self._challenge is not None and not _stale(value) and _nonce(value) == _nonce(self._challenge[1]) \
                    and self._auth_tries:
                self._failed(now, "register_auth_failed", out)  # the same nonce again: wrong password
                return
            self._auth_tries += 1
            self._challenge = ("Authorization" if status == 401 else "Proxy-Authorization", value)
            self._nc = 0
            try:
                self._register(now, out, fresh=False)
            except SipParseError:
                self._challenge = None
                self._failed(now, "register_bad_challenge", out)
            return
        if 200 <= status < 300:
            self.expires = _granted(response, self.config.expires)
            if self.expires <= 0:
                self._failed(now, "register_refused_expires", out)
                return
            self._register_at = now + max(self.expires / 2, self.expires - 60.0)
            if self.state is not UplinkState.ONLINE:
                self.keepalive_misses = 0
                self._keepalive_at = now + self.config.keepalive_interval
                self._set(UplinkState.ONLINE, "registered", out)
            return
        if 100 <= status < 200:
            return
        self._failed(now, f"register_{status}", out)

    def _failed(self, now: float, cause: str, out: list[Action]) -> None:
        """Offline; try again after the back-off."""
        self._keepalive_at = _INF
        self._keepalive_seq = 0
        self._register_seq = 0
        self._register_at = now + self.config.retry_interval
        self._set(UplinkState.OFFLINE, cause, out)

    # ------------------------------------------------------------------ keepalive
    def _send_keepalive(self, out: list[Action]) -> None:
        c = self.config
        self._keepalive_sn = self._keepalive_sn % 1_000_000 + 1
        body = builders.build_keepalive(c.our_id, self._keepalive_sn, charset=c.charset)
        seq = next(self._seq)
        self._keepalive_seq = seq
        out.append(SendRequest(RequestKind.KEEPALIVE, seq, manscdp_request(c, body)))

    def _keepalive_answer(self, response: Response | None, now: float, out: list[Action]) -> None:
        if self.state is not UplinkState.ONLINE:
            return
        if response is not None and 200 <= response.status < 300:
            self.keepalive_misses = 0
            return
        if response is not None and response.status in (403, 404):
            # the upper does not know us (it restarted, or dropped our registration): register now
            self._keepalive_at = _INF
            self._set(UplinkState.OFFLINE, f"keepalive_{response.status}", out)
            self._register(now, out)
            return
        self._keepalive_failed(now, "keepalive_timeout" if response is None else f"keepalive_{response.status}", out)

    def _keepalive_failed(self, now: float, cause: str, out: list[Action]) -> None:
        self._keepalive_seq = 0
        self.keepalive_misses += 1
        if self.keepalive_misses >= self.config.keepalive_failures:
            self._failed(now, cause, out)

    # ------------------------------------------------------------------ state
    def _set(self, state: UplinkState, cause: str, out: list[Action], *, quiet: bool = False) -> None:
        if state is self.state:
            return
        self.state = state
        self.last_cause = cause
        # the ledger sees online/offline only: OFFLINE → REGISTERING → OFFLINE is one offline spell
        if quiet or state is self._reported or state not in (UplinkState.ONLINE, UplinkState.OFFLINE):
            return
        self._reported = state
        out.append(StateChanged(state, cause))


def manscdp_request(c: UplinkConfig, body: bytes) -> Request:
    """An out-of-dialog MESSAGE from us to the upper (keepalive, Response/Catalog…), no Via yet."""
    h = Headers()
    h.add("From", f"<sip:{c.our_id}@{c.our_domain}>;tag={new_tag()}")
    h.add("To", f"<sip:{c.upper_id}@{c.upper_domain}>")
    h.add("Call-ID", new_call_id(c.our_domain))
    h.add("CSeq", "1 MESSAGE")
    h.add("Max-Forwards", "70")
    h.add("User-Agent", c.user_agent)
    h.add("Content-Type", "Application/MANSCDP+xml")
    h.add("Content-Length", str(len(body)))
    return Request(method="MESSAGE", uri=c.request_uri, headers=h, body=body)


def _granted(response: Response, asked: int) -> int:
    """The expiry the upper granted: Contact ;expires=, else Expires, else what we asked."""
    for contact in response.headers.get_all("Contact"):
        for part in contact.split(";")[1:]:
            name, _, value = part.partition("=")
            if name.strip().lower() == "expires" and value.strip().isdigit():
                return int(value.strip())
    value = (response.headers.get("Expires") or "").strip()
    return int(value) if value.isdigit() else asked


def _params(challenge: str) -> dict[str, str]:
    try:
        return digest.parse_auth_params(challenge)[1]
    except SipParseError:
        return {}


def _nonce(challenge: str) -> str | None:
    return _params(challenge).get("nonce")


def _stale(challenge: str) -> bool:
    return _params(challenge).get("stale", "").lower() == "true"
