"""RTP packets (RFC 3550 §5.1): parse, serialize, packetize one frame.

GB/T 28181 carries MPEG-PS as RTP PT 96 with a 90 kHz clock; every packet of one frame shares
its timestamp and the marker ends the frame (gb28181.md §6.1, §6.7). Parsing is one
`struct.unpack_from` plus `memoryview` slicing: the payload is not copied.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gateway.media.errors import RtpError

_HEADER = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")
RTP_HEADER_SIZE = 12
RTCP_PACKET_TYPES = range(200, 205)  # SR, RR, SDES, BYE, APP (RFC 3550 §12.1)


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet. `padding` is the number of padding octets (0: P bit clear).

    `extension` is `(profile, data)` of the RFC 3550 §5.3.1 header extension or None.
    """

    version: int = 2
    padding: int = 0
    marker: bool = False
    payload_type: int = 96
    sequence: int = 0
    timestamp: int = 0
    ssrc: int = 0
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    payload: bytes | memoryview = b""

    def serialize(self) -> bytes:
        """Byte-exact inverse of `parse_rtp` (padding is re-created as zeros + count)."""
        cc = len(self.csrc)
        if cc > 15:
            raise RtpError("more than 15 CSRCs")
        b0 = (self.version << 6) | (0x20 if self.padding else 0) | (0x10 if self.extension else 0) | cc
        b1 = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        parts = [_HEADER.pack(b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF,
                              self.ssrc & 0xFFFFFFFF)]
        if cc:
            parts.append(struct.pack(f"!{cc}I", *self.csrc))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError("extension length is not a multiple of 4")
            parts.append(_EXT.pack(profile, len(data) // 4))
            parts.append(bytes(data))
        parts.append(bytes(self.payload))
        if self.padding:
            if not 1 <= self.padding <= 255:
                raise RtpError("padding must be 1..255 octets")
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def is_rtcp(data: bytes | memoryview) -> bool:
    """True for an RTCP packet interleaved in the RTP flow (second byte 200–204, §6.1)."""
    return len(data) >= 2 and data[1] in RTCP_PACKET_TYPES


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one RTP packet; the payload is a memoryview into `data`. Raises RtpError."""
    n = len(data)
    if n < RTP_HEADER_SIZE:
        raise RtpError(f"RTP packet too short ({n} bytes)")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    view = data if isinstance(data, memoryview) else memoryview(data)
    pos = RTP_HEADER_SIZE
    cc = b0 & 0x0F
    csrc: tuple[int, ...] = ()
    if cc:
        end = pos + 4 * cc
        if end > n:
            raise RtpError("CSRC list runs past the packet")
        csrc = struct.unpack_from(f"!{cc}I", data, pos)
        pos = end
    extension = None
    if b0 & 0x10:
        if pos + 4 > n:
            raise RtpError("extension header runs past the packet")
        profile, words = _EXT.unpack_from(data, pos)
        end = pos + 4 + 4 * words
        if end > n:
            raise RtpError("extension runs past the packet")
        extension = (profile, bytes(view[pos + 4:end]))
        pos = end
    end = n
    padding = 0
    if b0 & 0x20:
        padding = data[n - 1]
        if padding == 0 or pos + padding > n:
            raise RtpError(f"bad RTP padding count {padding}")
        end = n - padding
    return RtpPacket(2, padding, bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, csrc, extension,
                     view[pos:end])


def packetize(payload: bytes | memoryview, *, ssrc: int, payload_type: int = 96, timestamp: int,
              first_sequence: int, mtu: int = 1400, marker_last: bool = True) -> list[bytes]:
    """Cut one frame's bytes into RTP packets of at most `mtu` payload octets (§6.7).

    All packets share `timestamp`; sequence numbers continue from `first_sequence` modulo
    2^16; the marker is set on the last packet when `marker_last`.
    """
    if mtu <= 0:
        raise RtpError("mtu must be positive")
    view = memoryview(payload)
    total = len(view)
    count = max(1, -(-total // mtu))
    ssrc &= 0xFFFFFFFF
    timestamp &= 0xFFFFFFFF
    pt = payload_type & 0x7F
    pack = _HEADER.pack
    out = []
    for i in range(count):
        last = i == count - 1
        b1 = pt | (0x80 if last and marker_last else 0)
        out.append(pack(0x80, b1, (first_sequence + i) & 0xFFFF, timestamp, ssrc)
                   + view[i * mtu:(i + 1) * mtu])
    return out
