"""The stream hub: one ingest per channel, GOP cache, bounded fan-out (architecture.md rule 12).

A viewer asks `await hub.subscribe(channel_id, kind)`. The first one makes the hub open the
channel through a `StreamOpener` (the GB INVITE manager); concurrent first viewers share that one
open. The stream is ready at its first keyframe; from then on every frame is pushed by the
receiver, cached from the last keyframe (GOP cache) and offered to every subscription:

* kind "flv": bytes. A new viewer gets FLV header + onMetaData + sequence header + the cached GOP
  as FLV tags, then live tags. Each frame is muxed ONCE and the very same bytes object is queued
  to every FLV subscriber (§5 hot paths).
* kind "frames": MediaFrame objects (WebRTC, snapshots), starting at the cached keyframe.

Queues are bounded (media.viewer_queue items). The source never waits: a full queue is emptied
and the subscriber skips to the next keyframe (counted); one that overflows again too often is
disconnected ("slow"). After the last subscriber leaves, the ingest closes after `linger` s.

An FLV subscriber can go *direct* (`Subscription.go_direct`): the stream then writes each frame
straight into the viewer's transport, framed once per frame for every viewer using the same
framing (HTTP chunk, WebSocket message), with no queue, future or task wake-up per viewer and
frame — the fan-out cost is one `transport.write` (§5). The bound is then the transport's write
buffer (media.viewer_backlog bytes), with the same skip-to-keyframe and "slow" rules.

Errors raised to viewers (`StreamError` subclasses carry an HTTP status hint and the INVITE
trace, so the API can say why there is no stream):

    MediaError
    └── StreamError            status 502
        ├── ChannelNotFound    404
        ├── DeviceUnavailable  409 (offline / not registered)
        ├── NotAdmitted        403 (whitelist says no)
        ├── StreamTimeout      504 (no keyframe within media.invite_timeout)
        └── StreamEnded        410 (device BYE / gone while waiting)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from gateway.media.errors import FlvError, MediaError, NalError
from gateway.media.flv import FlvMuxer
from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import ParameterSets, parameter_sets, parse_sps
from gateway.media.session_stats import StreamStats, Trace
from gateway.media.timeline_rebase import WRAP33, TimelineRebaser

log = logging.getLogger(__name__)

FLV, FRAMES = "flv", "frames"
MAX_GOP_FRAMES = 600
MAX_GOP_BYTES = 16 << 20
_PTS_MASK = WRAP33 - 1


class StreamError(MediaError):
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


class StreamHandle(Protocol):
    """An open ingest, as returned by the opener."""

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class StreamOpener(Protocol):
    """Opens a channel's ingest (the GB INVITE manager). Frames go to `sink.push`; a source
    that is gone for good calls `sink.end(reason)`; each INVITE attempt gets `sink.new_trace()`."""

    async def open(self, channel_id: str, sink: Stream) -> StreamHandle: ...


class WireWriter(Protocol):
    """A viewer's socket as the hub sees it (an asyncio.Transport is one)."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


Framing = Callable[[bytes], bytes]


class Subscription:
    """One viewer's bounded queue. `async for item in sub`; `sub.close()` when done."""

    __slots__ = ("_burst", "_drop_times", "_framing", "_queue", "_stream", "_waiter", "_wire", "channel_id",
                 "closed", "delivered", "drop_events", "dropped", "joined_at", "kind", "max_backlog", "maxsize",
                 "need_key", "reason")

    def __init__(self, stream: Stream, kind: str, maxsize: int) -> None:
        self._stream = stream
        self.channel_id = stream.channel_id
        self.kind = kind
        self.maxsize = maxsize
        self._queue: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.reason: str | None = None
        self.need_key = False
        self.dropped = 0  # items skipped (overflow or waiting for a keyframe)
        self.drop_events = 0
        self._drop_times: deque[float] = deque(maxlen=4)
        self._burst = 0  # the initial GOP may exceed maxsize once
        self.delivered = 0
        self.joined_at = time.monotonic()
        self._wire: WireWriter | None = None
        self._framing: Framing | None = None
        self.max_backlog = 0

    def __len__(self) -> int:
        return len(self._queue)

    def _put(self, item: Any, key: bool) -> None:
        """Called by the stream for every item; never blocks."""
        if self.closed:
            return
        if self.need_key:
            if not key:
                self.dropped += 1
                return
            self.need_key = False
        q = self._queue
        if len(q) >= self.maxsize + self._burst:
            self.dropped += len(q)
            q.clear()
            if self._note_drop():
                return
            if not key:
                self.need_key = True
                self.dropped += 1
                return
        q.append(item)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _note_drop(self) -> bool:
        """Count an overflow; True if this one makes the viewer "slow" (closed)."""
        self.drop_events += 1
        now = time.monotonic()
        self._drop_times.append(now)
        self._stream.stats.viewer_drops += 1
        self._stream.hub.counters[f"viewer_drops:{self.kind}"] += 1
        if len(self._drop_times) == self._drop_times.maxlen and now - self._drop_times[0] < 30.0:
            self._stream.stats.viewers_disconnected += 1
            self._stream.hub.counters["viewers_disconnected:slow"] += 1
            self.close("slow")
            return True
        return False

    def go_direct(self, wire: WireWriter, framing: Framing, *, max_backlog: int | None = None) -> None:
        """From now on the stream writes `framing(tag)` straight to `wire` (FLV only).

        What is still queued (the preamble and GOP not yet taken) is written first, as one
        message. `max_backlog` bytes in the transport's buffer beyond what is there now count
        as an overflow (skip to the next keyframe)."""
        if self.kind != FLV:
            raise ValueError("only FLV subscriptions can go direct")
        if self._queue:
            pending = b"".join(self._queue)
            self._queue.clear()
            wire.write(framing(pending))
            self._delivered_one()
        self._burst = 0
        limit = self._stream.hub.viewer_backlog if max_backlog is None else max_backlog
        self.max_backlog = limit + wire.get_write_buffer_size()
        self._wire = wire
        self._framing = framing

    def _write(self, data: bytes, key: bool) -> None:
        """Direct mode: one frame, already framed, into the viewer's transport."""
        wire = self._wire
        if self.closed or wire is None:
            return
        if wire.is_closing():
            self.close("viewer_left")
            return
        backlog = wire.get_write_buffer_size()
        if self.need_key:
            if not key or backlog > self.max_backlog // 2:
                self.dropped += 1
                return
            self.need_key = False
        elif backlog > self.max_backlog:
            self.dropped += 1
            if not self._note_drop():
                self.need_key = True
            return
        wire.write(data)
        self._delivered_one()

    async def wait_closed(self) -> None:
        """Until the subscription is closed (direct mode: the hub or the viewer ended it)."""
        while not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None

    def _put_many(self, items: list[Any]) -> None:
        self._burst = len(items)
        self._queue.extend(items)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        while not self._queue:
            if self.closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        self._delivered_one()
        item = self._queue.popleft()
        if self._burst and len(self._queue) < self.maxsize:
            self._burst = 0
        return item

    async def get_batch(self, limit: int = 64) -> list[Any]:
        """At least one item (waits), at most `limit`; [] once closed and drained."""
        while not self._queue:
            if self.closed:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        q = self._queue
        n = min(limit, len(q))
        out = [q.popleft() for _ in range(n)]
        if self._burst and len(q) < self.maxsize:
            self._burst = 0
        self._delivered_one()
        return out

    def _delivered_one(self) -> None:
        if self.delivered == 0:
            self._stream.stats.ttff_viewers.append(time.monotonic() - self.joined_at)
        self.delivered += 1

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        self._stream._remove(self)


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
    """One channel's ingest and its subscribers; also the receiver's `FrameSink`."""

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
        self.state = "opening"
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
        self.state = "reinviting"
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
        if self.state != "live" and self.ready.done():
            self.state = "live"
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
                framed: dict[Framing, bytes] = {}
                for sub in tuple(self.flv_subs):  # a slow or gone viewer is removed as we go
                    framing = sub._framing
                    if framing is None:
                        sub._put(tag, key)
                        continue
                    data = framed.get(framing)
                    if data is None:
                        data = framed[framing] = framing(tag)
                    sub._write(data, key)
        if self.frame_subs:
            out = entry.out()  # frame viewers (WebRTC, snapshots) get the same timeline
            for sub in tuple(self.frame_subs):
                sub._put(out, key)
        if was_pending and self._key_pending:
            self._key_pending = False
            self._become_ready(now)

    def _keyframe(self, frame: MediaFrame, now: float) -> bool:
        st = self.stats
        ps = parameter_sets(frame.codec, frame.data)
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
            self._become_ready(time.monotonic())

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
        self.state = "live"
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
        self.hub._spawn(self._close(reason))

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
        sub._put_many(items)
        self._cancel_linger()

    def _remove(self, sub: Subscription) -> None:
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
            self.hub._spawn(self._close("linger"))

    async def _close(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self.state = "closed"
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
        out: dict[str, Any] = {"channel_id": self.channel_id, "state": self.state, "viewers": self.viewers,
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
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counters: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last: dict[str, dict[str, Any]] = {}  # channel → how its last stream ended (bounded)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
            stream._open_task = self._spawn(stream._open())
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

    async def stop(self) -> None:
        for s in list(self._streams.values()):
            await s._close("shutdown")
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
