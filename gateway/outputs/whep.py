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
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import GbgateError
from gateway.media.frames import Codec
from gateway.media.nal import ParameterSets
from gateway.outputs.frame_source import FrameSource
from gateway.tasks import TaskSet

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from gateway.outputs.whep_track import FrameTrack

log = logging.getLogger(__name__)

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


@dataclass(slots=True, eq=False)
class WhepSession:
    """One viewer: its peer connection, track and hub subscription."""

    id: str
    channel_id: str
    pc: RTCPeerConnection
    track: FrameTrack
    source: FrameSource
    transcoding: bool
    created: float
    closed: bool = False
    close_reason: str | None = None
    timer: asyncio.TimerHandle | None = None

    def info(self, now: float) -> dict[str, Any]:
        t = self.track
        return {"session_id": self.id, "channel_id": self.channel_id, "state": self.pc.connectionState,
                "age_s": round(now - self.created, 3), "frames_sent": t.sent,
                "frames_dropped": t.dropped, "drop_events": t.drop_events, "transcoding": self.transcoding}


def check_offer(sdp: str) -> None:
    """Refuse, cheaply and before any stream is opened, an offer we could never answer."""
    if not sdp.lstrip().startswith("v=0"):
        raise BadOffer("the body is not an SDP offer")
    from aiortc.sdp import SessionDescription  # lazy: aiortc is loaded with the first viewer

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


class WhepSessions:
    """Every open WHEP session of this process, bounded; closes them on shutdown."""

    def __init__(self, *, max_sessions: int = 128, max_transcodes: int = 4, queue_size: int = 64,
                 connect_timeout: float = 20.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # session ages
        self.max_sessions = max_sessions
        self.max_transcodes = max_transcodes
        self.queue_size = queue_size
        self.connect_timeout = connect_timeout
        self.sessions: dict[str, WhepSession] = {}
        self.counters: Counter[str] = Counter()
        self._tasks = TaskSet("whep", logger=log)  # closes started from aiortc callbacks and timers

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
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        from gateway.outputs.whep_track import FrameTrack, HevcTranscoder, h264_preferences

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
            session = WhepSession(secrets.token_urlsafe(16), channel_id, pc, track, source, transcoding,
                                  self.clock())
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
                self._tasks.spawn(self.close(s.id, f"ice_{state}"))

        @s.track.on("ended")
        def _ended() -> None:
            self._tasks.spawn(self.close(s.id, s.track.end_reason or "track_ended"))

        def _timeout() -> None:
            if pc.connectionState != "connected":
                self._tasks.spawn(self.close(s.id, "connect_timeout"))

        s.timer = asyncio.get_running_loop().call_later(self.connect_timeout, _timeout)

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
        await self._tasks.join()

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [s.info(now) for s in self.sessions.values()]
