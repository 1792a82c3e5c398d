"""Tolerant SDP parse/serialize pair (RFC 4566 as GB devices write it, our notes §5.3).

`SessionDescription` keeps every line as received, in order (unknown lines and the GB
extensions `y=` SSRC and `f=` media description included), so serialising a CRLF body
gives back the same bytes; accessors read typed values on demand. Generic SDP libraries
reject `y=`/`f=`, hence a home-grown parser. The GB play layer is `gateway.gb.sdp`.
"""

import re
from dataclasses import dataclass, field

from gateway.gb.errors import SdpError

MAX_SDP = 65536
_LINE = re.compile(r"\s*([A-Za-z])\s*=(.*)\Z", re.DOTALL)
_DIRECTIONS = frozenset({"sendonly", "recvonly", "sendrecv", "inactive"})
_STREAM_ATTRS = ("streamnumber", "stream", "streamprofile")


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One `m=` section: `attributes` are its `a=` lines as (name, value or None)."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    connection_address: str | None = None

    def attribute(self, name: str) -> str | None:
        """First value of `a=name[:value]` in this section ('' for a flag), None if absent."""
        want = name.lower()
        for key, value in self.attributes:
            if key.lower() == want:
                return "" if value is None else value
        return None

    @property
    def is_tcp(self) -> bool:
        return "TCP" in self.proto.upper()


def _split_attr(value: str) -> tuple[str, str | None]:
    name, sep, rest = value.partition(":")
    return name.strip(), (rest.strip() if sep else None)


def _conn_addr(value: str) -> str | None:
    parts = value.split()
    if len(parts) < 3:
        return None
    return parts[2].split("/", 1)[0] or None


def _parse_m(value: str) -> tuple[str, int, str, list[str]]:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"m= line needs media, port and proto: {value[:60]!r}")
    port_text = parts[1].split("/", 1)[0]
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise SdpError(f"m= line has a bad port: {value[:60]!r}")
    return parts[0], int(port_text), parts[2], parts[3:]


@dataclass(slots=True)
class SessionDescription:
    """A parsed SDP body. `lines` is the raw text of each line, without line endings."""

    lines: list[str]

    def _typed(self) -> list[tuple[str, str]]:
        out = []
        for line in self.lines:
            m = _LINE.match(line)
            out.append((m.group(1).lower(), m.group(2).strip()) if m else ("", line))
        return out

    def value(self, kind: str) -> str | None:
        """Value of the first `kind=` line anywhere (stripped), None if absent."""
        for k, v in self._typed():
            if k == kind:
                return v
        return None

    def values(self, kind: str) -> list[str]:
        return [v for k, v in self._typed() if k == kind]

    def set_value(self, kind: str, value: str) -> None:
        """Replace the first `kind=` line, or append one (e.g. rewrite `y=` or `c=` when relaying)."""
        for i, (k, _v) in enumerate(self._typed()):
            if k == kind:
                self.lines[i] = f"{kind}={value}"
                return
        self.lines.append(f"{kind}={value}")

    @property
    def session_attributes(self) -> list[tuple[str, str | None]]:
        out = []
        for k, v in self._typed():
            if k == "m":
                break
            if k == "a":
                out.append(_split_attr(v))
        return out

    @property
    def media(self) -> list[MediaDescription]:
        sections: list[MediaDescription] = []
        current: tuple[str, int, str, list[str]] | None = None
        attrs: list[tuple[str, str | None]] = []
        conn: str | None = None
        for k, v in [*self._typed(), ("m", "")]:
            if k == "m":
                if current is not None:
                    sections.append(MediaDescription(*current, attributes=attrs, connection_address=conn))
                if not v:
                    break
                current, attrs, conn = _parse_m(v), [], None
            elif current is not None and k == "a":
                attrs.append(_split_attr(v))
            elif current is not None and k == "c":
                conn = _conn_addr(v)
        return sections

    def _all_attrs(self) -> list[tuple[str, str | None]]:
        return [_split_attr(v) for k, v in self._typed() if k == "a"]

    def attribute(self, name: str) -> str | None:
        """First `a=name` value anywhere in the body ('' for a flag), None if absent."""
        want = name.lower()
        for key, value in self._all_attrs():
            if key.lower() == want:
                return "" if value is None else value
        return None

    @property
    def session_name(self) -> str | None:
        return self.value("s")

    @property
    def uri(self) -> str | None:
        """`u=<channelID>:<type>` of Playback/Download (§5.3)."""
        return self.value("u")

    @property
    def connection_address(self) -> str | None:
        """Session-level `c=` address, else the first media-level one."""
        for k, v in self._typed():
            if k == "m":
                break
            if k == "c":
                return _conn_addr(v)
        for section in self.media:
            if section.connection_address:
                return section.connection_address
        return None

    @property
    def timing(self) -> tuple[int, int] | None:
        """`t=` start/stop; GB uses Unix epoch seconds for playback (§5.3)."""
        parts = (self.value("t") or "").split()
        if len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts):
            return int(parts[0]), int(parts[1])
        return None

    @property
    def ssrc(self) -> str | None:
        """GB `y=` SSRC as written (decimal digits), None if absent or empty."""
        return self.value("y") or None

    @property
    def f(self) -> str | None:
        """GB `f=` media description ('' when present but empty), None if absent."""
        return self.value("f")

    @property
    def setup(self) -> str | None:
        """`a=setup` (RFC 4145) lower-cased: active / passive / actpass."""
        value = self.attribute("setup")
        return value.lower() if value else None

    @property
    def direction(self) -> str | None:
        """sendonly / recvonly / sendrecv / inactive; media-level wins over session-level."""
        media = self.media
        for key, _v in media[0].attributes if media else []:
            if key.lower() in _DIRECTIONS:
                return key.lower()
        for key, _v in self.session_attributes:
            if key.lower() in _DIRECTIONS:
                return key.lower()
        return None

    @property
    def rtpmap(self) -> dict[int, str]:
        """Payload type → encoding, e.g. {96: "PS/90000"}."""
        out: dict[int, str] = {}
        for key, value in self._all_attrs():
            if key.lower() == "rtpmap" and value:
                pt, _sp, enc = value.partition(" ")
                if pt.isascii() and pt.isdigit():
                    out.setdefault(int(pt), enc.strip())
        return out

    @property
    def stream_number(self) -> int | None:
        """Requested stream (0 main, 1 sub) from any of the vendor attributes (§5.3)."""
        for name in _STREAM_ATTRS:
            value = self.attribute(name)
            if value and value.isascii() and value.isdigit():
                return int(value)
        return None

    def serialize(self) -> bytes:
        """The body with CRLF line endings (byte-exact for a CRLF body we parsed)."""
        return ("\r\n".join(self.lines) + "\r\n").encode("utf-8", errors="surrogateescape")

    def without_gb_lines(self) -> bytes:
        """The body minus `y=`/`f=`, for generic SDP libraries that reject them."""
        kept = [line for line, (k, _v) in zip(self.lines, self._typed(), strict=True) if k not in ("y", "f")]
        return SessionDescription(kept).serialize()


def parse_sdp(text: str | bytes, *, max_size: int = MAX_SDP) -> SessionDescription:
    """Parse an SDP body leniently; SdpError if it is empty, oversized or not SDP at all."""
    if isinstance(text, bytes):
        if len(text) > max_size:
            raise SdpError(f"SDP body too large ({len(text)} bytes)")
        text = text.decode("utf-8", errors="surrogateescape")
    elif len(text) > max_size:
        raise SdpError(f"SDP body too large ({len(text)} characters)")
    if not text.strip():
        raise SdpError("empty SDP body")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    sdp = SessionDescription(lines)
    kinds = {k for k, _v in sdp._typed()}
    if "v" not in kinds and "m" not in kinds:
        raise SdpError("not an SDP body (no v= or m= line)")
    sdp.media  # noqa: B018 - validates every m= line now, so accessors cannot fail later
    return sdp
