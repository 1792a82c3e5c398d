"""The media plane: port pool, INVITE dialogs through the device adapter's endpoint, the stream hub.
Left before the SIP plane, so BYEs still go out."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from adapters.gb_device import GbDeviceAdapter
from adapters.gb_media import InviteManager
from gateway.app.status import alive
from gateway.config import Settings
from gateway.health.metrics import CounterSource, Metrics
from gateway.health.recorder import HealthRecorder
from gateway.health.rules import NoVideoRule
from gateway.media.hub import StreamHub
from gateway.media.pool import PortPool
from gateway.media.routing import RoutedOpener
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

    async def start(self) -> None:
        await self.hub.start()
        await self.invites.start()

    async def stop(self) -> None:
        await self.hub.stop()
        await self.invites.stop()

    def status(self) -> str:
        return alive(self.hub.running)

    def counters(self) -> Counter[str]:
        """One Counter for gateway.health.metrics.CounterSource (see MEDIA_FAMILIES)."""
        out = self.invites.metrics_counters()
        for k, v in self.hub.counters.items():
            out[f"hub:{k}"] = v
        for k, v in self.pool.stats().items():
            out[f"pool:{k}"] = v
        return out


def install_media(*, adapter: GbDeviceAdapter, router: SipRouter, endpoint: SipEndpoint, settings: Settings,
                  repo: Any, metrics: Metrics | None = None, clock: Any = time.time) -> MediaPlane:
    """Build the media plane: INVITE dialogs through the device adapter's endpoint, routed back by
    `router`, torn down when the adapter reports a device offline."""
    m = settings.media
    pool = PortPool(m.port_min, m.port_max, settings.sip.domain)
    invites = InviteManager(endpoint=endpoint, requests=adapter.requests, presence=adapter.presence,
                            policy=adapter.policy, channels=adapter.catalog, dialogs=router, pool=pool, media=m,
                            repo=repo, wall_clock=clock)
    adapter.offline_listeners.append(invites.on_device_gone)
    routes = RoutedOpener(invites)  # GB channels by default; pull sources claim theirs (gateway.app.sources)
    hub = StreamHub(routes, linger=m.linger, ready_timeout=m.invite_timeout, queue_size=m.viewer_queue,
                    viewer_backlog=m.viewer_backlog)
    plane = MediaPlane(pool, invites, hub, routes)
    if metrics is not None:
        metrics.add_counters(CounterSource(plane.counters, MEDIA_FAMILIES))
        metrics.add_gauge("gbgate_media_streams", "Live streams open now", lambda: len(hub.streams()))
        metrics.add_gauge("gbgate_media_viewers", "Viewers connected now", lambda: hub.gauges()["viewers"])
        metrics.add_gauge("gbgate_media_ports_in_use", "Media ports leased now", lambda: pool.in_use)
    return plane


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
        yield plane
    finally:
        await plane.stop()
