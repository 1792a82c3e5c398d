"""The cascade plane: one `CascadeUplink` per `[[cascade]]` entry (gb28181.md §7), entered after the
SIP and media planes (it sends through the SIP endpoint and relays streams from the hub) and left
before them, so each uplink still unregisters from its upper on the way down."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from adapters.cascade.registration import UplinkConfig, UplinkState
from adapters.cascade.relay import StreamRelay
from adapters.cascade.uplink import CascadeUplink, UplinkOptions
from gateway import __version__
from gateway.app.media import MediaPlane
from gateway.app.sip import SipPlane
from gateway.config import CascadePlatform, Settings
from gateway.gb.items import CatalogItem
from gateway.gb.presence import Presence
from gateway.health.metrics import CounterSource, Metrics
from gateway.health.recorder import HealthRecorder
from gateway.store.inventory import StoreInventory
from whitelist.decide import Policy
from whitelist.model import EntryStatus


class AdmittedChannels:
    """`ChannelDirectory` over the store: exposed channels of devices that are admitted now
    (an approved whitelist entry, or a live registration), status OFF while their device is offline."""

    def __init__(self, inventory: StoreInventory, policy: Policy, presence: Presence) -> None:
        self.inventory = inventory
        self.policy = policy
        self.presence = presence

    async def admitted_channels(self) -> Sequence[CatalogItem]:
        out = []
        for device_id, item in await self.inventory.exposed_channels():
            entry = self.policy.get(device_id)
            rec = self.presence.get(device_id)
            if (entry is None or entry.status is not EntryStatus.APPROVED) and rec is None:
                continue
            online = rec is not None and rec.online and item.status != "OFF"
            out.append(dataclasses.replace(item, status="ON" if online else "OFF"))
        return out


#: Families for CounterSource(plane.counters, CASCADE_FAMILIES): refusals and alarms join the SIP
#: plane's families of the same name; the rest are the uplinks' own.
CASCADE_FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "refused": ("gbgate_refusals_total", "Requests refused, by reason", ("reason",)),
    "alarms": ("gbgate_security_alarms_total", "Security alarms raised, by kind", ("kind",)),
    "state": ("gbgate_cascade_state_changes_total", "Uplink online/offline changes", ("state",)),
    "invite": ("gbgate_cascade_invites_total", "INVITEs from upper platforms, by outcome", ("outcome",)),
    "stream_seconds": ("gbgate_cascade_stream_seconds_total", "Seconds of plays served to upper platforms", ()),
}


@dataclass(slots=True)
class CascadePlane:
    uplinks: list[CascadeUplink]

    def counters(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for u in self.uplinks:
            out.update(u.stats)
            if u.relay is not None and isinstance(u.relay, StreamRelay):
                out.update(u.relay.stats)
        return out

    def online(self) -> int:
        return sum(u.state is UplinkState.ONLINE for u in self.uplinks)

    def states(self) -> dict[str, str]:
        return {u.config.upper_id: u.state.value for u in self.uplinks}


def uplink_config(s: Settings, c: CascadePlatform, contact_host: str, sip_port: int) -> UplinkConfig:
    return UplinkConfig(
        upper_id=c.id, upper_domain=c.domain, upper_host=c.host, upper_port=c.port, transport=c.transport,
        our_id=s.sip.id, our_domain=s.sip.domain, contact=f"<sip:{s.sip.id}@{contact_host}:{sip_port}>",
        user_agent=s.sip.user_agent, password=c.password, username=c.username, expires=c.expires,
        keepalive_interval=c.keepalive_interval, keepalive_failures=c.keepalive_failures,
        retry_interval=c.retry_interval, charset=c.charset,
    )


@asynccontextmanager
async def cascade_plane(settings: Settings, sip: SipPlane, media: MediaPlane, inventory: StoreInventory,
                        health: HealthRecorder, metrics: Metrics,
                        clock: Callable[[], float]) -> AsyncIterator[CascadePlane]:
    """Install and start one uplink (and its stream relay) per upper; on exit stop them in reverse
    (plays end, then each uplink unregisters)."""
    s = settings
    sdp_host = s.media.host if s.media.host not in ("0.0.0.0", "::") else sip.endpoint.advertise
    directory = AdmittedChannels(inventory, sip.adapter.policy, sip.presence)
    plane = CascadePlane([])
    async with AsyncExitStack() as stack:
        for c in s.cascade:
            port = sip.endpoint.tcp_port if c.transport == "tcp" else sip.endpoint.udp_port
            config = uplink_config(s, c, sip.endpoint.advertise, port)
            relay = StreamRelay(endpoint=sip.endpoint, router=sip.router, hub=media.hub, pool=media.pool,
                                media_host=s.media.host, sdp_host=sdp_host, contact=config.contact,
                                invite_timeout=s.media.invite_timeout)
            uplink = CascadeUplink(
                config=config,
                options=UplinkOptions(channels=c.channels, catalog_per_message=c.catalog_per_message,
                                      catalog_wait=c.catalog_wait, catalog_spacing=c.catalog_spacing,
                                      name=f"gbgate {s.sip.id}", firmware=__version__, ptz=c.ptz),
                endpoint=sip.endpoint, directory=directory, health=health, audit=sip.admission, clock=clock,
                relay=relay, control=sip.adapter,
            )
            uplink.install(sip.router)
            stack.push_async_callback(uplink.stop)
            stack.push_async_callback(relay.stop)
            await uplink.start()
            plane.uplinks.append(uplink)
        if plane.uplinks:
            metrics.add_counters(CounterSource(plane.counters, CASCADE_FAMILIES))
            metrics.add_gauge("gbgate_cascade_uplinks", "Configured upper platforms", lambda: len(plane.uplinks))
            metrics.add_gauge("gbgate_cascade_uplinks_online", "Upper platforms we are registered with",
                              plane.online)
        yield plane
