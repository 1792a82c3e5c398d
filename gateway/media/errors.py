"""Errors raised by the media cores.

GbgateError
└── MediaError             anything media-related gbgate raises on purpose
    ├── RtpError           malformed RTP packet (RFC 3550 §5.1) or RFC 4571 frame
    ├── PsError            MPEG-PS that cannot be muxed (the demuxer never raises: it counts)
    ├── FlvError           FLV muxing input we cannot express (unsupported codec, bad parameter sets)
    └── NalError           H.264/H.265 parameter set that cannot be parsed

Remote garbage is always local-recoverable: parsers raise these, streaming
demuxers/deframers count and skip instead (house rule 8).
"""

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
