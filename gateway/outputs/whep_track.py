"""The aiortc side of WHEP: the track that turns hub frames into av.Packets, and the HEVC transcoder.

Split from gateway.outputs.whep so that importing the gateway does not load aiortc and PyAV
(tens of MB of RSS); this module is imported on the first WebRTC viewer.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import ParameterSets, parameter_sets
from gateway.outputs.frame_source import FrameSource

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
BURST_STEP = 90  # 1 ms between cached-GOP frames
DEFAULT_STEP = 3600  # 40 ms when the source has no usable timestamp
MAX_STEP = 90000  # a jump over 1 s (wrap, device restart) is treated as one frame
_PTS_WRAP = 1 << 33
START4 = b"\x00\x00\x00\x01"


def with_parameter_sets(data: bytes, ps: ParameterSets | None) -> bytes:
    """Put SPS/PPS in front of an H.264 IDR access unit that lacks them (a decoder needs them
    before the first slice; many cameras send them only once per session)."""
    if ps is None or not ps.complete:
        return data
    assert ps.sps is not None and ps.pps is not None
    return b"".join((START4, ps.sps, START4, ps.pps, data))


class HevcTranscoder:
    """H.265 Annex-B access units → H.264 Annex-B access units. Blocking: call in a worker thread."""

    def __init__(self, *, bitrate: int | None = None) -> None:
        self._dec = av.CodecContext.create("hevc", "r")
        self._enc: Any = None
        self._size: tuple[int, int] | None = None
        self._bitrate = bitrate
        self._n = 0
        self.frames_in = 0
        self.frames_out = 0

    def _encoder(self, width: int, height: int) -> Any:
        if self._enc is None or self._size != (width, height):
            enc: Any = av.CodecContext.create("libx264", "w")
            enc.width, enc.height = width, height
            enc.pix_fmt = "yuv420p"
            enc.time_base = fractions.Fraction(1, 90000)
            enc.framerate = fractions.Fraction(25, 1)
            enc.bit_rate = self._bitrate or max(500_000, min(4_000_000, width * height * 3))
            enc.gop_size = 600  # IDRs follow the source's IRAPs (forced below), not a timer
            enc.profile = "Baseline"
            # no global header: x264 repeats SPS/PPS before every IDR (Annex-B in-band)
            enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
            self._enc = enc
            self._size = (width, height)
        return self._enc

    def feed(self, data: bytes, keyframe: bool) -> list[tuple[bytes, bool]]:
        """Decode one H.265 AU and return the H.264 AUs it produced as (Annex-B bytes, keyframe)."""
        self.frames_in += 1
        out: list[tuple[bytes, bool]] = []
        for frame in self._dec.decode(av.Packet(data)):
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")  # Main10 and 4:2:2/4:4:4 sources
            enc = self._encoder(frame.width, frame.height)
            first = self.frames_out == 0 and not out
            frame.pict_type = av.video.frame.PictureType.I if (keyframe or first) else \
                av.video.frame.PictureType.NONE
            frame.pts = self._n
            frame.time_base = enc.time_base
            self._n += 3600
            for pkt in enc.encode(frame):
                out.append((bytes(pkt), bool(pkt.is_keyframe)))
        self.frames_out += len(out)
        return out


class FrameTrack(MediaStreamTrack):
    """A video track whose `recv()` yields `av.Packet`s (H.264 Annex-B) from hub MediaFrames."""

    kind = "video"

    def __init__(self, source: FrameSource, *, max_queue: int = 64,
                 transcoder: Callable[[], HevcTranscoder | None] | None = None,
                 initial_ps: ParameterSets | None = None) -> None:
        super().__init__()
        self._source = source
        self.max_queue = max_queue
        self._queue: deque[MediaFrame] = deque()
        self._wake = asyncio.Event()
        self._need_key = True
        self._burst = len(source)  # the cached GOP the hub primed us with
        self._ended = False
        self._ps: ParameterSets | None = initial_ps if initial_ps is not None and initial_ps.complete else None
        self._make_transcoder = transcoder
        self._transcoder: HevcTranscoder | None = None
        self._pending: deque[tuple[bytes, bool, int]] = deque()
        self._out_pts = 0
        self._last_src: int | None = None
        self._started = False
        self.sent = 0
        self.dropped = 0
        self.drop_events = 0
        self.end_reason: str | None = None
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    # -- intake ----------------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            async for frame in self._source:
                if frame.kind == "video":
                    self._offer(frame)
            self.end_reason = getattr(self._source, "reason", None) or "source_ended"
        except asyncio.CancelledError:
            self.end_reason = self.end_reason or "cancelled"
        finally:
            self._ended = True
            self._wake.set()

    def _offer(self, frame: MediaFrame) -> None:
        """Queue one frame; never waits. Overflow → empty the queue, resume at a keyframe."""
        if self._need_key:
            if not frame.keyframe:
                self.dropped += 1
                return
            self._need_key = False
        q = self._queue
        if len(q) >= self.max_queue + self._burst:
            self.dropped += len(q)
            self.drop_events += 1
            q.clear()
            self._burst = 0
            if not frame.keyframe:
                self._need_key = True
                self.dropped += 1
                return
        q.append(frame)
        self._wake.set()

    async def _next_frame(self) -> MediaFrame:
        while not self._queue:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._wake.clear()
            await self._wake.wait()
        return self._queue.popleft()

    # -- timestamps ------------------------------------------------------------------------

    def _step(self, frame: MediaFrame, burst: bool) -> None:
        """Advance the output pts (90 kHz) for the frame just taken: burst frames 1 ms apart, live
        frames by the source's own spacing (decode order), jumps and gaps squeezed to one frame."""
        src = frame.dts if frame.dts is not None else frame.pts
        if not self._started:
            self._started = True
            step = 0
        elif burst:
            step = BURST_STEP
        elif src is None or self._last_src is None:
            step = DEFAULT_STEP
        else:
            step = (src - self._last_src) % _PTS_WRAP
            if step == 0 or step > MAX_STEP:
                step = DEFAULT_STEP if step else 1
        if src is not None:
            self._last_src = src
        self._out_pts += step

    # -- aiortc side -----------------------------------------------------------------------

    async def recv(self) -> av.Packet[Any]:
        while True:
            if self._pending:
                data, key, pts = self._pending.popleft()
                return self._packet(data, key, pts)
            if not self._started:
                # ICE + DTLS took a while: what queued up meanwhile is backlog, not live; send it
                # as part of the burst so the browser starts at "now", not seconds behind
                self._burst = max(self._burst, len(self._queue))
            try:
                frame = await self._next_frame()
            except MediaStreamError:
                self.stop()
                raise
            burst = self._burst > 0
            if burst:
                self._burst -= 1
            self._step(frame, burst)
            if frame.codec == Codec.H264:
                return self._packet(frame.data, frame.keyframe, self._out_pts)
            if frame.codec == Codec.H265:
                tx = self._transcoder
                if tx is None:
                    tx = self._transcoder = self._make_transcoder() if self._make_transcoder else None
                    if tx is None:
                        self.end_reason = "h265_refused"
                        self.stop()
                        raise MediaStreamError
                try:
                    produced = await asyncio.to_thread(tx.feed, frame.data, frame.keyframe)
                except av.error.FFmpegError:  # corrupt input: skip to the next keyframe
                    self._need_key = True
                    self._queue.clear()
                    continue
                pts = self._out_pts
                self._pending.extend((d, k, pts) for d, k in produced)
            # other codecs: nothing we can send; skip

    def _packet(self, data: bytes, key: bool, pts: int) -> av.Packet[Any]:
        if key:
            ps = parameter_sets(Codec.H264, data)
            if ps.complete:
                self._ps = ps
            else:
                data = with_parameter_sets(data, self._ps)
        packet = av.Packet(data)
        packet.pts = pts
        packet.dts = pts
        packet.time_base = VIDEO_TIME_BASE
        self.sent += 1
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self._source.close(self.end_reason or "viewer_left")
            self._pump_task.cancel()
            self._wake.set()
        super().stop()


def h264_preferences() -> list[Any]:
    """aiortc's H.264 capabilities (and RTX), in its order; VP8 left out on purpose."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in caps if c.mimeType.lower() in ("video/h264", "video/rtx")]
