"""HTTP Digest for SIP, server and client side (RFC 2617, RFC 7616, RFC 3261 §22.4; gb28181 §3.3).

MD5 always; SHA-256 (RFC 7616 formulas) as an opt-in challenge. Nonces are stateless: the
issue time and a random part are MAC'd with a server secret, together with the source the
challenge went to, so any node holding the secret can check them, a stale nonce is told apart
from a forged one (RFC 2617 §3.2.1 `stale`), and a nonce presented from another address or port
is not ours. Replays are stopped by `ReplayGuard`, a bounded memory of the (nonce, nc) pairs
already accepted. The username, realm and uri are used exactly as the peer sent them (gb28181 §3.3).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from .entropy import token_hex
from .errors import SipParseError


class Algorithm(enum.StrEnum):
    MD5 = "MD5"
    SHA256 = "SHA-256"


class NonceState(enum.Enum):
    VALID = "valid"
    STALE = "stale"
    INVALID = "invalid"


def _hash_fn(algorithm: str) -> type | None:
    a = algorithm.upper()
    if a == "MD5":
        return hashlib.md5  # type: ignore[return-value]
    if a in ("SHA-256", "SHA256"):
        return hashlib.sha256  # type: ignore[return-value]
    return None


def _h(algorithm: str, text: str) -> str:
    fn = _hash_fn(algorithm)
    if fn is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return fn(text.encode("utf-8")).hexdigest()  # type: ignore[no-any-return]


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), hex; what a credential store may keep instead of passwords."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def response_value(
    algorithm: str, ha1_hex: str, nonce: str, method: str, uri: str, qop: str | None = None,
    nc: str | None = None, cnonce: str | None = None,
) -> str:
    """request-digest of RFC 2617 §3.2.2.1 (qop absent or "auth")."""
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1_hex}:{nonce}:{ha2}")


class NonceIssuer:
    """Stateless nonces: hex(time) + random + MAC(time, random, source); STALE once older than `ttl` seconds.

    `source` (e.g. "udp:192.0.2.7:5060") is MAC'd in, not stored: a nonce checked with
    another source is INVALID, so a captured Authorization is worthless from any other port.
    """

    __slots__ = ("_key", "ttl")

    def __init__(self, secret: bytes, ttl: float = 300.0) -> None:
        if not secret:
            raise ValueError("nonce secret must not be empty")
        # BLAKE2b's key is at most 64 bytes: a longer secret is hashed down to one (RFC 7693 §2.9)
        self._key = secret if len(secret) <= 64 else hashlib.blake2b(secret).digest()
        self.ttl = ttl

    def _mac(self, body: str, source: str) -> str:
        """Keyed BLAKE2b, a MAC by design (RFC 7693 §2.9), 96 bits. Not OpenSSL's HMAC: its one-shot
        call releases the GIL, and with the store's threads waiting for it every release became a
        thread switch that cost a registration two of them, ~17 µs of CPU each (CPython's own
        BLAKE2 keeps the GIL for input this short)."""
        msg = f"{body}|{source}".encode("utf-8", "surrogateescape")
        return hashlib.blake2b(msg, key=self._key, digest_size=12).hexdigest()

    def issue(self, now: float, source: str = "") -> str:
        # the random part from the shared pool: one getrandom() per 4 KiB, not one per nonce
        body = f"{int(now * 1000):012x}{token_hex(6)}"
        return body + self._mac(body, source)

    @staticmethod
    def issued_at(nonce: str) -> float:
        """The issue time encoded in a nonce that `check` found VALID."""
        return int(nonce[:12], 16) / 1000.0

    def check(self, nonce: str, now: float, source: str = "") -> NonceState:
        if len(nonce) != 48:
            return NonceState.INVALID
        body, mac = nonce[:24], nonce[24:]
        try:
            if not hmac.compare_digest(self._mac(body, source), mac):
                return NonceState.INVALID
            issued = int(body[:12], 16) / 1000.0
        except (ValueError, UnicodeEncodeError):
            return NonceState.INVALID
        if issued > now + 5.0:  # from the future beyond clock jitter: not ours to trust
            return NonceState.INVALID
        return NonceState.STALE if now - issued > self.ttl else NonceState.VALID


class ReplayGuard:
    """The (nonce, nc) pairs already accepted, so each is accepted once (RFC 7616 §3.3 / §5.12).

    Per nonce it keeps the highest nc accepted (a nonce without qop counts as nc 0 and is good
    once); a pair at or below it is a replay. Entries are dropped `ttl` (+6 s) after first use —
    the nonce is stale by then anyway. Memory is bounded by `max_entries`: when full, the oldest
    entry is evicted and every nonce issued no later than it is refused as stale from then on
    (the device is re-challenged), so eviction can never re-open a replay.
    """

    __slots__ = ("_floor", "_seen", "max_entries", "ttl")

    def __init__(self, ttl: float = 300.0, max_entries: int = 200_000) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl and max_entries must be positive")
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: dict[str, tuple[float, float, int]] = {}  # nonce → (first use, issued, highest nc)
        self._floor = float("-inf")  # nonces issued at or before this are forgotten: refuse them

    def __len__(self) -> int:
        return len(self._seen)

    def forget_before(self, ts: float) -> None:
        """Refuse (as stale) every nonce issued at or before `ts` that is not remembered: at start,
        pairs accepted by the previous process are unknown, so their nonces must not be reused."""
        self._floor = max(self._floor, ts)

    def check(self, nonce: str, nc: str | None, issued: float, now: float) -> NonceState:
        """What `accept` would answer now, without remembering the pair (a fast path checks
        before it changes anything; expiring old entries changes no outcome)."""
        self._expire(now)
        try:
            count = int(nc, 16) if nc else 0
        except ValueError:
            return NonceState.INVALID
        seen = self._seen.get(nonce)
        if seen is None:
            return NonceState.STALE if issued <= self._floor else NonceState.VALID
        return NonceState.INVALID if count <= seen[2] else NonceState.VALID

    def accept(self, nonce: str, nc: str | None, issued: float, now: float) -> NonceState:
        """VALID (and remembered) the first time a pair is seen; INVALID for a replay; STALE when
        the nonce's memory was evicted (ask the device for a fresh nonce)."""
        state = self.check(nonce, nc, issued, now)
        if state is not NonceState.VALID:
            return state
        count = int(nc, 16) if nc else 0
        seen = self._seen.get(nonce)
        if seen is not None:
            self._seen[nonce] = (seen[0], seen[1], count)
            return state
        self._seen[nonce] = (now, issued, count)
        while len(self._seen) > self.max_entries:
            oldest = next(iter(self._seen))
            self._floor = max(self._floor, self._seen.pop(oldest)[1])
        return state

    def _expire(self, now: float) -> None:
        """Entries are in first-use order: pop from the front while expired (the margin covers a
        nonce issued up to 5 s in the future by a node whose clock is ahead)."""
        seen = self._seen
        horizon = now - self.ttl - 6.0
        while seen:
            key = next(iter(seen))
            if seen[key][0] > horizon:
                break
            del seen[key]


@dataclass(slots=True)
class Credentials:
    """A parsed Authorization / Proxy-Authorization value (RFC 3261 §25.1 `credentials`)."""

    scheme: str
    username: str = ""
    realm: str = ""
    nonce: str = ""
    uri: str = ""
    response: str = ""
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    params: dict[str, str] = field(default_factory=dict)


_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9\-_.]*)\s*")
# the quoted-string alternative is an unrolled loop ([^"\\]* runs, then escapes): one char class
# per run instead of an alternation per character (3x faster on nonce/response values)
_PARAM = re.compile(r'\s*([A-Za-z0-9\-_.]+)\s*=\s*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s,"]*))\s*(,|\Z)', re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)


# _PARAM with the whole match captured first: one findall cuts every param, and the pieces
# joined back must be the whole rest of the value (contiguous: nothing skipped in between)
_PARAMS = re.compile(r'(\s*([A-Za-z0-9\-_.]+)\s*=\s*(?:(")([^"\\]*(?:\\.[^"\\]*)*)"|([^\s,"]*))\s*(?:,|\Z))', re.S)


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """(scheme, params) of a challenge or credentials value; names lower-cased, quotes removed."""
    m = _SCHEME.match(value)
    if m is None:
        raise SipParseError("Bad Authorization")
    pos = m.end()
    found = _PARAMS.findall(value, pos)
    if "".join([f[0] for f in found]) != value[pos:]:
        raise SipParseError("Bad Authorization")
    params: dict[str, str] = {}
    for _, name, quote, quoted, token in found:
        if not quote:
            params[name.lower()] = token
        else:
            params[name.lower()] = _UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
    return m.group(1), params


def parse_credentials(header_value: str) -> Credentials:
    """Parse Authorization; a Digest one must carry username, realm, nonce, uri and response."""
    scheme, p = parse_auth_params(header_value)
    if scheme.lower() != "digest":
        return Credentials(scheme, params=p)  # RFC 4475 §3.3.7: unknown scheme, caller challenges
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise SipParseError("Bad Authorization")
    return Credentials(
        "Digest", p["username"], p["realm"], p["nonce"], p["uri"], p["response"],
        p.get("algorithm") or "MD5", p.get("qop"), p.get("nc"), p.get("cnonce"), p.get("opaque"), p,
    )


def challenge(
    realm: str, nonce: str, algorithm: Algorithm = Algorithm.MD5, qop: bool = True,
    stale: bool = False, opaque: str | None = None,
) -> str:
    """WWW-Authenticate value (RFC 2617 §3.2.1)."""
    s = f'Digest realm="{realm}", nonce="{nonce}", algorithm={algorithm.value}'
    if qop:
        s += ', qop="auth"'
    if opaque is not None:
        s += f', opaque="{opaque}"'
    if stale:
        s += ", stale=TRUE"
    return s


def verify(creds: Credentials, method: str, ha1_hex: str) -> bool:
    """Check a Digest response against HA1, in constant time; False for anything unsupported."""
    if creds.scheme.lower() != "digest" or _hash_fn(creds.algorithm) is None:
        return False
    qop = creds.qop
    if qop is not None and (qop.lower() != "auth" or not creds.nc or creds.cnonce is None):
        return False  # auth-int and unknown qop values are not supported
    expect = response_value(creds.algorithm, ha1_hex.lower(), creds.nonce, method, creds.uri,
                            qop, creds.nc, creds.cnonce)
    return hmac.compare_digest(expect.encode(), creds.response.lower().encode("utf-8", "replace"))


def authorization(
    challenge_header: str, *, method: str, uri: str, username: str, password: str,
    nc: int = 1, cnonce: str | None = None,
) -> str:
    """Authorization value answering a 401/407 challenge (client side, gb28181 §3.3)."""
    scheme, p = parse_auth_params(challenge_header)
    if scheme.lower() != "digest" or "nonce" not in p:
        raise SipParseError("Bad challenge")
    realm = p.get("realm", "")
    algorithm = p.get("algorithm") or "MD5"
    if _hash_fn(algorithm) is None:
        raise SipParseError("Unsupported digest algorithm")
    qops = [q.strip().lower() for q in p.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else None
    nc_text = f"{nc:08x}"
    if qop and cnonce is None:
        cnonce = secrets.token_hex(8)
    resp = response_value(algorithm, ha1(algorithm, username, realm, password), p["nonce"], method, uri,
                          qop, nc_text, cnonce)
    s = (f'Digest username="{username}", realm="{realm}", nonce="{p["nonce"]}", uri="{uri}", '
         f'response="{resp}", algorithm={algorithm}')
    if qop:
        s += f', qop={qop}, nc={nc_text}, cnonce="{cnonce}"'
    if "opaque" in p:
        s += f', opaque="{p["opaque"]}"'
    return s
