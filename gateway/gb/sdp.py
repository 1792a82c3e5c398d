"""GB/T 28181 SDP (our notes §5.3–5.5): a tolerant parse/serialize pair and play builders.

`SessionDescription` keeps every line as received, in order (unknown lines and the GB
extensions `y=` SSRC and `f=` media description included), so serialising a CRLF body
gives back the same bytes; accessors read typed values on demand. Generic SDP libraries
reject `y=`/`f=`, hence a home-grown parser.

Transport naming follows WVP's per-device "stream mode", from the platform's side:
UDP; TCP_PASSIVE (platform listens, device connects: offer `a=setup:passive`);
TCP_ACTIVE (platform connects to the device's port from the answer: offer `a=setup:active`).
"""

import re
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.gb.errors import SdpError

MAX_SDP = 65536
_LINE = re.compile(r"\s*([A-Za-z])\s*=(.*)\Z", re.DOTALL)
_DIGITS = re.compile(r"[0-9]{1,10}\Z")

#: WVP's default offer: PS first, then MPEG-4, H.264, H.265 (§5.3).
OFFER_RTPMAP: tuple[tuple[int, str], ...] = (
    (96, "PS/90000"),
    (97, "MPEG4/90000"),
    (98, "H264/90000"),
    (99, "H265/90000"),
)
_DIRECTIONS = frozenset({"sendonly", "recvonly", "sendrecv", "inactive"})
_STREAM_ATTRS = ("streamnumber", "stream", "streamprofile")


class MediaTransport(StrEnum):
    """How RTP flows, from the platform's point of view (§5.5)."""

    UDP = "UDP"
    TCP_PASSIVE = "TCP-PASSIVE"
    TCP_ACTIVE = "TCP-ACTIVE"

    @property
    def is_tcp(self) -> bool:
        return self is not MediaTransport.UDP


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


# --------------------------------------------------------------------------- GB play sessions


def _ip_line(ip: str) -> str:
    return f"IN {'IP6' if ':' in ip else 'IP4'} {ip}"


def _check_ssrc(ssrc: str) -> str:
    if not _DIGITS.match(ssrc):
        raise SdpError(f"SSRC {ssrc!r} is not 1–10 decimal digits")
    return ssrc


def _check_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise SdpError(f"port {port} out of range")
    return port


def build_play_offer(
    *,
    channel_id: str,
    media_ip: str,
    media_port: int,
    ssrc: str,
    transport: MediaTransport,
    session: str = "Play",
    stream_number: int | None = None,
    start: int = 0,
    stop: int = 0,
    download_speed: int | None = None,
    stream_attribute: str = "streamnumber",
    origin_user: str | None = None,
) -> bytes:
    """The INVITE offer WVP sends (§5.6/§5.7): recvonly, PS 96 + 97 98 99, `y=` last.

    Playback/Download add `u=<channel>:0` and the Unix-epoch `t=` window; TCP adds
    `a=setup` (passive = we listen) and `a=connection:new`.
    """
    _check_ssrc(ssrc)
    _check_port(media_port)
    proto = "TCP/RTP/AVP" if transport.is_tcp else "RTP/AVP"
    history = session.lower() in ("playback", "download")
    lines = ["v=0", f"o={origin_user or channel_id} 0 0 {_ip_line(media_ip)}", f"s={session}"]
    if history:
        lines.append(f"u={channel_id}:0")
    lines += [f"c={_ip_line(media_ip)}", f"t={start if history else 0} {stop if history else 0}"]
    lines.append(f"m=video {media_port} {proto} {' '.join(str(pt) for pt, _e in OFFER_RTPMAP)}")
    lines.append("a=recvonly")
    lines += [f"a=rtpmap:{pt} {enc}" for pt, enc in OFFER_RTPMAP]
    if transport is MediaTransport.TCP_PASSIVE:
        lines += ["a=setup:passive", "a=connection:new"]
    elif transport is MediaTransport.TCP_ACTIVE:
        lines += ["a=setup:active", "a=connection:new"]
    if download_speed is not None:
        lines.append(f"a=downloadspeed:{int(download_speed)}")
    if stream_number is not None:
        lines.append(f"a={stream_attribute}:{int(stream_number)}")
    lines.append(f"y={ssrc}")
    return SessionDescription(lines).serialize()


def build_play_answer(
    *,
    channel_id: str,
    media_ip: str,
    media_port: int,
    ssrc: str,
    transport: MediaTransport,
    session: str = "Play",
    start: int = 0,
    stop: int = 0,
    filesize: int | None = None,
    f: str | None = "",
) -> bytes:
    """A device's 200 OK SDP (simulated devices, cascade): sendonly, PS 96, `y=`, `f=`.

    `transport` is the negotiated mode from the platform's side, so the answer's
    `a=setup` is the reverse: TCP_PASSIVE → `active` (we connect), TCP_ACTIVE →
    `passive` (we listen on `media_port`).
    """
    _check_ssrc(ssrc)
    _check_port(media_port)
    proto = "TCP/RTP/AVP" if transport.is_tcp else "RTP/AVP"
    lines = [
        "v=0",
        f"o={channel_id} 0 0 {_ip_line(media_ip)}",
        f"s={session}",
        f"c={_ip_line(media_ip)}",
        f"t={start} {stop}",
        f"m=video {media_port} {proto} 96",
        "a=sendonly",
        "a=rtpmap:96 PS/90000",
    ]
    if transport is MediaTransport.TCP_PASSIVE:
        lines += ["a=setup:active", "a=connection:new"]
    elif transport is MediaTransport.TCP_ACTIVE:
        lines += ["a=setup:passive", "a=connection:new"]
    if filesize is not None:
        lines.append(f"a=filesize:{int(filesize)}")
    lines.append(f"y={ssrc}")
    if f is not None:
        lines.append(f"f={f}")
    return SessionDescription(lines).serialize()


@dataclass(frozen=True, slots=True)
class PlayAnswer:
    """Where the device sends from / listens on, and the SSRC to filter on.

    The answer's `y=` wins over the offer's (§5.4); `ssrc=None` means accept any SSRC
    on that port (lock to the first seen).
    """

    ip: str
    port: int
    transport: MediaTransport
    ssrc: str | None
    setup: str | None
    session_name: str | None = None
    filesize: int | None = None
    sdp: SessionDescription | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PlayOffer:
    """What an INVITE asks of us as the sender (simulated device, cascade, §7.5)."""

    ip: str
    port: int
    transport: MediaTransport
    ssrc: str | None
    setup: str | None
    session_name: str
    channel_id: str | None
    start: int
    stop: int
    stream_number: int | None = None
    download_speed: int | None = None
    sdp: SessionDescription | None = field(default=None, compare=False, repr=False)


def _video(sdp: SessionDescription) -> MediaDescription:
    media = sdp.media
    if not media:
        raise SdpError("no m= line")
    return next((m for m in media if m.kind.lower() == "video"), media[0])


def _endpoint(sdp: SessionDescription, section: MediaDescription) -> str:
    ip = section.connection_address or sdp.connection_address
    if not ip:
        raise SdpError("no c= address")
    return ip


def _setup_of(sdp: SessionDescription, section: MediaDescription) -> str | None:
    value = section.attribute("setup")
    if value is None:
        return sdp.setup
    return value.lower() or None


def _int_attr(section: MediaDescription, sdp: SessionDescription, name: str) -> int | None:
    value = section.attribute(name) or sdp.attribute(name)
    return int(value) if value and value.isascii() and value.isdigit() else None


def parse_answer(body: str | bytes, offered: MediaTransport | None = None) -> PlayAnswer:
    """Read a device's answer. TCP roles come from its `a=setup` (active → it connects).

    A TCP answer without `a=setup` keeps the offered TCP mode (TCP_PASSIVE if unknown);
    a UDP answer to a TCP offer is reported as UDP: follow it or BYE (§5.5).
    """
    sdp = parse_sdp(body)
    section = _video(sdp)
    setup = _setup_of(sdp, section)
    if not section.is_tcp:
        transport = MediaTransport.UDP
    elif setup == "passive":
        transport = MediaTransport.TCP_ACTIVE
    elif setup == "active":
        transport = MediaTransport.TCP_PASSIVE
    else:
        transport = offered if offered is not None and offered.is_tcp else MediaTransport.TCP_PASSIVE
    return PlayAnswer(
        ip=_endpoint(sdp, section),
        port=section.port,
        transport=transport,
        ssrc=sdp.ssrc,
        setup=setup,
        session_name=sdp.session_name,
        filesize=_int_attr(section, sdp, "filesize"),
        sdp=sdp,
    )


def parse_offer(body: str | bytes) -> PlayOffer:
    """Read an INVITE offer as the media sender. `a=setup:passive` → the offerer listens."""
    sdp = parse_sdp(body)
    section = _video(sdp)
    setup = _setup_of(sdp, section)
    if not section.is_tcp:
        transport = MediaTransport.UDP
    elif setup == "active":
        transport = MediaTransport.TCP_ACTIVE
    else:
        transport = MediaTransport.TCP_PASSIVE
    uri = sdp.uri
    channel = uri.split(":", 1)[0] if uri else None
    start, stop = sdp.timing or (0, 0)
    return PlayOffer(
        ip=_endpoint(sdp, section),
        port=section.port,
        transport=transport,
        ssrc=sdp.ssrc,
        setup=setup,
        session_name=sdp.session_name or "Play",
        channel_id=channel or None,
        start=start,
        stop=stop,
        stream_number=sdp.stream_number,
        download_speed=_int_attr(section, sdp, "downloadspeed"),
        sdp=sdp,
    )
