"""MPEG-PS muxer for the cascade uplink and the camera simulator (gb28181.md §6.7).

Per video frame: pack header (SCR = DTS − 3600 as libmpeg does), on key frames the system
header and program stream map (the de-facto key-frame marker ZLMediaKit and SRS look for), then
PES packets of at most `max_pes_payload` bytes; only the first carries PTS/DTS (§6.5). Audio
frames get their own pack and PES. `PsDemuxer().feed(mux(f))` gives back `f`.
"""

from __future__ import annotations

import struct

from gateway.media.errors import PsError
from gateway.media.frames import Codec, MediaFrame

_STREAM_TYPE = {Codec.H264: 0x1B, Codec.H265: 0x24, Codec.G711A: 0x90, Codec.G711U: 0x91,
                Codec.AAC: 0x0F}
_AUD = {Codec.H264: b"\x00\x00\x00\x01\x09\xf0", Codec.H265: b"\x00\x00\x00\x01\x46\x01\x50"}
VIDEO_ID, AUDIO_ID = 0xE0, 0xC0


def _crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (poly 0x04C11DB7, init all ones, no reflection); only for the small PSM."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def pack_header(scr: int, mux_rate: int = 6106) -> bytes:
    """MPEG-2 pack header, no stuffing (ISO/IEC 13818-1 §2.5.3.3; SCR extension 0)."""
    scr &= (1 << 33) - 1
    return b"\x00\x00\x01\xba" + bytes((
        0x44 | ((scr >> 27) & 0x38) | ((scr >> 28) & 0x03),
        (scr >> 20) & 0xFF,
        (((scr >> 15) & 0x1F) << 3) | 0x04 | ((scr >> 13) & 0x03),
        (scr >> 5) & 0xFF,
        ((scr & 0x1F) << 3) | 0x04,
        0x01,
    )) + ((mux_rate << 2) | 3).to_bytes(3, "big") + b"\xf8"


def encode_timestamp(prefix: int, ts: int) -> bytes:
    """5-byte PTS/DTS field with the 4-bit prefix (0010, 0011 or 0001)."""
    ts &= (1 << 33) - 1
    return bytes(((prefix << 4) | ((ts >> 29) & 0x0E) | 1, (ts >> 22) & 0xFF,
                  ((ts >> 14) & 0xFE) | 1, (ts >> 7) & 0xFF, ((ts << 1) & 0xFE) | 1))


def pes_packet(stream_id: int, payload: bytes | memoryview, pts: int | None = None,
               dts: int | None = None, *, aligned: bool = False) -> bytes:
    """One PES packet with an MPEG-2 header (PTS, DTS only when it differs)."""
    if pts is None:
        opt = b""
        flags = 0
    elif dts is None or dts == pts:
        opt = encode_timestamp(0b0010, pts)
        flags = 0x80
    else:
        opt = encode_timestamp(0b0011, pts) + encode_timestamp(0b0001, dts)
        flags = 0xC0
    length = 3 + len(opt) + len(payload)
    if length > 0xFFFF:
        raise PsError("PES payload too large")
    return b"".join((b"\x00\x00\x01", bytes((stream_id,)), length.to_bytes(2, "big"),
                     bytes((0x84 if aligned else 0x80, flags, len(opt))), opt, payload))


class PsMuxer:
    """MediaFrame → PS bytes (one frame in, one PS "pack group" out)."""

    def __init__(self, video_codec: Codec, audio_codec: Codec | None = None, *,
                 max_pes_payload: int = 0xFF00, mux_rate: int = 6106, insert_aud: bool = False) -> None:
        if video_codec not in (Codec.H264, Codec.H265):
            raise PsError(f"cannot mux video codec {video_codec}")
        if audio_codec is not None and audio_codec not in _STREAM_TYPE:
            raise PsError(f"cannot mux audio codec {audio_codec}")
        if not 0 < max_pes_payload <= 0xFFFF - 13:
            raise PsError("max_pes_payload out of range")
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self.max_pes_payload = max_pes_payload
        self.mux_rate = mux_rate
        self.insert_aud = insert_aud
        self._headers = self._system_header() + self._psm()

    def _system_header(self) -> bytes:
        streams = [struct.pack(">BH", VIDEO_ID, 0xE000 | 1024)]  # scale 1: 1024 KB buffer
        if self.audio_codec is not None:
            streams.append(struct.pack(">BH", AUDIO_ID, 0xC000 | 32))  # scale 0: 32 × 128 B
        body = b"".join((((1 << 23) | (self.mux_rate << 1) | 1).to_bytes(3, "big"),
                         bytes(((1 if self.audio_codec else 0) << 2, 0xE1, 0x7F)), *streams))
        return b"\x00\x00\x01\xbb" + len(body).to_bytes(2, "big") + body

    def _psm(self) -> bytes:
        entries = [bytes((_STREAM_TYPE[self.video_codec], VIDEO_ID, 0, 0))]
        if self.audio_codec is not None:
            entries.append(bytes((_STREAM_TYPE[self.audio_codec], AUDIO_ID, 0, 0)))
        es_map = b"".join(entries)
        body = b"\xa0\xff\x00\x00" + len(es_map).to_bytes(2, "big") + es_map
        head = b"\x00\x00\x01\xbc" + (len(body) + 4).to_bytes(2, "big") + body
        return head + _crc32_mpeg2(head).to_bytes(4, "big")

    def mux(self, frame: MediaFrame) -> bytes:
        """PS bytes for one frame (raises PsError for a codec this muxer was not made for)."""
        if frame.pts is None:
            raise PsError("PS needs a PTS")
        if frame.kind == "audio":
            if frame.codec != self.audio_codec:
                raise PsError(f"audio codec {frame.codec} not configured")
            return pack_header(max(0, frame.pts - 3600), self.mux_rate) + \
                pes_packet(AUDIO_ID, frame.data, frame.pts)
        if frame.codec != self.video_codec:
            raise PsError(f"video codec {frame.codec} not configured")
        dts = frame.pts if frame.dts is None else frame.dts
        data = frame.data
        if self.insert_aud and not data.startswith(_AUD[self.video_codec]):
            data = _AUD[self.video_codec] + data
        parts = [pack_header(max(0, dts - 3600), self.mux_rate)]
        if frame.keyframe:
            parts.append(self._headers)
        view = memoryview(data)
        step = self.max_pes_payload
        parts.append(pes_packet(VIDEO_ID, view[:step], frame.pts, dts, aligned=frame.keyframe))
        for off in range(step, len(view), step):
            parts.append(pes_packet(VIDEO_ID, view[off:off + step]))
        return b"".join(parts)
