"""The cascade plane: one `CascadeUplink` per `[[cascade]]` entry (gb28181.md §7), entered after the
SIP and media planes (it sends through the SIP endpoint and relays streams from the hub) and left
before them, so each uplink still unregisters from its upper on the way down.

Channel changes reach the uplinks without the device adapter knowing about them: the node hands
the adapter a `ChangeTap` around its health sink and a `NotifyingInventory` around the store, both
of which poke a `ChangeFeed` when a device or channel changes state or a catalog write commits.
The feed waits for quiet (`Debounce`), lists the admitted channels once and hands them to every
uplink, which diffs them against what its upper was last told and NOTIFYs its subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from adapters.base import HealthSink
from adapters.cascade.answers import Channel
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
from gateway.health.timeline import State
from gateway.store.devices import DeviceRepository
from gateway.store.inventory import StoreInventory
from gateway.store.sources import SourceRecord
from whitelist.decide import Policy
from whitelist.model import EntryStatus

log = logging.getLogger("gateway.cascade")


class AdmittedChannels:
    """`ChannelDirectory` over the store: exposed channels of devices that are admitted now
    (an approved whitelist entry, or a live registration), status OFF while their device is offline,
    labelled with the device's whitelist site and the channel contract's vendor (`sites`/`vendors`)."""

    def __init__(self, inventory: StoreInventory, policy: Policy, presence: Presence, *,
                 pulled: Callable[[], Awaitable[Sequence[SourceRecord]]] | None = None,
                 state_of: Callable[[str], State | None] | None = None) -> None:
        self.inventory = inventory
        self.policy = policy
        self.presence = presence
        self.pulled = pulled  # RTSP/RTMP/file sources: channels of their own, admitted by their entry
        self.state_of = state_of

    async def admitted_channels(self) -> Sequence[Channel]:
        out = []
        vendors = await self.inventory.channel_vendors()
        for device_id, item in await self.inventory.exposed_channels():
            entry = self.policy.get(device_id)
            rec = self.presence.get(device_id)
            if (entry is None or entry.status is not EntryStatus.APPROVED) and rec is None:
                continue
            online = rec is not None and rec.online and item.status != "OFF"
            out.append(Channel(device_id, dataclasses.replace(item, status="ON" if online else "OFF"),
                               site=entry.site if entry is not None else "",
                               vendor=vendors.get(item.device_id, "")))
        for src in await self.pulled() if self.pulled is not None else ():
            entry = self.policy.get(src.channel_id)
            if not src.enabled or entry is None or entry.status is not EntryStatus.APPROVED:
                continue
            state = self.state_of(f"channel:{src.channel_id}") if self.state_of is not None else None
            item = CatalogItem(device_id=src.channel_id, name=src.name or src.channel_id, manufacturer="RTSP",
                               status="ON" if state is State.online else "OFF")
            out.append(Channel(src.channel_id, item, site=src.site or entry.site,
                               vendor=vendors.get(src.channel_id, "")))
        return out


@dataclass(slots=True)
class Debounce:
    """When to look again after pokes, sans-IO: `delay` after the last poke, but no later than
    `max_delay` after the first one (a device flapping every second still gets reported)."""

    delay: float = 1.0
    max_delay: float = 5.0
    _first: float | None = None
    _last: float = 0.0

    def poke(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    def next_timer(self) -> float | None:
        if self._first is None:
            return None
        return min(self._last + self.delay, self._first + self.max_delay)

    def due(self, now: float) -> bool:
        """True (and reset) when the quiet period is over."""
        at = self.next_timer()
        if at is None or now < at:
            return False
        self._first = None
        return True


class ChangeFeed:
    """Debounced "the admitted channels may have changed": pokes in, one `refresh()` call out per
    quiet period (never two at once; a poke during a refresh schedules another)."""

    def __init__(self, *, delay: float = 1.0, max_delay: float = 5.0) -> None:
        self.debounce = Debounce(delay, max_delay)
        self.refresh: Callable[[], Awaitable[None]] | None = None
        self.pokes = 0
        self.refreshes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None

    def poke(self) -> None:
        if self.refresh is None:
            return  # nobody listens (no uplink yet, or the plane has stopped)
        loop = asyncio.get_running_loop()
        self.pokes += 1
        self.debounce.poke(loop.time())
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        at = self.debounce.next_timer()
        if at is None or self._running is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        if self.refresh is None or not self.debounce.due(loop.time()):
            self._arm(loop)
            return
        self._running = loop.create_task(self._run(self.refresh))

    async def _run(self, refresh: Callable[[], Awaitable[None]]) -> None:
        try:
            self.refreshes += 1
            await refresh()
        except Exception:
            log.exception("cascade: channel refresh failed")
        finally:
            self._running = None
            self._arm(asyncio.get_running_loop())

    async def close(self) -> None:
        self.refresh = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running is not None:
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running


class ChangeTap:
    """A `HealthSink` in front of the ledger: device and channel state changes also poke the feed."""

    def __init__(self, inner: HealthSink, feed: ChangeFeed) -> None:
        self.inner = inner
        self.feed = feed

    def set_state(self, subject: str, state: str, cause: str, ts: float,
                  evidence: Mapping[str, Any] | None = None) -> Awaitable[None] | None:
        pending = self.inner.set_state(subject, state, cause, ts, evidence)
        if pending is not None and subject.startswith(("device:", "channel:")):
            self.feed.poke()
        return pending


class NotifyingInventory(StoreInventory):
    """The store as the device adapter writes it, poking the feed once a catalog write commits
    (a NOTIFY to an upper must not race the row it describes)."""

    def __init__(self, repo: DeviceRepository, feed: ChangeFeed) -> None:
        super().__init__(repo)
        self.feed = feed

    def apply_catalog(self, device_id: str, added: Iterable[Any], updated: Iterable[Any], removed: Iterable[str],
                      exposed: set[str]) -> Awaitable[None]:
        return self._then_poke(super().apply_catalog(device_id, added, updated, removed, exposed))

    async def _then_poke(self, written: Awaitable[None]) -> None:
        try:
            await written
        finally:
            self.feed.poke()


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
    directory: AdmittedChannels | None = None

    async def refresh(self) -> None:
        """List the admitted channels once; each uplink diffs and NOTIFYs its subscribers."""
        if self.directory is None or not self.uplinks:
            return
        channels = await self.directory.admitted_channels()
        for u in self.uplinks:
            u.channels_changed(channels)

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


#: A look at the admitted channels this often even without a poke: what changes without a device
#: or channel event (a whitelist entry approved or given another site, a contract's vendor).
SWEEP_INTERVAL = 60.0


async def _sweep(feed: ChangeFeed, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        feed.poke()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@asynccontextmanager
async def cascade_plane(settings: Settings, sip: SipPlane, media: MediaPlane, inventory: StoreInventory,
                        health: HealthRecorder, metrics: Metrics, clock: Callable[[], float],
                        feed: ChangeFeed | None = None,
                        pulled: Callable[[], Awaitable[Sequence[SourceRecord]]] | None = None,
                        ) -> AsyncIterator[CascadePlane]:
    """Install and start one uplink (and its stream relay) per upper; on exit stop them in reverse
    (plays end, then each uplink unregisters)."""
    s = settings
    sdp_host = s.media.host if s.media.host not in ("0.0.0.0", "::") else sip.endpoint.advertise
    directory = AdmittedChannels(inventory, sip.adapter.policy, sip.presence, pulled=pulled,
                                 state_of=health.state_of)
    plane = CascadePlane([], directory)
    async with AsyncExitStack() as stack:
        for c in s.cascade:
            port = sip.endpoint.tcp_port if c.transport == "tcp" else sip.endpoint.udp_port
            config = uplink_config(s, c, sip.endpoint.advertise, port)
            relay = StreamRelay(endpoint=sip.endpoint, router=sip.router, hub=media.hub, pool=media.own_ports,
                                media_host=s.media.host, sdp_host=sdp_host, contact=config.contact,
                                invite_timeout=s.media.invite_timeout, upper_id=c.id, health=health, clock=clock)
            uplink = CascadeUplink(
                config=config,
                options=UplinkOptions(channels=c.channels, sites=c.sites, vendors=c.vendors,
                                      catalog_per_message=c.catalog_per_message,
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
        if feed is not None and plane.uplinks:
            feed.refresh = plane.refresh
            stack.push_async_callback(feed.close)
            sweep = asyncio.create_task(_sweep(feed, SWEEP_INTERVAL), name="cascade-sweep")
            stack.push_async_callback(_cancel, sweep)
        if plane.uplinks:
            metrics.add_counters(CounterSource(plane.counters, CASCADE_FAMILIES))
            metrics.add_gauge("gbgate_cascade_uplinks", "Configured upper platforms", lambda: len(plane.uplinks))
            metrics.add_gauge("gbgate_cascade_uplinks_online", "Upper platforms we are registered with",
                              plane.online)
        yield plane
