"""WHEP egress: one aiortc peer connection per viewer, fed from a hub "frames" subscription.

Shape (RFC 9725 WHIP mirrored for egress, draft-ietf-wish-whep): the viewer POSTs an SDP offer,
gets a 201 with the SDP answer and a Location naming its session resource; DELETE on that resource
ends it. aiortc gathers every candidate before answering, so there is no trickle ICE (PATCH → 405).

H.264 is never re-encoded (architecture.md rule 11): `FrameTrack.recv()` returns `av.Packet`s
holding the hub's Annex-B access units, and aiortc's `H264Encoder.pack()` only splits them at start
codes and packetizes (RFC 6184 STAP-A/FU-A). The transceiver is restricted to H.264 so the browser's
VP8 preference cannot win the negotiation.

Per viewer the track keeps its own bounded queue on top of the hub's (rule 12): it starts at a
keyframe (the hub primes it from the GOP cache), puts SPS/PPS in front of a keyframe that lacks
them, and on overflow empties the queue and waits for the next keyframe. The cached GOP is sent as
a burst with timestamps 1 ms apart, so the browser decodes it at once and shows the live picture
instead of replaying the last seconds; so are the frames that queued up while ICE/DTLS connected.

H.265 sources — decision: TRANSCODE. aiortc speaks VP8/H.264 only (architecture.md §4). An
H.265 channel is decoded with PyAV and encoded to H.264 (libx264 ultrafast/zerolatency, an IDR at
every source IRAP) frame by frame in a worker thread (`asyncio.to_thread`), one transcoder per
viewer, at most `max_transcodes` per process; beyond that the offer is refused with 503
`transcode_busy`. The per-viewer queue bounds the backlog: a transcoder that falls behind drops to
the next keyframe like any slow viewer.

Errors (rooted at GbgateError; `status`/`code` feed the JSON error body):

    WhepError               500
    ├── BadOffer            400  not an SDP offer we can answer (no video m-line we can send to)
    ├── NoCommonCodec       415  the offer has no H.264 (packetization-mode 1)
    ├── SessionNotFound     404  DELETE of an unknown session resource
    ├── TooManySessions     503  max_sessions peer connections already open
    └── TranscodeBusy       503  an H.265 channel and every transcoder slot in use
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from gateway.errors import GbgateError
from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import ParameterSets, parameter_sets

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
BURST_STEP = 90  # 1 ms between cached-GOP frames
DEFAULT_STEP = 3600  # 40 ms when the source has no usable timestamp
MAX_STEP = 90000  # a jump over 1 s (wrap, device restart) is treated as one frame
_PTS_WRAP = 1 << 33
START4 = b"\x00\x00\x00\x01"


class WhepError(GbgateError):
    status = 500
    code = "whep_failed"


class BadOffer(WhepError):
    status, code = 400, "bad_offer"


class NoCommonCodec(WhepError):
    status, code = 415, "no_common_codec"


class SessionNotFound(WhepError):
    status, code = 404, "session_not_found"


class TooManySessions(WhepError):
    status, code = 503, "too_many_sessions"


class TranscodeBusy(WhepError):
    status, code = 503, "transcode_busy"


class FrameSource(Protocol):
    """A hub subscription of kind "frames" (gateway.media.hub.Subscription)."""

    closed: bool

    def __aiter__(self) -> Any: ...

    def __len__(self) -> int: ...

    def close(self, reason: str = ...) -> None: ...


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
        self.first_sent_at: float | None = None
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
        if self.first_sent_at is None:
            self.first_sent_at = time.monotonic()
        self.sent += 1
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self._source.close(self.end_reason or "viewer_left")
            self._pump_task.cancel()
            self._wake.set()
        super().stop()


@dataclass(slots=True, eq=False)
class WhepSession:
    """One viewer: its peer connection, track and hub subscription."""

    id: str
    channel_id: str
    pc: RTCPeerConnection
    track: FrameTrack
    source: FrameSource
    transcoding: bool
    created: float = field(default_factory=time.monotonic)
    closed: bool = False
    close_reason: str | None = None
    timer: asyncio.TimerHandle | None = None

    def info(self) -> dict[str, Any]:
        t = self.track
        return {"session_id": self.id, "channel_id": self.channel_id, "state": self.pc.connectionState,
                "age_s": round(time.monotonic() - self.created, 3), "frames_sent": t.sent,
                "frames_dropped": t.dropped, "drop_events": t.drop_events, "transcoding": self.transcoding}


def check_offer(sdp: str) -> None:
    """Refuse, cheaply and before any stream is opened, an offer we could never answer."""
    if not sdp.lstrip().startswith("v=0"):
        raise BadOffer("the body is not an SDP offer")
    try:
        desc = SessionDescription.parse(sdp)
    except Exception as exc:
        raise BadOffer(f"the SDP offer cannot be parsed: {exc}") from None
    videos = [m for m in desc.media if m.kind == "video"]
    if not any(m.direction in (None, "recvonly", "sendrecv") for m in videos):
        raise BadOffer("the offer has no video m-line that can receive")
    if not any(c.mimeType.lower() == "video/h264" and str(c.parameters.get("packetization-mode", "0")) == "1"
               for m in videos for c in m.rtp.codecs):
        raise NoCommonCodec("the offer has no H.264 (packetization-mode=1); gbgate sends H.264 only")


def h264_preferences() -> list[Any]:
    """aiortc's H.264 capabilities (and RTX), in its order; VP8 left out on purpose."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in caps if c.mimeType.lower() in ("video/h264", "video/rtx")]


class WhepSessions:
    """Every open WHEP session of this process, bounded; closes them on shutdown."""

    def __init__(self, *, max_sessions: int = 128, max_transcodes: int = 4, queue_size: int = 64,
                 connect_timeout: float = 20.0) -> None:
        self.max_sessions = max_sessions
        self.max_transcodes = max_transcodes
        self.queue_size = queue_size
        self.connect_timeout = connect_timeout
        self.sessions: dict[str, WhepSession] = {}
        self.counters: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def transcodes(self) -> int:
        return sum(1 for s in self.sessions.values() if s.transcoding)

    def check_capacity(self, codec: str | None) -> None:
        """Raise before any SDP work if this viewer cannot be served."""
        if len(self.sessions) >= self.max_sessions:
            raise TooManySessions(f"{len(self.sessions)} WebRTC sessions already open")
        if codec == Codec.H265.value and self.transcodes >= self.max_transcodes:
            raise TranscodeBusy(f"H.265 channel: all {self.max_transcodes} H.264 transcoders are busy; "
                                "use /live/{id}.flv (HEVC) instead")

    async def create(self, channel_id: str, source: FrameSource, offer_sdp: str, *,
                     codec: str | None = None, initial_ps: ParameterSets | None = None) -> tuple[WhepSession, str]:
        """Answer `offer_sdp` with a send-only H.264 track fed by `source`. Owns `source` from
        here on: it is closed with the session, or right away if this raises."""
        pc: RTCPeerConnection | None = None
        track: FrameTrack | None = None
        try:
            check_offer(offer_sdp)
            self.check_capacity(codec)
            transcoding = codec == Codec.H265.value

            def make_transcoder() -> HevcTranscoder | None:
                return HevcTranscoder()

            track = FrameTrack(source, max_queue=self.queue_size, transcoder=make_transcoder, initial_ps=initial_ps)
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(h264_preferences())
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            except (ValueError, AssertionError) as exc:
                raise BadOffer(f"the SDP offer was refused: {exc}") from None
            except Exception as exc:  # aiortc OperationError / InvalidStateError
                raise NoCommonCodec(f"cannot answer the offer: {exc}") from None
            await pc.setLocalDescription(await pc.createAnswer())
            session = WhepSession(secrets.token_urlsafe(16), channel_id, pc, track, source, transcoding)
        except BaseException:
            source.close("whep_failed")
            if track is not None:
                track.stop()
            if pc is not None:
                await pc.close()
            self.counters["refused"] += 1
            raise
        self.sessions[session.id] = session
        self.counters["created"] += 1
        self._watch(session)
        return session, pc.localDescription.sdp

    def _watch(self, s: WhepSession) -> None:
        pc = s.pc

        @pc.on("connectionstatechange")
        def _state() -> None:
            state = pc.connectionState
            if state == "connected":
                self.counters["connected"] += 1
            if state in ("failed", "closed"):
                self._spawn(self.close(s.id, f"ice_{state}"))

        @s.track.on("ended")
        def _ended() -> None:
            self._spawn(self.close(s.id, s.track.end_reason or "track_ended"))

        def _timeout() -> None:
            if pc.connectionState != "connected":
                self._spawn(self.close(s.id, "connect_timeout"))

        s.timer = asyncio.get_running_loop().call_later(self.connect_timeout, _timeout)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def get(self, session_id: str) -> WhepSession | None:
        return self.sessions.get(session_id)

    async def close(self, session_id: str, reason: str = "deleted") -> bool:
        s = self.sessions.pop(session_id, None)
        if s is None or s.closed:
            return False
        s.closed = True
        s.close_reason = reason
        self.counters[f"closed:{reason}"] += 1
        if s.timer is not None:
            s.timer.cancel()
        s.track.end_reason = s.track.end_reason or reason
        s.source.close(reason)
        s.track.stop()
        with contextlib.suppress(Exception):
            await s.pc.close()
        log.debug("WHEP session %s (%s) closed: %s", s.id, s.channel_id, reason)
        return True

    async def close_all(self, reason: str = "shutdown") -> None:
        for sid in list(self.sessions):
            await self.close(sid, reason)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.info() for s in self.sessions.values()]
