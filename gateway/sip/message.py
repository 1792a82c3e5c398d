"""SIP messages: headers multi-map, Request/Response, parse and serialize (RFC 3261 §7, §20).

Sans-IO and built for the keepalive hot path: one decode of the header block, one split,
one pass over the lines; the mandatory headers (Via, From, To, Call-ID, CSeq) are parsed
once during validation and cached on the Headers object, every other value stays text.
Unmodified fields keep their original line, so a clean CRLF message round-trips byte-exact
(house rule 5). Header text is decoded UTF-8 with surrogateescape so any bytes survive.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .address import (
    BAD_URI_CHARS,
    URI_SCHEME,
    NameAddr,
    SipUri,
    Via,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_quoted,
)
from .entropy import token_hex
from .errors import MessageTooLarge, SipParseError

__all__ = [
    "Headers", "NameAddr", "Request", "Response", "SipUri", "Via", "make_response", "new_branch",
    "new_call_id", "new_tag", "parse_message", "parse_name_addr", "parse_uri", "parse_via", "serialize",
]

# RFC 3261 §7.3.3 compact forms (plus o/u from RFC 6665, k from RFC 3261 §20.37).
_COMPACT = {
    "v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
    "c": "content-type", "e": "content-encoding", "k": "supported", "s": "subject", "o": "event",
    "u": "allow-events", "r": "refer-to", "b": "referred-by", "x": "session-expires",
}
_DISPLAY = {
    "via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "contact": "Contact",
    "content-length": "Content-Length", "content-type": "Content-Type", "content-encoding":
    "Content-Encoding", "supported": "Supported", "subject": "Subject", "event": "Event",
    "allow-events": "Allow-Events", "refer-to": "Refer-To", "referred-by": "Referred-By",
    "session-expires": "Session-Expires", "cseq": "CSeq",
    "max-forwards": "Max-Forwards", "www-authenticate": "WWW-Authenticate",
}
#: Methods we know (RFC 3261 and extensions a GB device may send). Any token is a legal method, so
#: counters keyed by method use this set and count the rest as "other" (bounded /metrics labels).
KNOWN_METHODS = frozenset({"REGISTER", "MESSAGE", "NOTIFY", "OPTIONS", "BYE", "CANCEL", "INFO", "INVITE",
                           "ACK", "SUBSCRIBE", "PUBLISH", "UPDATE", "PRACK", "REFER"})

_MULTI = frozenset(("via", "contact", "route", "record-route"))
_SINGLE = frozenset(("call-id", "cseq", "from", "to", "content-length", "max-forwards"))
_KEYS: dict[str, str] = {}


def _key(name: str) -> str:
    """Lookup key for a header name: lower-case, compact form expanded."""
    k = _KEYS.get(name)
    if k is None:
        low = name.strip().lower()
        k = _COMPACT.get(low, low)
        if len(_KEYS) < 2048:
            _KEYS[name] = k
    return k


def _display_name(name: str) -> str:
    low = name.lower()
    if low in _COMPACT:
        return _DISPLAY[_COMPACT[low]]
    return name


# A field: (key, name as sent, value stripped, original line or None once rewritten).
_Field = tuple[str, str, str, "str | None"]


class Headers:
    """Ordered multi-map of header fields; case-insensitive, compact names folded to long ones."""

    __slots__ = ("_cache", "_fields")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[_Field] = [(_key(n), _display_name(n), v.strip(), None) for n, v in items]
        self._cache: dict[str, Any] = {}

    def get(self, name: str) -> str | None:
        key = _key(name)
        for f in self._fields:
            if f[0] == key:
                return f[2]
        return None

    def get_all(self, name: str) -> list[str]:
        """All values in order; Via/Contact/Route/Record-Route also split on commas (quote-aware)."""
        key = _key(name)
        values = [f[2] for f in self._fields if f[0] == key]
        if key not in _MULTI:
            return values
        out: list[str] = []
        for v in values:
            if "," in v:
                out.extend(p for p in (x.strip() for x in split_quoted(v)) if p)
            else:
                out.append(v)
        return out

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return any(f[0] == key for f in self._fields)

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name by one, at the position of the first."""
        key = _key(name)
        new: _Field = (key, _display_name(name), value.strip(), None)
        fields = self._fields
        for i, f in enumerate(fields):
            if f[0] == key:
                self._fields = fields[:i] + [new] + [g for g in fields[i + 1 :] if g[0] != key]
                break
        else:
            fields.append(new)
        self._cache.clear()

    def set_first(self, name: str, value: str) -> None:
        """Replace only the first field of that name (e.g. the top Via line); append if none."""
        key = _key(name)
        for i, f in enumerate(self._fields):
            if f[0] == key:
                self._fields[i] = (key, f[1], value.strip(), None)
                break
        else:
            self._fields.append((key, _display_name(name), value.strip(), None))
        self._cache.clear()

    def add(self, name: str, value: str) -> None:
        self._fields.append((_key(name), _display_name(name), value.strip(), None))
        self._cache.clear()

    def prepend(self, name: str, value: str) -> None:
        """Insert at the top (a proxy's or client's own Via goes first, RFC 3261 §8.1.1.7)."""
        self._fields.insert(0, (_key(name), _display_name(name), value.strip(), None))
        self._cache.clear()

    def remove(self, name: str) -> None:
        key = _key(name)
        self._fields = [f for f in self._fields if f[0] != key]
        self._cache.clear()

    def items(self) -> list[tuple[str, str]]:
        return [(f[1], f[2]) for f in self._fields]

    def copy(self) -> Headers:
        h = Headers()
        h._fields = list(self._fields)
        return h

    def __len__(self) -> int:
        return len(self._fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(f[0], f[2]) for f in self._fields] == [(f[0], f[2]) for f in other._fields]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def _single(h: Headers, key: str, label: str) -> str:
    v = h.get(key)
    if not v:
        raise SipParseError(f"Missing {label}")
    return v


def _cseq_of(h: Headers) -> tuple[int, str]:
    c = h._cache.get("cseq")
    if c is None:
        parts = _single(h, "cseq", "CSeq").split()
        if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii() or len(parts[0]) > 10:
            raise SipParseError("Bad CSeq")
        n = int(parts[0])
        if n >= 2**32:  # RFC 3261 §8.1.1.5: 32-bit unsigned
            raise SipParseError("Bad CSeq")
        c = h._cache["cseq"] = (n, parts[1])
    return c


def _addr_of(h: Headers, key: str, label: str) -> NameAddr:
    a = h._cache.get(key)
    if a is None:
        try:
            a = h._cache[key] = parse_name_addr(_single(h, key, label))
        except SipParseError as e:
            raise SipParseError(e.reason if e.reason.startswith("Missing") else f"Bad {label}") from None
    return a


def _vias_of(h: Headers) -> list[Via]:
    v = h._cache.get("via")
    if v is None:
        v = []
        for f in h._fields:
            if f[0] == "via":
                if "," in f[2]:
                    v.extend(parse_via(piece.strip()) for piece in split_quoted(f[2]))
                else:
                    v.append(parse_via(f[2]))
        if not v:
            raise SipParseError("Missing Via")
        h._cache["via"] = v
    return v


class _Common:
    """Accessors shared by Request and Response; parsed once, cached on the Headers."""

    __slots__ = ()
    headers: Headers

    @property
    def call_id(self) -> str:
        return _single(self.headers, "call-id", "Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        return _cseq_of(self.headers)

    @property
    def from_(self) -> NameAddr:
        return _addr_of(self.headers, "from", "From")

    @property
    def to(self) -> NameAddr:
        return _addr_of(self.headers, "to", "To")

    @property
    def vias(self) -> list[Via]:
        return _vias_of(self.headers)

    @property
    def top_via(self) -> Via:
        return _vias_of(self.headers)[0]

    @property
    def content_type(self) -> str | None:
        v = self.headers.get("content-type")
        return v.lower() if v is not None else None


@dataclass(slots=True)
class Request(_Common):
    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"
    _ruri: tuple[str, SipUri] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def request_uri(self) -> SipUri:
        """The Request-URI parsed (cached until `uri` changes)."""
        r = self._ruri
        if r is None or r[0] != self.uri:
            r = self._ruri = (self.uri, parse_uri(self.uri))
        return r[1]

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"


@dataclass(slots=True)
class Response(_Common):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


def _check_singles(fields: list[_Field]) -> None:
    """RFC 3261 §7.3.1 / RFC 4475 §3.3.8: single-valued headers must appear once."""
    counts: dict[str, int] = {}
    for f in fields:
        if f[0] in _SINGLE:
            counts[f[0]] = counts.get(f[0], 0) + 1
            if counts[f[0]] > 1:
                raise SipParseError(f"Multiple {_DISPLAY.get(f[0], f[1])}")


def _head_bounds(data: bytes) -> tuple[int, int]:
    """(end of header block, start of body); tolerates LF-only and mixed line ends."""
    p = data.find(b"\r\n\r\n")
    if p >= 0 and data.find(b"\n\n", 0, p) < 0 and data.find(b"\n\r\n", 0, p) < 0:
        return p, p + 4
    end = p if p >= 0 else len(data)
    q = data.find(b"\n\n", 0, end)
    r = data.find(b"\n\r\n", 0, end + 2)
    best, start = (p, p + 4) if p >= 0 else (-1, -1)
    if q >= 0 and (best < 0 or q < best):
        best, start = q, q + 2
    if r >= 0 and (best < 0 or r < best):
        best, start = r, r + 3
    if best >= 0:
        return best, start
    if data.endswith(b"\n"):  # no blank line at all (RFC 4475 baddn): headers run to the end
        return len(data) - (2 if data.endswith(b"\r\n") else 1), len(data)
    raise SipParseError("Missing end of headers")


_NAMES: dict[str, tuple[str, str]] = {}


def _name_slow(n: str, sep: str) -> tuple[str, str]:
    """(key, clean name) for the text before a colon; validates it is a token (RFC 3261 §7.3.1)."""
    name = n.rstrip(" \t")
    if not sep or not name or not _is_token(name):
        raise SipParseError("Bad header line")
    r = (_key(name), name)
    if len(_NAMES) < 2048:
        _NAMES[n] = r
    return r


_FOLD = re.compile(r"\r?\n[ \t]+")


def parse_message(data: bytes, *, max_size: int = 65536, max_headers: int = 256) -> Request | Response:
    """Parse one complete message (a datagram, or one framed TCP message); raises SipParseError."""
    if len(data) > max_size:
        raise MessageTooLarge(fatal=False)
    head_end, body_start = _head_bounds(data)
    text = data[:head_end].decode("utf-8", "surrogateescape")
    nl = text.find("\n")
    if nl < 0:
        start, rest = text, ""
    else:
        start = text[: nl - 1] if text[nl - 1 : nl] == "\r" else text[:nl]
        rest = text[nl + 1 :]
    if "\n " in rest or "\n\t" in rest or rest[:1] in (" ", "\t"):
        if rest[:1] in (" ", "\t"):
            raise SipParseError("Bad header line")
        rest = _FOLD.sub(" ", rest)  # unfold LWS (RFC 3261 §7.3.1)
    if "\r" in rest:
        lines = rest.split("\r\n")
        if "\n" in rest and len(lines) != rest.count("\n") + 1:
            lines = [ln[:-1] if ln.endswith("\r") else ln for ln in rest.split("\n")]
    else:
        lines = rest.split("\n") if rest else []
    if len(lines) > max_headers:
        raise SipParseError("Too many headers")
    fields: list[_Field] = []
    append = fields.append
    names = _NAMES.get
    for line in lines:
        n, sep, v = line.partition(":")
        k = names(n) or _name_slow(n, sep)
        append((k[0], k[1], v.strip(" \t"), line))
    seen = {f[0]: f[2] for f in fields}
    if len(seen) != len(fields):
        _check_singles(fields)
    headers = Headers()
    headers._fields = fields


    msg: Request | Response
    if start.startswith("SIP/") or start[:4].upper() == "SIP/":
        parts = start.split(" ", 2)
        code = parts[1] if len(parts) > 1 else ""
        if parts[0].upper() != "SIP/2.0":
            raise SipParseError("Version Not Supported", status=505)
        if len(code) != 3 or not code.isdigit() or not code.isascii() or not "100" <= code <= "699":
            raise SipParseError("Bad status line")
        msg = Response(int(code), parts[2] if len(parts) > 2 else "", headers, b"", parts[0])
    else:
        parts = start.rstrip(" \t").split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise SipParseError("Bad request line")
        method, uri, version = parts
        if version.upper() != "SIP/2.0":
            if version[:4].upper() == "SIP/":
                raise SipParseError("Version Not Supported", status=505)
            raise SipParseError("Bad request line")
        msg = Request(method, uri, headers, b"", version)
        # Request-URI: checked cheaply here, parsed on first use of .request_uri.
        colon = uri.find(":")
        if colon <= 0 or BAD_URI_CHARS.search(uri) or not URI_SCHEME.match(uri, 0, colon):
            raise SipParseError("Bad Request-URI")
        if not _is_token(method):
            raise SipParseError("Bad method")

    # Mandatory headers (RFC 3261 §8.1.1), parsed once and cached for the accessors.
    if not seen.get("call-id"):
        raise SipParseError("Missing Call-ID")
    cache = headers._cache
    cseq = _cseq_of(headers)
    if isinstance(msg, Request) and cseq[1] != msg.method:
        raise SipParseError("CSeq method mismatch")
    for key, label in (("from", "From"), ("to", "To")):
        val = seen.get(key)
        if not val:
            raise SipParseError(f"Missing {label}")
        try:
            cache[key] = parse_name_addr(val)
        except SipParseError:
            raise SipParseError(f"Bad {label}") from None
    via = seen.get("via")
    if via is None:
        raise SipParseError("Missing Via")
    if len(seen) == len(fields) and "," not in via:
        cache["via"] = [parse_via(via)]
    else:
        _vias_of(headers)
    mf = seen.get("max-forwards")
    if mf is not None and (not mf.isdigit() or not mf.isascii() or int(mf) > 255):
        raise SipParseError("Bad Max-Forwards")

    cl = seen.get("content-length")
    if cl is None:
        msg.body = data[body_start:]
    else:
        if not cl.isdigit() or not cl.isascii():
            raise SipParseError("Bad Content-Length")
        length = int(cl)
        if body_start + length > len(data):
            raise SipParseError("Content-Length mismatch")
        # RFC 3261 §18.3: over UDP, octets beyond Content-Length are discarded.
        msg.body = data[body_start : body_start + length]
    return msg


_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def _is_token(s: str) -> bool:
    return (s.isalpha() and s.isascii()) or all(c in _TOKEN_CHARS for c in s)


def serialize(msg: Request | Response) -> bytes:
    """Wire bytes with CRLF; Content-Length is (re)set to len(body), duplicates dropped."""
    body = msg.body
    n = str(len(body))
    out = [msg.start_line()]
    have_cl = False
    for key, name, value, raw in msg.headers._fields:
        if key == "content-length":
            if have_cl:
                continue
            have_cl = True
            if value != n:
                out.append(f"{name}: {n}")
                continue
        out.append(raw if raw is not None else f"{name}: {value}")
    if not have_cl:
        out.append(f"Content-Length: {n}")
    out.append("\r\n")
    return "\r\n".join(out).encode("utf-8", "surrogateescape") + body


REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event",
    491: "Request Pending", 493: "Undecipherable", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    return REASONS.get(status) or REASONS.get(status // 100 * 100, "Unknown")


# A plain Via (one value, upper-case transport, lower-case host and param names, plain values):
# the common case, stamped by splicing text instead of parse_via + str(Via); same result.
_VIA_PLAIN = re.compile(
    r"SIP/2\.0/([A-Z]{2,5}) ([0-9.]{7,15}|[a-z0-9][a-z0-9.\-]{0,62}):([1-9][0-9]{0,4})"
    r"((?:;[a-z]{1,16}(?:=[A-Za-z0-9.\-_]{1,64})?){0,16})\Z"
)


def with_received(via_value: str, received: tuple[str, int]) -> str:
    """Top Via value with received= and rport= set from the packet source (RFC 3581 §4, gb §2.1)."""
    m = _VIA_PLAIN.match(via_value)
    if m is not None and int(m.group(3)) <= 65535:
        params = m.group(4).split(";")[1:]
        names = [p.partition("=")[0] for p in params]
        if len(set(names)) == len(names):  # a repeated param collapses in parse_params: slow path
            return f"SIP/2.0/{m.group(1)} {m.group(2)}:{m.group(3)};" + stamped_params(names, params, received)
    return _with_received_parsed(via_value, received)


def stamped_params(names: Sequence[str], params: Sequence[str], received: tuple[str, int]) -> str:
    """A plain Via's `;`-separated params with rport= and received= set in place, or added at
    the end in that order (what parse_via + str(Via) would write for distinct params)."""
    host, port = received
    out = [f"rport={port}" if n == "rport" else f"received={host}" if n == "received" else p
           for n, p in zip(names, params, strict=True)]
    if "rport" not in names:
        out.append(f"rport={port}")
    if "received" not in names:
        out.append(f"received={host}")
    return ";".join(out)


def _with_received_parsed(via_value: str, received: tuple[str, int]) -> str:
    pieces = split_quoted(via_value) if "," in via_value else [via_value]
    v = parse_via(pieces[0])
    params = dict(v.params)
    params["rport"] = str(received[1])
    params["received"] = received[0]
    pieces[0] = str(Via(v.transport, v.host, v.port, params))
    return ",".join(pieces)


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    received: tuple[str, int] | None = None,
) -> Response:
    """Response skeleton per RFC 3261 §8.2.6: Via (all, top one stamped), From, To(+tag), Call-ID, CSeq."""
    fields: list[_Field] = []
    first_via = True
    to_tag_added = False
    copy_rr = 100 < status < 300
    for f in request.headers._fields:
        key = f[0]
        if key == "via":
            if first_via and received is not None:
                f = (key, f[1], with_received(f[2], received), None)
            first_via = False
            fields.append(f)
        elif key == "to":
            if to_tag is not None and request.to.tag is None:
                f = (key, f[1], f"{f[2]};tag={to_tag}", None)
                to_tag_added = f[2].endswith(">;tag=" + to_tag) and not request.to.params
            fields.append(f)
        elif key in ("from", "call-id", "cseq") or (copy_rr and key == "record-route"):
            fields.append(f)
    h = Headers(headers)
    h._fields[:0] = fields
    h.set("Content-Length", str(len(body)))
    if to_tag is not None and to_tag_added:
        # the transaction layer reads response.to: hand it the parse instead of a second one
        # (only for `<uri>` with no params, where appending ;tag= adds exactly that param)
        h._cache["to"] = NameAddr(request.to.display, request.to.uri, {"tag": to_tag})
    return Response(status, reason if reason is not None else reason_phrase(status), h, body)


def new_branch() -> str:
    """RFC 3261 §8.1.1.7: the magic cookie then something unique."""
    return "z9hG4bK" + token_hex(8)


def new_tag() -> str:
    return token_hex(5)


def stateless_tag(request: Request) -> str:
    """A To tag that depends on the request only, so that a retransmission answered again
    statelessly gets the same one (RFC 3261 §8.2.7)."""
    h = request.headers
    seed = "\x00".join((h.get("Call-ID") or "", h.get("From") or "", h.get("CSeq") or "", h.get("Via") or ""))
    return hashlib.blake2s(seed.encode("utf-8", "surrogateescape"), digest_size=5).hexdigest()


def new_call_id(host: str) -> str:
    return f"{token_hex(12)}@{host}"
