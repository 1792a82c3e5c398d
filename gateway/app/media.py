"""The media plane: port pool, INVITE dialogs through the device adapter's endpoint, the stream hub.
Left before the SIP plane, so BYEs still go out.

With `media.workers` > 1 (issue 15) the RTP ingest and HTTP/WS-FLV viewers of GB channels live in
media worker processes (gateway.media_workers): the INVITE manager receives through
`RemoteIngest`, and this process's hub keeps pull sources and gets frames for WebRTC, snapshots
and cascade relays from the owning worker (`FeedOpener`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from adapters.gb_device import GbDeviceAdapter
from adapters.gb_media import InviteManager
from gateway.app.status import alive
from gateway.config import Settings, media_worker_count
from gateway.health.metrics import CounterSource, Metrics
from gateway.health.recorder import HealthRecorder
from gateway.health.rules import NoVideoRule
from gateway.media.hub import StreamHub
from gateway.media.pool import PoolSet, PortPool
from gateway.media.routing import RoutedOpener
from gateway.media_workers.pool import MediaWorkers
from gateway.media_workers.remote import FeedOpener, RemoteIngest
from gateway.sip.router import SipRouter
from gateway.sip.transport import SipEndpoint

#: Families for CounterSource(plane.counters, MEDIA_FAMILIES).
MEDIA_FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "invite": ("gbgate_media_invites_total", "INVITEs sent and their outcomes", ("outcome",)),
    "reinvite": ("gbgate_media_reinvites_total", "re-INVITEs after a media timeout", ("outcome",)),
    "bye": ("gbgate_media_byes_total", "BYEs sent/received and outcomes", ("outcome",)),
    "rtp": ("gbgate_rtp_packets_total", "RTP counters of all media sessions", ("kind",)),
    "hub": ("gbgate_media_hub_events_total", "Stream hub events (opens, closes, viewer drops)", ("event",)),
}


@dataclass(slots=True)
class MediaPlane:
    """Everything install_media built; start/stop in this order."""

    pool: PortPool
    invites: InviteManager
    hub: StreamHub
    routes: RoutedOpener | None = None  # other source kinds (pull sources) add their route here
    workers: MediaWorkers | None = None  # media.workers > 1: GB ingest and FLV viewers live there

    @property
    def own_ports(self) -> PortPool | PoolSet:
        """Where main's own media sockets (the cascade relay's) lease ports: `pool`, or with
        workers their slices' pools, so that a port is never both a worker's and main's."""
        if self.workers is None:
            return self.pool
        return self.workers.slices

    async def start(self) -> None:
        await self.hub.start()
        if self.workers is not None:
            await self.workers.start()
        await self.invites.start()

    async def stop(self) -> None:
        await self.hub.stop()
        await self.invites.stop()
        if self.workers is not None:
            await self.workers.stop()

    def status(self) -> str:
        down = [w.index for w in self.workers.workers if not w.alive] if self.workers is not None else []
        if down and self.hub.running:
            return f"media worker {', '.join(map(str, down))} restarting"
        return alive(self.hub.running)

    def gauges(self) -> dict[str, int]:
        """Streams and viewers now, the workers' included (their counts from the last tick)."""
        g = dict(self.hub.gauges())
        if self.workers is not None:
            sinks = [s for w in self.workers.workers for s in w.sinks.values()]
            g["streams"] += len(sinks)
            g["viewers"] += sum(s.viewers for s in sinks)
        return g

    def counters(self) -> Counter[str]:
        """One Counter for gateway.health.metrics.CounterSource (see MEDIA_FAMILIES)."""
        out = self.invites.metrics_counters()
        for k, v in self.hub.counters.items():
            out[f"hub:{k}"] = v
        for k, v in self.pool.stats().items():
            out[f"pool:{k}"] = v
        if self.workers is not None:
            for k, v in self.workers.counters.items():
                out[f"hub:workers_{k}"] = v
        return out


def install_media(*, adapter: GbDeviceAdapter, router: SipRouter, endpoint: SipEndpoint, settings: Settings,
                  repo: Any, metrics: Metrics | None = None, clock: Any = time.time) -> MediaPlane:
    """Build the media plane: INVITE dialogs through the device adapter's endpoint, routed back by
    `router`, torn down when the adapter reports a device offline."""
    m = settings.media
    pool = PortPool(m.port_min, m.port_max, settings.sip.domain)
    n = media_worker_count(m)
    workers = None
    if n > 1:
        workers = MediaWorkers(m, n, domain=settings.sip.domain, loop_kind=_loop_kind(),
                               log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()))
    invites = InviteManager(endpoint=endpoint, requests=adapter.requests, presence=adapter.presence,
                            policy=adapter.policy, channels=adapter.catalog, dialogs=router, pool=pool, media=m,
                            repo=repo, wall_clock=clock, ingest=RemoteIngest() if workers is not None else None)
    adapter.offline_listeners.append(invites.on_device_gone)
    # GB channels by default (in this process, or fed from their worker); pull sources claim theirs
    # (gateway.app.sources) and always stay in this process
    routes = RoutedOpener(invites if workers is None else FeedOpener(workers.owner))
    hub = StreamHub(routes, linger=m.linger, ready_timeout=m.invite_timeout, queue_size=m.viewer_queue,
                    viewer_backlog=m.viewer_backlog)
    if workers is not None:
        workers.invites = invites
        workers.claimed_by_main = lambda key: routes.opener_for(key) is not routes.default
    plane = MediaPlane(pool, invites, hub, routes, workers)
    if metrics is not None:
        metrics.add_counters(CounterSource(plane.counters, MEDIA_FAMILIES))
        metrics.add_gauge("gbgate_media_streams", "Live streams open now", lambda: plane.gauges()["streams"])
        metrics.add_gauge("gbgate_media_viewers", "Viewers connected now", lambda: plane.gauges()["viewers"])
        metrics.add_gauge("gbgate_media_ports_in_use", "Media ports leased now",
                          lambda: pool.in_use + (sum(w.pool.in_use for w in workers.workers) if workers else 0))
    return plane


def _loop_kind() -> str:
    """The workers run the event loop this process runs (uvloop or asyncio's own)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "asyncio"
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


@asynccontextmanager
async def media_plane(*, adapter: GbDeviceAdapter, router: SipRouter, endpoint: SipEndpoint, settings: Settings,
                      repo: Any, metrics: Metrics, health: HealthRecorder,
                      clock: Callable[[], float]) -> AsyncIterator[MediaPlane]:
    """install_media, started, with the no-video health rule listening to the hub."""
    plane = install_media(adapter=adapter, router=router, endpoint=endpoint, settings=settings, repo=repo,
                          metrics=metrics, clock=clock)
    await plane.start()
    try:
        plane.hub.on_video = NoVideoRule(health, clock)
        if plane.workers is not None:
            plane.workers.on_video = plane.hub.on_video
        yield plane
    finally:
        await plane.stop()
