"""Media frame values and RTP frame assembly (sans-IO).

GB/T 28181 sends one video frame (one PS "pack group") as RTP packets that share one
timestamp; the marker bit ends it (GB/T 28181-2022 §C.2 made the shared timestamp explicit).
Dahua sends the PS headers and the audio in packets of their own that carry the same
timestamp and their own marker, so a frame is ended by the marker *or* by a timestamp change
(ZLMediaKit's rule); a continuation after a marker with the same timestamp is just a new chunk
of the same PS stream, which the streaming PS demuxer joins (gb28181.md §6.1, §6.6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.media.rtp import RtpPacket


class Codec(StrEnum):
    """Elementary stream codecs seen in GB PS (gb28181.md §6.5 stream types)."""

    H264 = "h264"
    H265 = "h265"
    AAC = "aac"
    G711A = "g711a"
    G711U = "g711u"
    UNKNOWN = "unknown"

    @property
    def is_video(self) -> bool:
        return self in (Codec.H264, Codec.H265)


@dataclass(slots=True, frozen=True)
class MediaFrame:
    """One access unit (video, Annex-B) or one audio PES payload, timestamps in 90 kHz."""

    kind: str  # "video" | "audio"
    codec: Codec
    data: bytes
    pts: int | None
    dts: int | None
    keyframe: bool
    stream_id: int = field(default=0xE0, compare=False)
    # Positions of every 00 00 01 start code in `data`, when the demuxer already found them
    # (H.264/H.265): the FLV muxer reuses them instead of scanning the frame again.
    nals: tuple[int, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True, frozen=True)
class RtpFrame:
    """The concatenated RTP payloads of one frame (one RTP timestamp)."""

    timestamp: int
    payload: bytes
    gap: bool  # a sequence gap touched this frame: its PS bytes are incomplete
    packets: int
    marker: bool  # ended by the marker bit (False: ended by a timestamp change or flush)


class FrameAssembler:
    """Groups in-order RTP packets into frames by timestamp; counts gaps itself.

    Feed it the output of `ReorderBuffer.push`. A sequence jump inside one timestamp marks
    the frame `gap=True` (ZLMediaKit drops such frames; the caller decides). A jump at a frame
    boundary marks the new frame, and the open one too if it had no marker yet, because the
    lost packets could belong to either.
    """

    __slots__ = ("_gap", "_next_seq", "_packets", "_parts", "_size", "_ts",
                 "frames", "gap_frames", "max_frame_bytes", "oversize")

    def __init__(self, *, max_frame_bytes: int = 8 << 20) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._ts: int | None = None
        self._parts: list[bytes | memoryview] = []
        self._size = 0
        self._packets = 0
        self._gap = False
        self._next_seq: int | None = None  # the sequence number after the last one added
        self.frames = 0
        self.gap_frames = 0
        self.oversize = 0

    def push(self, packet: RtpPacket) -> list[RtpFrame]:
        """Add one packet; return the frames it completed (0, 1 or 2)."""
        return self.add(packet.sequence, packet.timestamp, packet.marker, packet.payload) or []

    def add(self, sequence: int, timestamp: int, marker: int | bool,
            payload: bytes | memoryview) -> list[RtpFrame] | None:
        """`push` from the header fields (the receiver's fast path); None when no frame ended.

        The common packet — the next sequence number, in the open frame's timestamp or opening a
        frame — is taken here in a few comparisons; everything else goes through `_add`."""
        if sequence == self._next_seq:
            ts = self._ts
            if timestamp == ts or ts is None:
                size = self._size + len(payload)
                if size <= self.max_frame_bytes:
                    self._next_seq = (sequence + 1) & 0xFFFF
                    if ts is None:
                        self._ts = timestamp
                        self._gap = False
                    self._size = size
                    self._parts.append(payload)
                    self._packets += 1
                    if marker:
                        out: list[RtpFrame] = []
                        self._emit(out, marker=True)
                        return out
                    return None
        return self._add(sequence, timestamp, marker, payload)

    def _add(self, sequence: int, timestamp: int, marker: int | bool,
             payload: bytes | memoryview) -> list[RtpFrame] | None:
        out: list[RtpFrame] | None = None
        nxt = self._next_seq
        jumped = nxt is not None and sequence != nxt
        self._next_seq = (sequence + 1) & 0xFFFF
        if self._ts is None:
            self._ts = timestamp
            self._gap = jumped
        elif timestamp != self._ts:
            if jumped:
                self._gap = True  # the lost packets may have belonged to the open frame
            out = []
            self._emit(out, marker=False)
            self._ts = timestamp
            self._gap = jumped
        elif jumped:
            self._gap = True
        self._size += len(payload)
        if self._size > self.max_frame_bytes:
            # A frame this big is a broken sender: keep the memory bounded, flag the frame.
            self.oversize += 1
            self._parts.clear()
            self._size = 0
            self._gap = True
        else:
            self._parts.append(payload)
        self._packets += 1
        if marker:
            if out is None:
                out = []
            self._emit(out, marker=True)
        return out

    def flush(self) -> list[RtpFrame]:
        """Emit the open frame, e.g. when the stream stops."""
        out: list[RtpFrame] = []
        if self._ts is not None:
            self._emit(out, marker=False)
        return out

    def _emit(self, out: list[RtpFrame], *, marker: bool) -> None:
        assert self._ts is not None
        frame = RtpFrame(self._ts, b"".join(self._parts), self._gap, self._packets, marker)
        self.frames += 1
        if self._gap:
            self.gap_frames += 1
        out.append(frame)
        self._ts = None
        self._parts = []
        self._size = 0
        self._packets = 0
        self._gap = False
