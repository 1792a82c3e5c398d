"""Errors raised by the media cores.

GbgateError
└── MediaError             anything media-related gbgate raises on purpose
    ├── RtpError           malformed RTP packet (RFC 3550 §5.1) or RFC 4571 frame
    ├── PsError            MPEG-PS that cannot be muxed (the demuxer never raises: it counts)
    ├── FlvError           FLV muxing input we cannot express (unsupported codec, bad parameter sets)
    ├── NalError           H.264/H.265 parameter set that cannot be parsed
    └── StreamError        no stream for a viewer (status 502); carries an HTTP status hint and
        │                  the INVITE trace, so the API can say why there is no stream
        ├── ChannelNotFound    404
        ├── DeviceUnavailable  409 (offline / not registered)
        ├── NotAdmitted        403 (whitelist says no)
        ├── StreamTimeout      504 (no keyframe within media.invite_timeout)
        └── StreamEnded        410 (device BYE / gone while waiting)

Remote garbage is always local-recoverable: parsers raise these, streaming
demuxers/deframers count and skip instead (house rule 8).
"""

from typing import Any

from gateway.errors import GbgateError


class MediaError(GbgateError):
    """Base of every media error."""


class RtpError(MediaError):
    """An RTP packet or its framing is malformed."""


class PsError(MediaError):
    """A program stream cannot be produced from the given input."""


class FlvError(MediaError):
    """An FLV tag cannot be produced from the given input."""


class NalError(MediaError):
    """An H.264/H.265 NAL unit (usually an SPS) cannot be parsed."""


class StreamError(MediaError):
    """A viewer cannot have the stream; `status`/`code` feed the API's error body."""

    status = 502
    code = "stream_failed"

    def __init__(self, message: str, *, trace: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.trace = trace or []


class ChannelNotFound(StreamError):
    status, code = 404, "channel_not_found"


class DeviceUnavailable(StreamError):
    status, code = 409, "device_unavailable"


class NotAdmitted(StreamError):
    status, code = 403, "not_admitted"


class StreamTimeout(StreamError):
    status, code = 504, "stream_timeout"


class StreamEnded(StreamError):
    status, code = 410, "stream_ended"
