"""The stream hub: one ingest per channel, GOP cache, bounded fan-out (architecture.md rule 12).

A viewer asks `await hub.subscribe(channel_id, kind)`. The first one makes the hub open the
channel through a `StreamOpener` (the GB INVITE manager); concurrent first viewers share that one
open. The stream is ready at its first keyframe; from then on every frame is pushed by the
receiver, cached from the last keyframe (GOP cache) and offered to every subscription:

* kind "flv": bytes. A new viewer gets FLV header + onMetaData + sequence header + the cached GOP
  as FLV tags, then live tags. Each frame is muxed ONCE and the very same bytes object is queued
  to every FLV subscriber (§5 hot paths).
* kind "frames": MediaFrame objects (WebRTC, snapshots), starting at the cached keyframe.

The viewer's side (bounded queue, direct writes, "slow" rule) is `gateway.media.fanout`; a
stream's life (opening → live ⇄ reinviting → closed) is the table in
`gateway.media.stream_state`. After the last subscriber leaves, the ingest closes after
`linger` s. Every time the hub reads comes from the `clock` it is given (frame arrival, viewer
joins and drops, stream views), so tests drive it with a fake clock.

Errors raised to viewers are the `StreamError` tree of `gateway.media.errors` (re-exported here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from gateway.media.errors import (
    ChannelNotFound,
    DeviceUnavailable,
    FlvError,
    NalError,
    NotAdmitted,
    StreamEnded,
    StreamError,
    StreamTimeout,
)
from gateway.media.fanout import FLV, FRAMES, Framing, Subscription, WireWriter
from gateway.media.flv import FlvMuxer
from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import ParameterSets, parameter_sets, parse_sps
from gateway.media.session_stats import StreamStats, Trace
from gateway.media.stream_state import StreamInput, StreamState, next_state
from gateway.media.timeline_rebase import WRAP33, TimelineRebaser
from gateway.tasks import TaskSet

# re-exported: callers import the stream errors and the fan-out names from the hub
__all__ = ["FLV", "FRAMES", "ChannelNotFound", "DeviceUnavailable", "Framing", "NotAdmitted", "Stream",
           "StreamEnded", "StreamError", "StreamHandle", "StreamHub", "StreamOpener", "StreamState",
           "StreamTimeout", "Subscription", "WireWriter"]

log = logging.getLogger(__name__)

#: A stream key names a channel ("<channel id>"), or one device's channel when two devices expose
#: the same channel ID ("<channel id>@<device id>", a cascade's mapped ID): the opener INVITEs
#: that device instead of the channel's usual owner.
DEVICE_SEP = "@"


def stream_key(channel_id: str, device_id: str = "") -> str:
    return f"{channel_id}{DEVICE_SEP}{device_id}" if device_id else channel_id


def split_key(key: str) -> tuple[str, str]:
    """(channel ID, device ID or "") of a stream key."""
    channel_id, _, device_id = key.partition(DEVICE_SEP)
    return channel_id, device_id


MAX_GOP_FRAMES = 600
MAX_GOP_BYTES = 16 << 20
_PTS_MASK = WRAP33 - 1
_LIVE = StreamState.LIVE


class StreamHandle(Protocol):
    """An open ingest, as returned by the opener."""

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class StreamOpener(Protocol):
    """Opens a channel's ingest (the GB INVITE manager). Frames go to `sink.push`; a source
    that is gone for good calls `sink.end(reason)`; each INVITE attempt gets `sink.new_trace()`."""

    async def open(self, channel_id: str, sink: Stream) -> StreamHandle: ...


class _Entry:
    """A frame as taken by the stream: its place on the viewer timeline, its FLV tag once muxed,
    and its rebased copy for frame viewers once one wants it (built lazily: a MediaFrame costs
    more than the rest of `push`, and most streams have only FLV viewers)."""

    __slots__ = ("_out", "dts", "frame", "pts", "tag", "ts_ms")

    def __init__(self, frame: MediaFrame, dts: int, pts: int) -> None:
        self.frame = frame
        self.dts = dts
        self.pts = pts
        self.ts_ms = dts // 90
        self.tag: bytes | None = None
        self._out: MediaFrame | None = None

    def out(self) -> MediaFrame:
        """The frame with viewer-timeline timestamps, in MPEG's 33-bit form (PS remux, WebRTC)."""
        o = self._out
        if o is None:
            f = self.frame
            o = self._out = MediaFrame(f.kind, f.codec, f.data, self.pts & _PTS_MASK, self.dts & _PTS_MASK,
                                       f.keyframe, f.stream_id, f.nals)
        return o


class Stream:
    """One channel's ingest and its subscribers; the receiver's `FrameSink` and the
    `SubscriptionOwner` of its subscriptions (gateway.media.fanout)."""

    def __init__(self, hub: StreamHub, channel_id: str) -> None:
        self.hub = hub
        self.channel_id = channel_id
        self.subs: list[Subscription] = []
        self.flv_subs: list[Subscription] = []
        self.frame_subs: list[Subscription] = []
        self.waiting = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.handle: StreamHandle | None = None
        self.traces: deque[Trace] = deque(maxlen=4)
        self.stats = StreamStats()
        self.state = StreamState.OPENING
        self.end_reason: str | None = None
        self.created = hub.clock()
        self._open_task: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._closing = False
        self.gop: list[_Entry] = []
        self._gop_bytes = 0
        self._gop_valid = False
        self.latest_key: tuple[MediaFrame, ParameterSets] | None = None
        self.codec: Codec | None = None
        self.audio_codec: Codec | None = None
        self.muxer: FlvMuxer | None = None
        self._key_pending = False
        self._last_key_at: float | None = None
        # every viewer (FLV, WS-FLV, WebRTC) sees one timeline across source changes (issue 12.1)
        self.timeline = TimelineRebaser()

    def _to(self, event: StreamInput) -> None:
        """Every state change goes through the table (stream_state.py)."""
        self.state = next_state(self.state, event)

    # -- sink API (called by the receiver / opener) ------------------------------------------

    def new_trace(self) -> Trace:
        t = Trace(attempt=len(self.traces) + 1 if not self.traces else self.traces[-1].attempt + 1)
        self.traces.append(t)
        return t

    @property
    def trace(self) -> list[dict[str, Any]]:
        return [t.as_dict() for t in self.traces]

    def note_reinvite(self, reason: str) -> None:
        """The opener lost the media and is re-INVITing (subscribers stay; state says so)."""
        self.stats.reopens += 1
        self._to(StreamInput.REINVITE)
        self.hub.counters["reinvites"] += 1
        if self.traces:
            self.traces[-1].add("reinvite", reason=reason)
        self.new_source("reinvite")

    def new_source(self, reason: str) -> None:
        """The next frames come from a new source (`reinvite`, `new_port`, `ssrc_switch`): viewers'
        timestamps continue one frame after the last instead of following the new source's clock."""
        self.timeline.new_source()
        self.hub.counters[f"source_changes:{reason}"] += 1

    def push(self, frame: MediaFrame) -> None:
        """One demuxed frame from the ingest. O(subscribers), never waits."""
        if self._closing:
            return
        if self.state is not _LIVE and self.ready.done():
            self._to(StreamInput.MEDIA)
        st = self.stats
        now = self.hub.clock()
        was_pending = self._key_pending  # ready one frame after the first keyframe (see _keyframe)
        video = frame.kind == "video"
        if video:
            if frame.keyframe:
                if not self._keyframe(frame, now):
                    return
            elif self.codec is None or frame.codec != self.codec:
                st.dropped_before_key += 1
                return
            st.frames += 1
        else:
            if self.codec is None:
                st.dropped_before_key += 1
                return
            if self.audio_codec is None:
                self.audio_codec = frame.codec
                st.audio_codec = frame.codec.value
            st.audio_frames += 1
        st.bytes += len(frame.data)
        st.count(now, len(frame.data), video)
        st.last_frame_at = now
        tl = self.timeline
        changes = tl.changes
        dts, pts = tl.map(video, frame.dts, frame.pts)
        if tl.changes != changes:
            st.ts_rebases += 1
        entry = _Entry(frame, dts, pts)
        if self._gop_valid:
            self.gop.append(entry)
            self._gop_bytes += len(frame.data)
            if len(self.gop) > MAX_GOP_FRAMES or self._gop_bytes > MAX_GOP_BYTES:
                self._gop_valid = False  # absurd GOP: late joiners wait for the next keyframe
                self.gop = []
                self._gop_bytes = 0
        key = video and frame.keyframe
        if self.flv_subs:
            tag = self._tag(entry)
            if tag:
                # framed once per framing and shared by its viewers; the last framing is kept in
                # locals because viewers of one output (HTTP-FLV or WS-FLV) usually come in a row
                framed: dict[Framing, bytes] = {}
                last: Framing | None = None
                data = tag
                for sub in tuple(self.flv_subs):  # a slow or gone viewer is removed as we go
                    framing = sub.framing
                    if framing is None:
                        sub.offer(tag, key)
                        continue
                    if framing is not last:
                        got = framed.get(framing)
                        if got is None:
                            got = framed[framing] = framing(tag)
                        data, last = got, framing
                    sub.write(data, key)
        if self.frame_subs:
            out = entry.out()  # frame viewers (WebRTC, snapshots) get the same timeline
            for sub in tuple(self.frame_subs):
                sub.offer(out, key)
        if was_pending and self._key_pending:
            self._key_pending = False
            self._become_ready(now)

    def _keyframe(self, frame: MediaFrame, now: float) -> bool:
        st = self.stats
        ps = parameter_sets(frame.codec, frame.data, frame.nals)
        if self.codec is None:
            if not ps.complete:
                st.dropped_before_key += 1
                return False
            self._set_codec(frame.codec, ps)
        elif frame.codec != self.codec:
            # The device restarted with another codec: FLV cannot change codec mid-stream.
            self.hub.counters["codec_changes"] += 1
            for sub in list(self.flv_subs):
                sub.close("codec_changed")
            self._set_codec(frame.codec, ps)
        elif ps.sps is not None and self.latest_key is not None and ps.sps != self.latest_key[1].sps:
            self._update_resolution(ps)
        if not ps.complete and self.latest_key is not None:
            ps = self.latest_key[1]
        self.latest_key = (frame, ps)
        st.keyframes += 1
        if self._last_key_at is not None:
            st.keyframe_interval = now - self._last_key_at
            st.gop_frames = len(self.gop)
        self._last_key_at = now
        self.gop = []
        self._gop_bytes = 0
        self._gop_valid = True
        if not self.ready.done() and not self._key_pending:
            self._key_pending = True  # ready after the next frame: audio (if any) is known by then
            st.ttff_open = now - self.created
            self.hub.loop.call_later(0.1, self._ready_fallback)
        return True

    def _ready_fallback(self) -> None:
        if self._key_pending:
            self._key_pending = False
            self._become_ready(self.hub.clock())

    def _set_codec(self, codec: Codec, ps: ParameterSets) -> None:
        self.codec = codec
        self.stats.codec = codec.value
        self.muxer = None
        self._update_resolution(ps)

    def _update_resolution(self, ps: ParameterSets) -> None:
        if ps.sps is None or self.codec is None:
            return
        try:
            info = parse_sps(self.codec, ps.sps)
            self.stats.width, self.stats.height = info.width, info.height
        except (NalError, IndexError, ValueError):
            self.hub.counters["sps_errors"] += 1

    def _become_ready(self, now: float) -> None:
        if self.ready.done():
            return
        self._to(StreamInput.READY)
        self.ready.set_result(None)
        self.hub._video_event(self.channel_id, True, "video_ok", {"codec": str(self.codec) if self.codec else ""})
        if self.traces:
            self.traces[-1].once("ready", gop_frames=len(self.gop))

    def end(self, reason: str) -> None:
        """The source is gone for good (device BYE, device offline, opener gave up)."""
        self.end_reason = reason
        self.hub.counters[f"streams_ended:{reason}"] += 1
        if not self.ready.done():
            self.ready.set_exception(StreamEnded(f"stream ended: {reason}", trace=self.trace))
            self.ready.exception()  # mark retrieved
        self.hub.tasks.spawn(self._close(reason), name=f"close:{self.channel_id}")

    # -- FLV -------------------------------------------------------------------------------

    def _mux(self) -> FlvMuxer:
        m = self.muxer
        if m is None:
            audio = self.audio_codec if self.audio_codec in (Codec.G711A, Codec.G711U, Codec.AAC) else None
            m = self.muxer = FlvMuxer(self.codec, audio)
            ps = self.latest_key[1] if self.latest_key else None
            if ps is not None and ps.sps is not None and ps.pps is not None:
                try:
                    m.sequence_header(ps.sps, ps.pps, ps.vps)
                except FlvError:
                    self.stats.mux_errors += 1
        return m

    def _tag(self, entry: _Entry) -> bytes | None:
        if entry.tag is not None:
            return entry.tag
        m = self._mux()
        f = entry.frame
        try:
            if f.kind == "video":
                if f.pts is not None and f.dts is not None and f.pts - f.dts != entry.pts - entry.dts:
                    f = entry.out()  # the source's PTS wrapped before its DTS: use the kept composition time
                entry.tag = m.video_tag(f, entry.ts_ms)
            elif m.audio_codec is not None and f.codec == m.audio_codec:
                entry.tag = m.audio_tag(f, entry.ts_ms)
            else:
                entry.tag = b""
        except (FlvError, NalError):
            self.stats.mux_errors += 1
            entry.tag = b""
        return entry.tag

    def flv_preamble(self) -> bytes:
        m = self._mux()
        st = self.stats
        fps = self._gop_fps()
        return m.header() + m.metadata(st.width, st.height, fps) + m.sequence_headers(self.gop[0].ts_ms if self.gop
                                                                                       else self.timeline.last_ms)

    def _gop_fps(self) -> float:
        vids = [e.ts_ms for e in self.gop if e.frame.kind == "video"]
        if len(vids) >= 2 and vids[-1] > vids[0]:
            return round(1000 * (len(vids) - 1) / (vids[-1] - vids[0]), 2)
        return 25.0

    # -- subscribers -----------------------------------------------------------------------

    def _attach(self, sub: Subscription) -> None:
        """Prime a subscriber from the GOP cache (starts at a keyframe) and make it live."""
        if sub.kind == FLV:
            tags = [t for e in self.gop if (t := self._tag(e))] if self._gop_valid else []
            items: list[Any] = [self.flv_preamble(), *tags]  # preamble after the GOP is muxed: newest config
            if not self._gop_valid:
                sub.need_key = True
            self.flv_subs.append(sub)
        else:
            items = [e.out() for e in self.gop] if self._gop_valid else []
            if not self._gop_valid:
                sub.need_key = True
            self.frame_subs.append(sub)
        self.subs.append(sub)
        sub.prime(items)
        self._cancel_linger()

    # -- SubscriptionOwner (gateway.media.fanout) ----------------------------------------------

    @property
    def viewer_backlog(self) -> int:
        return self.hub.viewer_backlog

    def now(self) -> float:
        return self.hub.clock()

    def viewer_dropped(self, kind: str) -> None:
        self.stats.viewer_drops += 1
        self.hub.counters[f"viewer_drops:{kind}"] += 1

    def viewer_slow(self, kind: str) -> None:
        self.stats.viewers_disconnected += 1
        self.hub.counters["viewers_disconnected:slow"] += 1

    def viewer_first_item(self, waited: float) -> None:
        self.stats.ttff_viewers.append(waited)

    def unsubscribe(self, sub: Subscription) -> None:
        for lst in (self.subs, self.flv_subs, self.frame_subs):
            if sub in lst:
                lst.remove(sub)
        self._maybe_linger()

    @property
    def viewers(self) -> int:
        return len(self.subs)

    def _maybe_linger(self) -> None:
        if self.subs or self.waiting or self._closing or self._linger is not None:
            return
        linger = self.hub.linger if self.ready.done() and not self.ready.exception() else 0.0
        self._linger = self.hub.loop.call_later(linger, self._linger_fire)

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _linger_fire(self) -> None:
        self._linger = None
        if not self.subs and not self.waiting:
            self.hub.tasks.spawn(self._close("linger"), name=f"close:{self.channel_id}")

    async def _close(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._to(StreamInput.CLOSE)
        self._cancel_linger()
        if self.hub._streams.get(self.channel_id) is self:
            del self.hub._streams[self.channel_id]
        for sub in list(self.subs):
            sub.close(reason)
        task = self._open_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not self.ready.done():
            self.ready.set_exception(StreamEnded(f"stream closed: {reason}", trace=self.trace))
            self.ready.exception()
        if self.handle is not None:
            try:
                await self.handle.close()
            except Exception:
                log.exception("closing stream %s failed", self.channel_id)
        self.hub.counters[f"streams_closed:{reason}"] += 1
        self.hub._remember(self, reason)

    async def _open(self) -> None:
        try:
            self.stats.opens += 1
            self.handle = await self.hub.opener.open(self.channel_id, self)
            self.hub.counters["streams_opened:ok"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = exc if isinstance(exc, StreamError) else StreamError(f"open failed: {exc}", trace=self.trace)
            if not err.trace:
                err.trace = self.trace
            self.hub.counters[f"streams_opened:{err.code}"] += 1
            if not self.ready.done():
                self.ready.set_exception(err)
                self.ready.exception()
            await self._close("open_failed")

    def info(self) -> dict[str, Any]:
        st = self.stats
        return {"codec": st.codec, "audio_codec": st.audio_codec, "width": st.width, "height": st.height,
                "fps": self._gop_fps() if self.gop else None}

    def snapshot(self) -> dict[str, Any]:
        now = self.hub.clock()
        out: dict[str, Any] = {"channel_id": self.channel_id, "state": self.state.value, "viewers": self.viewers,
                               "viewers_by_kind": {FLV: len(self.flv_subs), FRAMES: len(self.frame_subs)},
                               "waiting": self.waiting, "age_s": round(now - self.created, 3)}
        out.update(self.stats.snapshot(now))
        handle = self.handle
        rtp: dict[str, Any] = {}
        if handle is not None:
            try:
                rtp = handle.stats()
            except Exception:  # pragma: no cover - views must not fail
                rtp = {}
        out["rtp"] = rtp
        out["trace"] = self.trace
        return out


class StreamHub:
    """All streams of this node, keyed by channel ID."""

    def __init__(self, opener: StreamOpener, *, linger: float = 10.0, ready_timeout: float = 10.0,
                 queue_size: int = 256, viewer_backlog: int = 4 << 20,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.opener = opener
        self.clock = clock  # frame arrival times and the stream views (rates, idle, age)
        self.viewer_backlog = viewer_backlog  # bytes a direct viewer may fall behind before skipping
        self.linger = linger
        self.ready_timeout = ready_timeout
        # (channel_id, ok, cause, evidence): video arrived, or a play request got none in time
        self.on_video: Callable[[str, bool, str, dict[str, Any]], None] | None = None
        self.queue_size = queue_size
        self._streams: dict[str, Stream] = {}
        self.tasks = TaskSet("stream-hub", logger=log)  # stream opens and closes
        self.counters: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running = False  # between start() and stop(), for the node's /healthz
        self._last: dict[str, dict[str, Any]] = {}  # channel → how its last stream ended (bounded)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def get(self, channel_id: str) -> Stream | None:
        return self._streams.get(channel_id)

    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    async def subscribe(self, channel_id: str, kind: str = FLV, *, timeout: float | None = None) -> Subscription:
        """A live subscription starting at a keyframe; opens the channel if needed.

        Raises a StreamError subclass (with the INVITE trace) when the stream cannot be had
        within `timeout` (default: ready_timeout)."""
        if kind not in (FLV, FRAMES):
            raise ValueError(f"unknown subscription kind {kind!r}")
        stream = self._streams.get(channel_id)
        if stream is None or stream._closing:
            stream = Stream(self, channel_id)
            self._streams[channel_id] = stream
            self.counters["streams_requested"] += 1
            stream._open_task = self.tasks.spawn(stream._open(), name=f"open:{channel_id}")
        stream._cancel_linger()
        if not stream.ready.done():
            stream.waiting += 1
            try:
                await asyncio.wait_for(asyncio.shield(stream.ready), timeout or self.ready_timeout)
            except TimeoutError:
                self.counters["subscribe_timeouts"] += 1
                for t in stream.traces:
                    t.once("timeout", after_s=timeout or self.ready_timeout)
                self._video_event(channel_id, False, "no_video_after_invite", {"trace": stream.trace[-1:]})
                raise StreamTimeout(f"no video from {channel_id} within {timeout or self.ready_timeout:g} s",
                                    trace=stream.trace) from None
            finally:
                stream.waiting -= 1
                if not stream.ready.done() or stream.ready.exception() is not None:
                    stream._maybe_linger()
        if stream.ready.exception() is not None:
            raise stream.ready.exception()  # type: ignore[misc]
        if stream._closing:
            raise StreamEnded(f"stream {channel_id} ended: {stream.end_reason or 'closed'}", trace=stream.trace)
        sub = Subscription(stream, kind, self.queue_size)
        stream._attach(sub)
        self.counters[f"subscriptions:{kind}"] += 1
        return sub

    def _remember(self, stream: Stream, reason: str) -> None:
        if len(self._last) >= 1024:
            self._last.pop(next(iter(self._last)))
        self._last.pop(stream.channel_id, None)
        self._last[stream.channel_id] = {"reason": reason, "end_reason": stream.end_reason,
                                         "frames": stream.stats.frames, "trace": stream.trace}

    def _video_event(self, channel_id: str, ok: bool, cause: str, evidence: dict[str, Any]) -> None:
        """Tell the observer (the health ledger) that a channel did or did not deliver video."""
        if self.on_video is None:
            return
        try:
            self.on_video(channel_id, ok, cause, evidence)
        except Exception:
            self.counters["video_observer_errors"] += 1

    def last_failure(self, channel_id: str) -> dict[str, Any] | None:
        """How the channel's last stream ended, with its INVITE traces ("why no stream")."""
        return self._last.get(channel_id)

    def latest_keyframe(self, channel_id: str) -> tuple[MediaFrame, ParameterSets] | None:
        s = self._streams.get(channel_id)
        return s.latest_key if s is not None else None

    def stream_info(self, channel_id: str) -> dict[str, Any] | None:
        s = self._streams.get(channel_id)
        return s.info() if s is not None else None

    def end(self, channel_id: str, reason: str) -> None:
        s = self._streams.get(channel_id)
        if s is not None:
            s.end(reason)

    def snapshot(self, channel_id: str | None = None) -> Any:
        if channel_id is not None:
            s = self._streams.get(channel_id)
            return None if s is None else s.snapshot()
        return [s.snapshot() for s in self._streams.values()]

    def gauges(self) -> dict[str, int]:
        return {"streams": len(self._streams),
                "viewers": sum(s.viewers for s in self._streams.values())}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.running = True

    async def stop(self) -> None:
        self.running = False
        for s in list(self._streams.values()):
            await s._close("shutdown")
        await self.tasks.join()
