"""Scheduled and on-demand picture-quality probing of running streams (issue 5 §2).

Every `interval` seconds (`health.probe_interval`) the runner takes, for each channel the hub is
already streaming, the latest keyframe (`hub.latest_keyframe` → frame and parameter sets), decodes
it with PyAV in a worker thread (architecture.md rule 11), measures it against the previous
probe's picture (`probe.measure`/`faults_from`) and feeds the channel's `FaultTracker`. A
confirmed change becomes a ledger transition through the health recorder:
`picture_fault` (cause = the faults, evidence = the metrics) or back to `online`.

Scheduled probes never open a stream: pulling video from every camera every quarter hour would
cost the site's uplink more than the viewers do. An on-demand probe (`POST
/api/v1/channels/{id}/probe`) may open one: it subscribes "frames" and waits for a keyframe with a
timeout, then lets the hub's linger close it.

The recorder's state wins over the tracker: a fault opens only on a channel that is `online`
(or unknown to the recorder), closes only while it is still `picture_fault`, and if the channel
left `picture_fault` some other way (offline, reconnect) the tracker starts over — after a
reconnection the timeline presumes the picture good until `repeat` probes say otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.health.errors import ProbeError
from gateway.health.probe import FaultTracker, ProbeThresholds, faults_from, measure
from gateway.media.frames import Codec, MediaFrame
from gateway.media.keyframe import KeyframeError, complete_keyframe
from gateway.media.keyframe import decode_keyframe as decode_to_frame
from gateway.media.nal import ParameterSets

if TYPE_CHECKING:  # numpy loads with the first probe
    import numpy as np

log = logging.getLogger(__name__)



@dataclass(slots=True)
class ProbeResult:
    """What one probe of one channel found; `change` is "opened"/"closed" when the ledger moved."""

    channel_id: str
    ts: float
    faults: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    change: str | None = None
    fault_open: bool = False
    width: int = 0
    height: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "ts": self.ts,
            "faults": self.faults,
            "metrics": self.metrics,
            "change": self.change,
            "picture_fault": self.fault_open,
            "width": self.width,
            "height": self.height,
            "error": self.error,
        }


def decode_keyframe(codec: Codec, data: bytes) -> np.ndarray[Any, Any]:
    """One keyframe access unit → BGR image. Blocking: call in a worker thread."""
    try:
        return decode_to_frame(codec, data).to_ndarray(format="bgr24")  # type: ignore[no-any-return]
    except KeyframeError as exc:
        raise ProbeError(str(exc)) from None


def _frame_key(frame: MediaFrame) -> tuple[Any, ...]:
    return frame.pts, frame.dts, len(frame.data), frame.data[-32:]


@dataclass(slots=True)
class _Channel:
    tracker: FaultTracker
    previous: np.ndarray[Any, Any] | None = None
    previous_key: tuple[Any, ...] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ProbeRunner:
    """Probes running streams on a schedule and on demand; records picture faults in the ledger."""

    def __init__(
        self,
        hub: Any,
        health: Any,
        *,
        interval: float = 900.0,
        repeat: int = 3,
        thresholds: ProbeThresholds | None = None,
        clock: Callable[[], float] = time.time,
        concurrency: int = 4,
        on_demand_timeout: float = 10.0,
        decode: Callable[[Codec, bytes], np.ndarray[Any, Any]] = decode_keyframe,
    ) -> None:
        self.hub = hub
        self.health = health
        self.interval = interval
        self.repeat = repeat
        self.thresholds = thresholds or ProbeThresholds()
        self.clock = clock
        self.on_demand_timeout = on_demand_timeout
        self.decode = decode
        self._sem = asyncio.Semaphore(concurrency)
        self._channels: dict[str, _Channel] = {}
        self._task: asyncio.Task[None] | None = None
        self.probes = 0
        self.failures = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="picture-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.probe_all()
            except Exception:
                log.exception("picture probe round failed; next round in %g s", self.interval)

    def running_channels(self) -> list[str]:
        return [s.channel_id for s in self.hub.streams()]

    async def probe_all(self) -> list[ProbeResult]:
        """One round over every channel with a running stream (none is opened for it)."""
        ids = self.running_channels()
        for gone in set(self._channels) - set(ids):
            ch = self._channels[gone]
            ch.previous, ch.previous_key = None, None  # free the picture; keep the tracker's state
        results = await asyncio.gather(*(self.probe_channel(cid) for cid in ids), return_exceptions=True)
        out = []
        for cid, r in zip(ids, results, strict=True):
            if isinstance(r, BaseException):
                log.warning("probe of %s failed: %s", cid, r)
                continue
            if r is not None:
                out.append(r)
        return out

    async def probe_channel(self, channel_id: str, *, open_stream: bool = False) -> ProbeResult | None:
        """Probe one channel now. With `open_stream`, a channel not streaming is opened (hub
        StreamErrors propagate); without, such a channel is skipped (None)."""
        latest = self.hub.latest_keyframe(channel_id)
        if latest is None:
            if not open_stream:
                return None
            latest = await self._fetch_keyframe(channel_id)
        frame, known = latest
        ch = self._channels.setdefault(channel_id, _Channel(FaultTracker(self.repeat)))
        async with ch.lock, self._sem:
            return await self._probe(channel_id, ch, frame, known)

    async def _fetch_keyframe(self, channel_id: str) -> tuple[MediaFrame, ParameterSets | None]:
        sub = await self.hub.subscribe(channel_id, "frames", timeout=self.on_demand_timeout)

        async def first() -> MediaFrame:
            async for frame in sub:
                if frame.kind == "video" and frame.keyframe:
                    return frame  # type: ignore[no-any-return]
            raise ProbeError(f"the stream of {channel_id} ended before a keyframe")

        try:
            frame = await asyncio.wait_for(first(), self.on_demand_timeout)
        except TimeoutError:
            raise ProbeError(f"no keyframe from {channel_id} within {self.on_demand_timeout:g} s") from None
        finally:
            sub.close("probe")
        latest = self.hub.latest_keyframe(channel_id)
        return frame, (latest[1] if latest is not None else None)

    async def _probe(
        self, channel_id: str, ch: _Channel, frame: MediaFrame, known: ParameterSets | None
    ) -> ProbeResult:
        now = self.clock()
        result = ProbeResult(channel_id, now)
        self.probes += 1
        key = _frame_key(frame)
        # the same keyframe again (a probe sooner than the GOP) proves nothing about freezing
        previous = ch.previous if key != ch.previous_key else None
        try:
            image = await asyncio.to_thread(self.decode, frame.codec, complete_keyframe(frame, known))
            metrics = await asyncio.to_thread(measure, image, previous, self.thresholds)
        except ProbeError as exc:
            self.failures += 1
            result.error = str(exc)
            result.fault_open = ch.tracker.is_open
            return result
        faults = faults_from(metrics, self.thresholds)
        if key != ch.previous_key:
            ch.previous, ch.previous_key = image, key
        result.faults = [str(f) for f in faults]
        result.metrics = metrics.as_evidence()
        result.height, result.width = int(image.shape[0]), int(image.shape[1])
        subject = f"channel:{channel_id}"
        state = self._state(subject)
        if state == "picture_fault" and not ch.tracker.is_open:
            ch.tracker.is_open = True  # the fault predates this runner (a restart): adopt it
        elif ch.tracker.is_open and state not in (None, "picture_fault"):
            ch.tracker = FaultTracker(self.repeat)  # closed elsewhere (offline, reconnect): start over
        change = ch.tracker.update(faults, now)
        if change is not None:
            evidence = {"faults": list(change.faults), "metrics": result.metrics, "pts": frame.pts}
            if change.opened and state in (None, "online"):
                await self._record(subject, "picture_fault", change.cause, change.ts, evidence)
                result.change = "opened"
            elif not change.opened and state in (None, "picture_fault"):
                await self._record(subject, "online", change.cause, change.ts, evidence)
                result.change = "closed"
        result.fault_open = ch.tracker.is_open
        return result

    def _state(self, subject: str) -> str | None:
        getter = getattr(self.health, "state_of", None)
        if getter is None:
            return None
        st = getter(subject)
        return None if st is None else str(st)

    async def _record(self, subject: str, state: str, cause: str, ts: float, evidence: dict[str, Any]) -> None:
        pending = self.health.set_state(subject, state, cause, ts, evidence)
        if pending is not None:
            await pending  # durable before we report the change
        log.info("%s → %s (%s)", subject, state, cause)
