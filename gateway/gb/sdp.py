"""GB/T 28181 media-session SDP (our notes §5.3–5.5): play offer/answer builders and readers.

The line-preserving parser lives in `gateway.gb.sdpbody` and is re-exported here.
Transport naming follows WVP's per-device "stream mode", from the platform's side:
UDP; TCP_PASSIVE (platform listens, device connects: offer `a=setup:passive`);
TCP_ACTIVE (platform connects to the device's port from the answer: offer `a=setup:active`).
"""

import re
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.gb.errors import SdpError
from gateway.gb.sdpbody import MAX_SDP, MediaDescription, SessionDescription, parse_sdp

__all__ = [
    "MAX_SDP",
    "OFFER_RTPMAP",
    "MediaDescription",
    "MediaTransport",
    "PlayAnswer",
    "PlayOffer",
    "SessionDescription",
    "build_play_answer",
    "build_play_offer",
    "parse_answer",
    "parse_offer",
    "parse_sdp",
]

_DIGITS = re.compile(r"[0-9]{1,10}\Z")

#: WVP's default offer: PS first, then MPEG-4, H.264, H.265 (§5.3).
OFFER_RTPMAP: tuple[tuple[int, str], ...] = (
    (96, "PS/90000"),
    (97, "MPEG4/90000"),
    (98, "H264/90000"),
    (99, "H265/90000"),
)


class MediaTransport(StrEnum):
    """How RTP flows, from the platform's point of view (§5.5)."""

    UDP = "UDP"
    TCP_PASSIVE = "TCP-PASSIVE"
    TCP_ACTIVE = "TCP-ACTIVE"

    @property
    def is_tcp(self) -> bool:
        return self is not MediaTransport.UDP


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
