"""Admission of pull sources (RTSP/RTMP/file): may the gateway open this URL for this channel? (sans-IO)

A pull source reverses the usual direction: the gateway itself connects to the URL an integrator
typed. Letting any URL through would make the gateway a scanner of whatever network it sits in
(server-side request forgery), so a pull is admitted only when:

1. the scheme is one we pull (rtsp, rtsps, rtmp, rtmps, file);
2. network URLs: the channel ID is admitted by the whitelist (`Policy.decide`, kind RTP: media
   carries no certificate) from EVERY address the host resolves to, and the deciding entry or rule
   lists its source networks explicitly — "any source" is fine for a camera that calls us, never
   for a host we are asked to call (HOST_NOT_LISTED). The shell then connects to the checked
   address, not to the name again (a second lookup could answer elsewhere: DNS rebinding);
3. file URLs: the channel is admitted and the resolved path lies under the configured file root
   (no root configured → no file sources).

URL credentials (`rtsp://user:pass@host/…`) are split off here: `SourceUrl.bare` has none and
`redact()` shows `user:***@`, for every log line, API answer and audit record.

Reasons are for the integrator and the audit log (the integrator already knows the URL).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from whitelist.decide import Policy, Reason, RequestKind
from whitelist.decide import Request as WlRequest
from whitelist.errors import ValidationError

NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps"})
SCHEMES = NETWORK_SCHEMES | {"file"}
MAX_URL = 1000
_SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "pass", "token", "key", "secret", "auth"})


class PullReason(StrEnum):
    APPROVED = "APPROVED"
    NOT_ADMITTED = "NOT_ADMITTED"            # the whitelist refuses the channel from that address
    HOST_NOT_LISTED = "HOST_NOT_LISTED"      # admitted with "any source": not enough for a pull
    UNRESOLVED = "UNRESOLVED"                # the host name has no address
    FILE_OUTSIDE_ROOT = "FILE_OUTSIDE_ROOT"  # file source outside the file root (or none configured)


@dataclass(frozen=True, slots=True)
class SourceUrl:
    """A pull URL split into its public part and its credentials (kept apart from here on)."""

    scheme: str
    host: str               # "" for file URLs; IPv6 without brackets
    port: int | None
    bare: str               # the URL without user:password (stored, shown)
    username: str = ""
    password: str = field(default="", repr=False)
    path: str = ""          # file URLs: the absolute path

    @property
    def is_file(self) -> bool:
        return self.scheme == "file"

    def redacted(self) -> str:
        return redact_parts(self.bare, self.username, bool(self.password))

    def with_credentials(self, username: str, password: str, host: str | None = None) -> str:
        """The URL to connect to: credentials put back, the host optionally pinned to a checked address."""
        if self.is_file:
            return self.bare
        parts = urlsplit(self.bare)
        h = host if host is not None else self.host
        h = f"[{h}]" if ":" in h else h
        netloc = h if self.port is None else f"{h}:{self.port}"
        if username:
            auth = quote(username, safe="")
            if password:
                auth += ":" + quote(password, safe="")
            netloc = f"{auth}@{netloc}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_parts(bare: str, username: str, has_password: bool) -> str:
    """`rtsp://user:***@host/…` from a bare URL and its username (never shows the password)."""
    if not username or "://" not in bare:
        return bare
    scheme, rest = bare.split("://", 1)
    auth = quote(username, safe="") + (":***" if has_password else "")
    return f"{scheme}://{auth}@{rest}"


def redact(url: str) -> str:
    """Hide the password of any URL (for text that may carry one, e.g. an error message)."""
    try:
        return parse_source_url(url).redacted()
    except ValidationError:
        head, sep, rest = url.partition("://")
        if sep and "@" in rest.split("/", 1)[0]:
            return f"{head}://***@{rest.split('@', 1)[1]}"
        return url


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s@:]*):[^/\s@]*@")


def scrub(text: str) -> str:
    """Hide every `scheme://user:password@` in free text (FFmpeg errors quote the URL they failed on)."""
    return _USERINFO.sub(r"\1\2:***@", text)


def parse_source_url(url: object, *, field_name: str = "url") -> SourceUrl:
    """Validate a pull URL and split its credentials off (ValidationError naming the field)."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationError(field_name, "must be a non-empty URL")
    url = url.strip()
    if len(url) > MAX_URL:
        raise ValidationError(field_name, f"must be at most {MAX_URL} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValidationError(field_name, "must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(field_name, f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValidationError(field_name, f"scheme must be one of {', '.join(sorted(SCHEMES))}")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValidationError(field_name, "file URLs must be file:///absolute/path")
        path = posixpath.normpath(unquote(parts.path))
        return SourceUrl("file", "", None, f"file://{quote(path)}", path=path)
    if any(k.strip().lower() in _SECRET_PARAMS for k, _v in parse_qsl(parts.query, keep_blank_values=True)):
        # the query is stored and shown as is: a password there would be kept in clear
        raise ValidationError(field_name, "put credentials in user:password@, not in the query string")
    host = parts.hostname or ""
    if not host:
        raise ValidationError(field_name, "must name a host")
    username = unquote(parts.username or "")
    password = unquote(parts.password or "")
    h = f"[{host}]" if ":" in host else host
    netloc = h if port is None else f"{h}:{port}"
    bare = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
    return SourceUrl(scheme, host, port, bare, username, password)


def literal_address(host: str) -> str | None:
    """The host as a normalized IP address, or None when it is a name to resolve."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class PullDecision:
    allowed: bool
    reason: PullReason
    detail: str = ""
    address: str | None = None   # the checked address to connect to (network URLs)


def _under(path: str, root: str) -> bool:
    root = posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def decide_pull(policy: Policy, channel_id: str, source: SourceUrl, addresses: list[str], now: datetime, *,
                file_root: str | None = None, real_path: str | None = None) -> PullDecision:
    """The pull admission (see module doc). `addresses`: what the host resolved to (the shell
    resolves; a literal IP resolves to itself). `real_path`: the file path with symlinks resolved."""
    if source.is_file:
        path = real_path or source.path
        if not file_root or not _under(path, file_root):
            return PullDecision(False, PullReason.FILE_OUTSIDE_ROOT,
                                f"{path} is not under the file source root" if file_root
                                else "file sources are disabled (no media.file_source_root)")
        d = policy.decide(WlRequest(channel_id, "127.0.0.1", "file", RequestKind.RTP), now)
        if not d.allowed:
            return PullDecision(False, PullReason.NOT_ADMITTED, f"channel {channel_id}: {d.reason.value}")
        return PullDecision(True, PullReason.APPROVED, address=None)
    if not addresses:
        return PullDecision(False, PullReason.UNRESOLVED, f"{source.host} has no address")
    for addr in addresses:
        d = policy.decide(WlRequest(channel_id, addr, source.scheme, RequestKind.RTP), now)
        if not d.allowed:
            named = addr if addr == source.host else f"{source.host} ({addr})"
            return PullDecision(False, PullReason.NOT_ADMITTED,
                                f"channel {channel_id} from {named}: {d.reason.value}")
        # a rule that allowed a pending entry's ID decides with its own networks
        holder = d.rule if d.reason is Reason.RULE_ALLOW else d.entry
        listed = holder.allowed_sources if holder is not None else ()
        if not listed:
            return PullDecision(False, PullReason.HOST_NOT_LISTED,
                                f"the whitelist entry for {channel_id} allows any source; a pull needs "
                                f"its host's networks listed")
    return PullDecision(True, PullReason.APPROVED, address=addresses[0])
