"""SIP value types: URI (RFC 3261 §19.1, §25.1), name-addr (§20.20, §20.39) and Via (§20.42).

All three are frozen slotted dataclasses built by a `parse_*` function that raises only
`SipParseError`, and render back with `str()`. Hosts are stored without IPv6 brackets
(`[::1]` → `::1`); `str()` puts the brackets back. Parameter names are lower-cased,
values kept as sent (`None` for a flag parameter such as `;lr` or `;rport`).
Treat the `params` dicts as read-only: build a new value with `dataclasses.replace`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError

Params = dict[str, "str | None"]

_WSCHARS = ("", " ", "\t")
# Interning caches for immutable values that repeat many times a second (the platform's own
# URIs, a busy peer's). Small on purpose: sized for every device (20,000 at a 60 s keepalive)
# they held ~1 KB per device for a hit once a minute. Cleared when full. Callers must treat
# params dicts as read-only.
_CACHE_MAX = 1024
_URI_CACHE: dict[str, SipUri] = {}
_ADDR_CACHE: dict[str, NameAddr] = {}
_SPLIT_SPECIAL = {",": re.compile(r'["<,]'), ";": re.compile(r'["<;]')}
_QUOTED_TAIL = re.compile(r'(?:[^"\\]|\\.)*"', re.S)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)
BAD_URI_CHARS = re.compile(r'[\s<>"]')  # never inside a URI (RFC 3261 §25.1); message.py checks Request-URIs too
URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_HOSTNAME = re.compile(r"[A-Za-z0-9._\-]+\Z")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+\Z")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_LWS = re.compile(r"[ \t]+")
# Fast paths for the shapes every GB device sends; anything else takes the general code.
_URI_FAST = re.compile(
    r'(sips?):(?:([^:@;?\s<>"]+)(?::([^@;?\s<>"]*))?@)?([A-Za-z0-9._\-]+|\[[0-9A-Fa-f:.]+\])'
    r'(?::([0-9]{1,5}))?(;[^?@\s<>"]*)?(?:\?([^\s<>"]*))?\Z'
)
_NA_FAST = re.compile(r'(?:"((?:[^"\\]|\\.)*)"|([^"<]*?))[ \t]*<([^<>]*)>(.*)\Z', re.S)
_VIA_FAST = re.compile(
    r"SIP/2\.0/([A-Za-z0-9\-.!%*_+`'~]+) ([A-Za-z0-9._\-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?(;.*)?\Z",
    re.S,
)


def split_quoted(text: str, sep: str = ",") -> list[str]:
    """Split `text` on `sep` outside quoted strings and <...>; jumps with regexes, no per-char loop.

    Raises SipParseError on an unterminated quoted string (RFC 4475 §3.1.2.6).
    """
    if '"' not in text and "<" not in text:
        return text.split(sep)
    special = _SPLIT_SPECIAL[sep]
    out: list[str] = []
    start = pos = 0
    while True:
        m = special.search(text, pos)
        if m is None:
            break
        c = m.group()
        i = m.start()
        if c == '"':
            q = _QUOTED_TAIL.match(text, i + 1)
            if q is None:
                raise SipParseError("Unterminated quoted string")
            pos = q.end()
        elif c == "<":
            gt = text.find(">", i + 1)
            if gt < 0:
                raise SipParseError("Unterminated <")
            pos = gt + 1
        else:
            out.append(text[start:i])
            start = pos = i + 1
    out.append(text[start:])
    return out


def parse_params(tail: str) -> Params:
    """Parse `;name[=value]...` (generic-param, RFC 3261 §25.1); tolerant of LWS around ; and =."""
    tail = tail.strip()
    if not tail:
        return {}
    if tail[0] != ";":
        raise SipParseError("Bad parameters")
    params: Params = {}
    pieces = tail.split(";") if '"' not in tail else split_quoted(tail, ";")
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        if not (name.isalnum() and name.isascii()):
            name = name.strip()
            if not name or not _TOKEN.match(name):
                raise SipParseError("Bad parameter")
        if eq:
            if value[:1] in _WSCHARS or value[-1:] in _WSCHARS:
                value = value.strip()
                if not value:
                    raise SipParseError("Bad parameter")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote(text: str) -> str:
    """Undo quoted-pair escapes of a quoted-string body (RFC 3261 §25.1)."""
    return _UNESCAPE.sub(r"\1", text) if "\\" in text else text


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_hostport(text: str) -> tuple[str, int | None]:
    """host[:port] with IPv6 references in brackets; returns the host without brackets."""
    if text.startswith("["):
        end = text.find("]")
        host = text[1:end]
        rest = text[end + 1 :]
        if end < 0 or not host or not _IPV6.match(host):
            raise SipParseError("Bad host")
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
        if not host or not _HOSTNAME.match(host):
            raise SipParseError("Bad host")
    if not rest:
        return host, None
    if rest[0] != ":" or not rest[1:].isdigit() or not rest[1:].isascii() or len(rest) > 6:
        raise SipParseError("Bad port")
    port = int(rest[1:])
    if port > 65535:
        raise SipParseError("Bad port")
    return host, port


def format_host(host: str, port: int | None) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port is None else f"{h}:{port}"


@dataclass(frozen=True, slots=True)
class SipUri:
    """A SIP/SIPS URI. Other schemes (tel:, http:, isbn: ...) keep everything after the colon
    in `opaque` (RFC 4475 §3.3.4 wants them tolerated, not understood)."""

    scheme: str
    user: str
    password: str | None
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)
    headers: str = ""
    opaque: str = ""

    def __str__(self) -> str:
        if self.opaque:
            return f"{self.scheme}:{self.opaque}"
        s = self.scheme + ":"
        if self.user:
            s += self.user if self.password is None else f"{self.user}:{self.password}"
            s += "@"
        s += format_host(self.host, self.port) + format_params(self.params)
        return s + "?" + self.headers if self.headers else s


def parse_uri(text: str) -> SipUri:
    """Parse an absolute URI; full grammar for sip:/sips:, opaque for anything else."""
    u = _URI_CACHE.get(text)
    if u is None:
        u = _parse_uri(text)
        if len(_URI_CACHE) >= _CACHE_MAX:
            _URI_CACHE.clear()
        _URI_CACHE[text] = u
    return u


def _parse_uri(text: str) -> SipUri:
    m = _URI_FAST.match(text)
    if m is not None:
        f_scheme, f_user, f_password, f_host, port_text, ptail, f_headers = m.groups()
        if f_host[0] == "[":
            f_host = f_host[1:-1]
        f_port = int(port_text) if port_text else None
        if f_port is not None and f_port > 65535:
            raise SipParseError("Bad port")
        f_params = parse_params(ptail) if ptail else {}
        return SipUri(f_scheme.lower(), f_user or "", f_password, f_host, f_port, f_params, f_headers or "")
    s = text.strip()
    colon = s.find(":")
    if colon <= 0 or BAD_URI_CHARS.search(s) or not URI_SCHEME.match(s[:colon]):
        raise SipParseError("Bad URI")
    scheme = s[:colon].lower()
    rest = s[colon + 1 :]
    if not rest:
        raise SipParseError("Bad URI")
    if scheme not in ("sip", "sips"):
        return SipUri(scheme, "", None, "", None, {}, "", rest)
    user = ""
    password: str | None = None
    at = rest.rfind("@")  # '@' is escaped everywhere after the userinfo, while '?' may be in it
    if at >= 0:
        user, sep, pw = rest[:at].partition(":")
        if not user:
            raise SipParseError("Bad URI user")
        if sep:
            password = pw
        rest = rest[at + 1 :]
    headers = ""
    q = rest.find("?")
    if q >= 0:
        headers = rest[q + 1 :]
        rest = rest[:q]
    semi = rest.find(";")
    if semi >= 0:
        host, port = parse_hostport(rest[:semi])
        params = parse_params(rest[semi:])
    else:
        host, port = parse_hostport(rest)
        params = {}
    return SipUri(scheme, user, password, host, port, params, headers)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """`"display" <uri>;params` as in From, To, Contact; `display` is unquoted text."""

    display: str
    uri: SipUri
    params: Params = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        d = quote(self.display) + " " if self.display else ""
        return f"{d}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    """name-addr or bare addr-spec; in the bare form `;...` are header params (RFC 3261 §20.10)."""
    a = _ADDR_CACHE.get(text)
    if a is None:
        a = _parse_name_addr(text)
        if "tag" not in a.params:  # tagged values (every From) rarely repeat: do not churn
            if len(_ADDR_CACHE) >= _CACHE_MAX:
                _ADDR_CACHE.clear()
            _ADDR_CACHE[text] = a
    return a


def _parse_name_addr(text: str) -> NameAddr:
    m = _NA_FAST.match(text)
    if m is not None:
        quoted, bare, uri, ptail = m.groups()
        display = unquote(quoted) if quoted is not None else bare.strip()
        if bare and ("\t" in display or "  " in display):
            display = _LWS.sub(" ", display)
        return NameAddr(display, parse_uri(uri), parse_params(ptail) if ptail else {})
    s = text.strip()
    if not s:
        raise SipParseError("Empty address")
    display = ""
    if s[0] == '"':
        m = _QUOTED.match(s)
        if m is None:
            raise SipParseError("Unterminated quoted string")
        display = unquote(m.group(1))
        s = s[m.end() :].lstrip()
        if not s.startswith("<"):
            raise SipParseError("Bad address")
    lt = s.find("<")
    if lt >= 0:
        if lt:
            display = _LWS.sub(" ", s[:lt].strip())
            if '"' in display:
                raise SipParseError("Bad display name")
        gt = s.find(">", lt)
        if gt < 0:
            raise SipParseError("Unterminated <")
        return NameAddr(display, parse_uri(s[lt + 1 : gt]), parse_params(s[gt + 1 :]))
    semi = s.find(";")
    if semi < 0:
        return NameAddr("", parse_uri(s), {})
    return NameAddr("", parse_uri(s[:semi]), parse_params(s[semi:]))


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: `SIP/2.0/<transport> host[:port];params` (RFC 3261 §20.42, RFC 3581)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport value a response carries; None when absent or valueless (a request's `;rport`)."""
        v = self.params.get("rport")
        return int(v) if v is not None and v.isdigit() else None

    @property
    def has_rport(self) -> bool:
        """True if the sender asked for symmetric response routing (RFC 3581 §3)."""
        return "rport" in self.params

    @property
    def sent_by(self) -> str:
        return format_host(self.host, self.port)

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {format_host(self.host, self.port)}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    """Parse one via-parm; LWS allowed around '/', ':' ';' and '=' (RFC 4475 §3.1.1.1)."""
    m = _VIA_FAST.match(text)
    if m is not None:
        transport, host, port_text, ptail = m.groups()
        if host[0] == "[":
            host = host[1:-1]
        port = int(port_text) if port_text else None
        if port is not None and port > 65535:
            raise SipParseError("Bad Via")
        try:
            params = parse_params(ptail) if ptail else {}
        except SipParseError:
            raise SipParseError("Bad Via") from None
        return Via(transport.upper(), host, port, params)
    s = text.strip()
    semi = s.find(";")
    head, tail = (s, "") if semi < 0 else (s[:semi], s[semi:])
    parts = head.split("/", 2)
    if len(parts) != 3 or parts[0].strip().upper() != "SIP" or parts[1].strip() != "2.0":
        raise SipParseError("Bad Via")
    tp = parts[2].split(None, 1)
    if len(tp) != 2 or not _TOKEN.match(tp[0]):
        raise SipParseError("Bad Via")
    sent_by = tp[1] if " " not in tp[1] and "\t" not in tp[1] else "".join(tp[1].split())
    try:
        host, port = parse_hostport(sent_by)
        params = parse_params(tail)
    except SipParseError:
        raise SipParseError("Bad Via") from None
    return Via(tp[0].upper(), host, port, params)
