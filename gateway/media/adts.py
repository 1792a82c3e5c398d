"""Raw AAC frames (MP4, FLV/RTMP, RTSP MPEG4-GENERIC) → ADTS, the form the hub carries (sans-IO).

GB PS carries AAC as ADTS (ISO/IEC 13818-7 §6.2), so the hub and the FLV muxer take ADTS. Pulled
sources give raw frames and the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) once, as extradata:
`AdtsWrapper` puts a 7-byte header (no CRC) in front of each frame.
"""

from __future__ import annotations

from gateway.media.errors import MediaError

MAX_FRAME = 0x1FFF - 7  # the 13-bit frame length counts the header


class AdtsWrapper:
    """One stream's raw AAC frames → ADTS frames."""

    __slots__ = ("_head",)

    def __init__(self, asc: bytes | None) -> None:
        self._head: tuple[int, int, int] | None = None
        if not asc:
            return  # MPEG-TS style sources send ADTS already; anything else is refused per frame
        if len(asc) < 2:
            raise MediaError("truncated AudioSpecificConfig")
        aot = asc[0] >> 3
        sfi = ((asc[0] & 0x07) << 1) | (asc[1] >> 7)
        channels = (asc[1] >> 3) & 0x0F
        if not 1 <= aot <= 4 or sfi > 12 or channels > 7:
            raise MediaError(f"AAC config not expressible in ADTS (object {aot}, rate index {sfi}, {channels} ch)")
        # syncword, MPEG-4, layer 0, no CRC | profile, rate index, private 0, channels (high bit)
        self._head = (0xFFF1, ((aot - 1) << 6) | (sfi << 2) | (channels >> 2), (channels & 0x03) << 6)

    def wrap(self, raw: bytes) -> bytes:
        if len(raw) >= 7 and raw[0] == 0xFF and raw[1] & 0xF6 == 0xF0:
            return raw  # already ADTS
        if self._head is None:
            raise MediaError("raw AAC without an AudioSpecificConfig")
        n = len(raw) + 7
        if n - 7 > MAX_FRAME:
            raise MediaError("AAC frame too long for ADTS")
        sync, b2, b3 = self._head
        return bytes((sync >> 8, sync & 0xFF, b2, b3 | (n >> 11), (n >> 3) & 0xFF, ((n & 0x07) << 5) | 0x1F,
                      0xFC)) + raw
