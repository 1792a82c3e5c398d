"""Pull sources — RTSP, RTMP and files — through PyAV, into the same hub as GB channels (issue 14 #3).

The integrator gives a source a GB channel ID; viewers, health and reports then see it as any
channel. `PullSources` is three things:

* the book of sources (channel ID → URL and mode), refreshed from the store;
* the hub's opener for the channels in the book (`owns` + `open`, behind
  gateway.media.routing.RoutedOpener): every open is admitted first (whitelist.pull: the URL's
  host must be in the channel's whitelisted networks; the connection goes to the checked address);
  a refusal is a 403 to the viewer and one audit record;
* the supervisor that keeps `always_on` sources open by holding a hub subscription, re-trying
  with back-off when the hub gives up on a source that does not answer.

A `PullSession` (the hub's StreamHandle) demuxes in a worker thread (architecture.md rule 11) —
no decode, no re-encode: H.264/H.265 packets become Annex-B access units (gateway.media.avcc) and
are pushed to the hub on the loop. A lost or refused connection is retried with capped
exponential back-off while the stream lives; viewers stay and their timeline continues
(`note_reinvite`). Health: `channel:<id>` goes online at the first packet and offline when the
connection fails or is lost, in the same ledger as GB channels. Passwords never reach a log line,
an error or a stats view: only redacted URLs (user:***@) and scrubbed FFmpeg messages leave here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import av

from adapters.base import HealthSink
from gateway.media.adts import AdtsWrapper
from gateway.media.avcc import AnnexBConverter
from gateway.media.errors import MediaError, NalError, NotAdmitted, StreamError
from gateway.media.fanout import FRAMES
from gateway.media.frames import Codec, MediaFrame
from gateway.media.hub import Stream, StreamHub, StreamState
from gateway.media.session_stats import Trace
from gateway.tasks import TaskSet
from whitelist.decide import Policy
from whitelist.errors import ValidationError
from whitelist.pull import PullDecision, decide_pull, literal_address, parse_source_url, redact_parts, scrub

log = logging.getLogger(__name__)

_CODECS = {"h264": Codec.H264, "hevc": Codec.H265}
_AUDIO_CODECS = {"pcm_alaw": Codec.G711A, "pcm_mulaw": Codec.G711U}
_HOLD_FRAMES = 50  # video frames held at most while waiting for the first audio frame (2 s at 25 fps)
_AUDIT_EVERY_S = 600.0  # one audit record per refused channel and reason per 10 min, not per viewer
RELOAD_INTERVAL_S = 3.0
_RTSP_TRANSPORTS = ("tcp", "udp")


class PullSource(Protocol):
    """A source as the book holds it (gateway.store.sources.SourceRecord is one)."""

    @property
    def channel_id(self) -> str: ...

    @property
    def url(self) -> str: ...  # without credentials

    @property
    def username(self) -> str: ...

    @property
    def password(self) -> str: ...

    @property
    def enabled(self) -> bool: ...

    @property
    def always_on(self) -> bool: ...


class Auditor(Protocol):
    """The hash-chained audit log (whitelist.store.WhitelistStore.append_audit)."""

    async def append_audit(self, *, actor: str, action: str, target: str, before: dict[str, Any] | None,
                           after: dict[str, Any] | None, reason: str = "") -> Any: ...


Resolver = Callable[[str], Awaitable[list[str]]]
Loader = Callable[[], Awaitable[Iterable[PullSource]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PullSettings:
    timeout: float = 5.0          # PyAV open and read timeout
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    file_root: str | None = None  # file sources must lie under it (None: no file sources)
    hold_timeout: float = 10.0    # always-on: how long one subscribe attempt waits for video


def backoff(attempt: int, lo: float, hi: float) -> float:
    """Capped exponential back-off: lo, 2·lo, 4·lo … hi."""
    return float(min(hi, lo * (2 ** min(attempt, 30))))


async def resolve_host(host: str) -> list[str]:
    """Every address the host name resolves to (a literal address is itself)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    return out


class PullState(StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    FAILED = "failed"  # no video stream or a codec we cannot pass through: not retried


_SESSION_COUNTERS = ("connects", "packets", "bytes", "errors", "ends", "bad_packets")


class _Fatal(Exception):
    """The source can never give us video (no video stream, unsupported codec): stop retrying."""


class PullSession:
    """One pulled stream (the hub's StreamHandle): a worker thread demuxing with PyAV."""

    def __init__(self, owner: PullSources, channel_id: str, connect: str, shown: str, scheme: str,
                 sink: Stream, loop: asyncio.AbstractEventLoop, trace: Trace) -> None:
        self.owner = owner
        self.trace = trace
        self.channel_id = channel_id
        self._connect = connect  # carries the password: never logged, never in stats
        self.shown = shown
        self.scheme = scheme
        self.sink = sink
        self.loop = loop
        # every key exists from the start: the worker thread only updates values, so a stats view on
        # the loop never iterates a dict that changes size
        self.counters: dict[str, int] = dict.fromkeys(_SESSION_COUNTERS, 0)
        self.state = PullState.CONNECTING
        self.codec: str | None = None
        self.last_error = ""
        self._stop = threading.Event()
        self._delivered = False
        self._transport = 0  # index into _RTSP_TRANSPORTS; kept once media flowed
        self._thread = threading.Thread(target=self._run, name=f"pull:{channel_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        self.owner.sessions.pop(self.channel_id, None)
        # the thread leaves at its next packet or read timeout; do not hold shutdown longer
        await asyncio.to_thread(self._thread.join, self.owner.settings.timeout + 1.0)

    def stats(self) -> dict[str, Any]:
        return {"source": "pull", "url": self.shown, "state": self.state.value, "codec": self.codec,
                "last_error": self.last_error,
                "rtsp_transport": _RTSP_TRANSPORTS[self._transport % 2] if self.scheme == "rtsp" else None,
                **self.counters}

    # -- worker thread ---------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> bool:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
            return True
        except RuntimeError:  # the loop is closed: the node is gone
            self._stop.set()
            return False

    def _run(self) -> None:
        st = self.owner.settings
        attempt = 0
        while not self._stop.is_set():
            self._delivered = False
            try:
                self._pull_once()
                error, cause = "end of stream", "pull_ended"
            except _Fatal as exc:
                self.state, self.last_error = PullState.FAILED, str(exc)
                self._call(self.owner.stream_down, self.channel_id, "pull_unsupported", str(exc), self.shown)
                self._call(self.sink.end, str(exc))
                return
            except Exception as exc:  # PyAV/FFmpeg errors of any kind: retry
                error = scrub(str(exc)).replace(self._connect, self.shown)
                cause = "pull_lost" if self._delivered else "pull_unreachable"
                self._trace("pull_error", error=error[:200])
            if self._stop.is_set():
                return
            self.counters["errors" if cause != "pull_ended" else "ends"] += 1
            self.last_error = error
            if self._delivered:
                attempt = 0
            else:
                self._transport += 1
            if self.scheme == "file" and cause == "pull_ended" and self._delivered:
                delay = 0.0  # a file source plays in a loop (an empty one backs off like any failure)
                self._call(self.sink.new_source, "file_loop")
            else:
                delay = backoff(attempt, st.backoff_min, st.backoff_max)
                attempt += 1
                self.state = PullState.RECONNECTING
                log.info("pull %s: %s (%s); retry in %.1f s", self.channel_id, self.shown, error, delay)
                self._call(self._lost, cause, error)
            self._stop.wait(delay)

    def _trace(self, step: str, **detail: Any) -> None:
        """Add a step to this open's trace ("why no stream"), from the worker thread."""
        self._call(functools.partial(self.trace.once if step == "pull_connected" else self.trace.add, step, **detail))

    def _lost(self, cause: str, error: str) -> None:
        """On the loop: health offline; viewers stay and see one timeline across the reconnect."""
        self.owner.stream_down(self.channel_id, cause, error, self.shown)
        if self.sink.state is StreamState.LIVE:
            self.sink.note_reinvite("reconnect")

    def _pull_once(self) -> None:
        st = self.owner.settings
        options: dict[str, str] = {}
        if self.scheme != "file":
            # a live source's codecs are in its SDP / FLV sequence header: probing 5 s (FFmpeg's
            # default) only delays the first frame, and an RTMP open then outlasts our timeout
            options["analyzeduration"] = "1000000"
        if self.scheme == "rtsps":
            options["rtsp_transport"] = "tcp"
        elif self.scheme == "rtsp":
            # interleaved TCP first (NAT, loss); a server that refuses it is tried over UDP next time
            options["rtsp_transport"] = _RTSP_TRANSPORTS[self._transport % 2]
        self.counters["connects"] += 1
        container = av.open(self._connect, options=options, timeout=(st.timeout, st.timeout))
        try:
            vs = next(iter(container.streams.video), None)
            if vs is None:
                raise _Fatal("no_video_stream")
            name = vs.codec_context.name
            codec = _CODECS.get(name)
            if codec is None:
                raise _Fatal(f"unsupported_codec:{name}")
            self.codec = codec.value
            try:
                conv = AnnexBConverter(codec, vs.codec_context.extradata)
            except NalError as exc:
                raise _Fatal(f"bad_extradata:{exc}") from None
            audio = _audio_track(container)
            streams = [vs] if audio is None else [vs, audio.stream]
            clocks = {s.index: (s.time_base.numerator, s.time_base.denominator) if s.time_base else (1, 90000)
                      for s in streams}
            paced = self.scheme == "file"
            t0: tuple[float, int] | None = None
            last_dts = 0
            held: list[MediaFrame] | None = [] if audio is not None else None
            for packet in container.demux(streams):
                if self._stop.is_set():
                    return
                clock = clocks.get(packet.stream.index)  # FLV/RTMP may add streams (data) mid-way
                if packet.size == 0 or clock is None:
                    continue
                num, den = clock
                pts = packet.pts if packet.pts is not None else packet.dts
                dts = packet.dts if packet.dts is not None else pts
                dts90 = dts * num * 90000 // den if dts is not None else last_dts + 3600
                pts90 = pts * num * 90000 // den if pts is not None else dts90
                last_dts = dts90
                if audio is not None and packet.stream.index == audio.stream.index:
                    try:
                        frame = MediaFrame("audio", audio.codec, audio.convert(bytes(packet)), pts90, dts90, False,
                                           0xC0)
                    except MediaError:
                        self.counters["bad_packets"] += 1
                        continue
                else:
                    try:
                        data = conv.convert(bytes(packet), packet.is_keyframe)
                    except NalError:
                        self.counters["bad_packets"] += 1
                        continue
                    frame = MediaFrame("video", codec, data, pts90, dts90, packet.is_keyframe)
                if paced:  # files are read as fast as the disk allows: play them in real time
                    now = time.monotonic()
                    if t0 is None:
                        t0 = (now, dts90)
                    ahead = (dts90 - t0[1]) / 90000 - (now - t0[0])
                    if ahead > 0.005 and self._stop.wait(min(ahead, 1.0)):
                        return
                if held is not None:
                    # The hub learns the audio codec from the frame after the first keyframe (its FLV
                    # header is fixed then); containers often put a few video frames first, so hold
                    # the video from the first keyframe until the first audio frame (bounded).
                    if frame.kind == "video" and (held or frame.keyframe) and len(held) < _HOLD_FRAMES:
                        held.append(frame)
                        continue
                    # keyframe, then the audio frame, then the rest; or all of it when we give up waiting
                    batch = [held[0], frame, *held[1:]] if frame.kind == "audio" and held else [*held, frame]
                    if held:
                        held = None  # flushed: from now on frames go straight through
                    if not all(self._emit(f) for f in batch):
                        return
                    continue
                if not self._emit(frame):
                    return
        finally:
            container.close()

    def _emit(self, frame: MediaFrame) -> bool:
        if not self._delivered and frame.kind == "video":
            self._delivered = True
            self.state = PullState.LIVE
            self._trace("pull_connected")
            self._call(self.owner.stream_up, self.channel_id, self.shown)
        self.counters["packets"] += 1
        self.counters["bytes"] += len(frame.data)
        return self._call(self.sink.push, frame)


@dataclass(slots=True)
class _AudioTrack:
    """An audio stream we relay without decoding: AAC (ADTS-wrapped) or G.711."""

    stream: Any
    codec: Codec
    convert: Callable[[bytes], bytes]


def _audio_track(container: Any) -> _AudioTrack | None:
    """The first audio stream the hub can carry as is; None (video only) for anything else."""
    stream = next(iter(container.streams.audio), None)
    if stream is None:
        return None
    name = stream.codec_context.name
    if name == "aac":
        try:
            return _AudioTrack(stream, Codec.AAC, AdtsWrapper(stream.codec_context.extradata).wrap)
        except MediaError:
            return None
    codec = _AUDIO_CODECS.get(name)
    if codec is None or stream.codec_context.sample_rate != 8000:
        return None  # FLV's G.711 is 8 kHz mono; other codecs would need a transcode
    return _AudioTrack(stream, codec, bytes)


class PullSources:
    """The book of pull sources, their opener (for RoutedOpener) and the always-on supervisor."""

    def __init__(self, *, policy: Policy, health: HealthSink | None = None, auditor: Auditor | None = None,
                 settings: PullSettings | None = None, resolver: Resolver = resolve_host,
                 loader: Loader | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.health = health
        self.auditor = auditor
        self.settings = settings or PullSettings()
        self.resolver = resolver
        self.loader = loader
        self.wall_clock = wall_clock
        self.hub: StreamHub | None = None  # set by the composition root (always-on holds)
        self.book: dict[str, PullSource] = {}
        self.sessions: dict[str, PullSession] = {}
        self.counters: Counter[str] = Counter()
        self._holds: dict[str, asyncio.Task[None]] = {}
        self._audited: dict[tuple[str, str], float] = {}
        self._tasks = TaskSet("pull-sources", logger=log)

    # -- the book --------------------------------------------------------------------------

    def owns(self, channel_id: str) -> bool:
        return channel_id in self.book

    def replace_all(self, sources: Iterable[PullSource]) -> None:
        new = {s.channel_id: s for s in sources}
        for gone in set(self.book) - set(new):
            self.remove(gone)
        for src in new.values():
            if self.book.get(src.channel_id) != src:
                self.put(src)

    def put(self, src: PullSource) -> None:
        """Add or change a source; an open stream of a changed source is ended (viewers reconnect)."""
        old = self.book.get(src.channel_id)
        self.book[src.channel_id] = src
        if old is not None and self.hub is not None and (old.url, old.username, old.password, old.enabled) != \
                (src.url, src.username, src.password, src.enabled):
            self.hub.end(src.channel_id, "source_changed")
        self._supervise(src.channel_id)

    def remove(self, channel_id: str) -> None:
        self.book.pop(channel_id, None)
        hold = self._holds.pop(channel_id, None)
        if hold is not None:
            hold.cancel()
        if self.hub is not None:
            self.hub.end(channel_id, "source_removed")

    def on_dropped(self, channel_id: str) -> None:
        """The whitelist suspended, revoked or removed the channel's entry: its stream ends now
        (viewers get `revoked`); a new open is refused by the admission until it is approved again."""
        if channel_id in self.book and self.hub is not None:
            self.counters["revoked"] += 1
            self.hub.end(channel_id, "revoked")

    # -- admission -------------------------------------------------------------------------

    async def admit(self, channel_id: str, url: str) -> PullDecision:
        """Resolve the URL's host (or the file's real path) and ask whitelist.pull."""
        src = parse_source_url(url)
        now = datetime.fromtimestamp(self.wall_clock(), UTC)
        if src.is_file:
            real = await asyncio.to_thread(os.path.realpath, src.path)
            return decide_pull(self.policy, channel_id, src, [], now, file_root=self.settings.file_root,
                               real_path=real)
        addresses = await self.resolver(src.host)
        return decide_pull(self.policy, channel_id, src, addresses, now)

    async def _audit_refusal(self, channel_id: str, shown: str, decision: PullDecision) -> None:
        key = (channel_id, decision.reason.value)
        now = self.wall_clock()
        if self.auditor is None or now - self._audited.get(key, -_AUDIT_EVERY_S) < _AUDIT_EVERY_S:
            return
        self._audited[key] = now
        try:
            await self.auditor.append_audit(actor="gateway", action="pull_refused", target=channel_id, before=None,
                                            after={"url": shown, "reason": decision.reason.value},
                                            reason=decision.detail)
        except Exception:
            log.exception("audit of a refused pull failed")

    # -- StreamOpener ----------------------------------------------------------------------

    async def open(self, channel_id: str, sink: Stream) -> PullSession:
        rec = self.book.get(channel_id)
        if rec is None or not rec.enabled:
            raise StreamError(f"pull source {channel_id} is {'disabled' if rec else 'gone'}")
        try:
            src = parse_source_url(rec.url)
        except ValidationError as exc:
            raise StreamError(f"pull source {channel_id}: {exc}") from None
        shown = redact_parts(src.bare, rec.username, bool(rec.password))
        trace = sink.new_trace()
        trace.add("pull", url=shown)
        decision = await self.admit(channel_id, rec.url)
        if not decision.allowed:
            self.counters[f"refused:{decision.reason.value}"] += 1
            await self._audit_refusal(channel_id, shown, decision)
            log.warning("pull %s refused: %s (%s)", channel_id, decision.reason.value, decision.detail)
            raise NotAdmitted(f"pull source {channel_id} is not admitted: {decision.reason.value}: {decision.detail}")
        connect = src.path if src.is_file else src.with_credentials(rec.username, rec.password, decision.address)
        session = PullSession(self, channel_id, connect, shown, src.scheme, sink, asyncio.get_running_loop(), trace)
        self.sessions[channel_id] = session
        self.counters["opens"] += 1
        session.start()
        return session

    # -- health ----------------------------------------------------------------------------

    def stream_up(self, channel_id: str, shown: str) -> None:
        self.counters["up"] += 1
        self._health(channel_id, "online", "pull_connected", {"url": shown})

    def stream_down(self, channel_id: str, cause: str, error: str, shown: str) -> None:
        self.counters[f"down:{cause}"] += 1
        self._health(channel_id, "offline", cause, {"url": shown, "error": error[:300]})

    def _health(self, channel_id: str, state: str, cause: str, evidence: Mapping[str, Any]) -> None:
        if self.health is not None:
            self.health.set_state(f"channel:{channel_id}", state, cause, self.wall_clock(), evidence)

    # -- always-on supervisor --------------------------------------------------------------

    def _supervise(self, channel_id: str) -> None:
        src = self.book.get(channel_id)
        want = src is not None and src.enabled and src.always_on and self.hub is not None
        hold = self._holds.get(channel_id)
        if want and (hold is None or hold.done()):
            self._holds[channel_id] = self._tasks.spawn(self._hold(channel_id), name=f"hold:{channel_id}")
        elif not want and hold is not None:
            self._holds.pop(channel_id, None)
            hold.cancel()

    async def _hold(self, channel_id: str) -> None:
        """Keep an always-on source open: a frames subscription drained and dropped, renewed
        with back-off when the hub ends the stream or gives up waiting for video."""
        st = self.settings
        attempt = 0
        while (src := self.book.get(channel_id)) is not None and src.enabled and src.always_on and self.hub:
            try:
                sub = await self.hub.subscribe(channel_id, FRAMES, timeout=st.hold_timeout)
            except StreamError as exc:
                self.counters["hold_retries"] += 1
                log.debug("always-on %s: %s", channel_id, scrub(str(exc)))
                await asyncio.sleep(backoff(attempt, st.backoff_min, st.backoff_max))
                attempt += 1
                continue
            attempt = 0
            try:
                while await sub.get_batch(256):
                    pass
            finally:
                sub.close("hold_released")

    # -- lifecycle -------------------------------------------------------------------------

    async def reload(self) -> None:
        if self.loader is not None:
            self.replace_all(await self.loader())

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            try:
                await self.reload()
            except Exception:
                log.exception("reloading pull sources failed")

    async def start(self) -> None:
        await self.reload()
        for channel_id in list(self.book):
            self._supervise(channel_id)
        if self.loader is not None:
            self._tasks.spawn(self._reload_loop(), name="pull-sources-reload")

    async def stop(self) -> None:
        self._holds.clear()
        await self._tasks.close()
        # concurrently: each may wait for its worker's open/read timeout
        await asyncio.gather(*(s.close() for s in list(self.sessions.values())), return_exceptions=True)

    def snapshot(self) -> dict[str, Any]:
        return {"sources": len(self.book), "open": {c: s.stats() for c, s in self.sessions.items()},
                "always_on_held": sorted(c for c, t in self._holds.items() if not t.done()), **self.counters}
