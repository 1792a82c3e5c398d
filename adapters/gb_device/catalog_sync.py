"""Catalog sync: post-login workers, the catalog diff against what was applied, and applying it.

After a power cut thousands of devices register at once; a fixed number of workers drain a
de-duplicated queue (DeviceInfo, then Catalog). An assembled catalog is diffed in memory
against the last one applied (the store is read once, in bulk), written through the batched
inventory writer without waiting, and turned into channel states in the health ledger.
Ownership never moves silently: an item naming another device's channel (or another device's
own ID) is dropped and alarmed (issue 10 #4). Channels beyond the whitelist entry's
`max_channels` are kept but not exposed (issue 3); items outside the entry's `channel_ranges` (a lower
platform's allowed channel IDs, issue 14 #2) are not stored at all, counted, and said once per sync
as a `channel_out_of_range` event; a play for one is refused. A play request for a channel not known yet
waits, bounded, while syncs are in flight (issue 12 #3).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from adapters.base import HealthSink, Inventory
from adapters.gb_device.queries import Queries, QueryFailed
from gateway.gb.catalog import CatalogAssembler, CatalogDiff, CatalogResult
from gateway.gb.ids import IdKind, is_playable_channel, kind_of
from gateway.gb.manscdp import CatalogPage
from gateway.gb.presence import PLATFORM_OFFLINE, Presence
from gateway.sip.errors import SipError
from gateway.sip.events import Peer
from whitelist.decide import Policy
from whitelist.model import EntryStatus
from whitelist.ranges import ChannelRanges, format_channel_ranges, in_channel_ranges

log = logging.getLogger("adapters.gb_device")

Spawn = Callable[..., "asyncio.Task[Any]"]

#: Catalog items that are containers, not channels: stored apart, never playable, never counted.
ORG_KINDS = frozenset({IdKind.REGION, IdKind.BUSINESS_GROUP, IdKind.VIRTUAL_ORG, IdKind.DEVICE, IdKind.PLATFORM})
#: Org nodes kept per device: a hostile platform must not fill the store with groups.
MAX_NODES = 5000
#: channel IDs remembered as listed outside a device's ranges (for the play refusal), in all
MAX_OUT_OF_RANGE = 20_000
#: IDs named in one channel_out_of_range event
OUT_OF_RANGE_SAMPLE = 10
AlarmSink = Callable[[str, str, Peer, str], None]


class CatalogSync:
    """Channels of every device: who owns which, which are exposed, and keeping them current."""

    def __init__(
        self,
        *,
        queries: Queries,
        presence: Presence,
        policy: Policy,
        inventory: Inventory,
        health: HealthSink,
        stats: Counter[str],
        spawn: Spawn,
        alarm: AlarmSink,
        refresh_info: Callable[[str], Awaitable[Any]],
        clock: Callable[[], float],
        idle_timeout: float = 5.0,
        first_timeout: float = 120.0,
        query_on_register: bool = True,
        play_wait: float = 5.0,
        on_synced: Callable[[str], None] | None = None,
    ) -> None:
        self.queries = queries
        self.presence = presence
        self.policy = policy
        self.inventory = inventory
        self.health = health
        self.stats = stats
        self.spawn = spawn
        self.alarm = alarm
        self.refresh_info = refresh_info
        self.clock = clock
        self.first_timeout = first_timeout
        self.idle_timeout = idle_timeout
        self.query_on_register = query_on_register
        self.play_wait = play_wait
        self.on_synced = on_synced  # told after each post-login sync (the shell subscribes to platforms)
        self.assembler = CatalogAssembler(idle_timeout=idle_timeout, first_timeout=first_timeout)
        self._limits: dict[str, int | None] = {}
        self._ranges: dict[str, ChannelRanges] = {}  # device → its entry's allowed channel IDs
        # channel ID → the device whose catalog listed it outside that device's ranges (bounded):
        # a play for it is refused with the reason instead of "unknown channel"
        self._out_of_range: dict[str, str] = {}
        # exposed channels of each device and whether their catalog said ON: device transitions
        # become channel transitions in the health ledger (reports read channel timelines)
        self._channels: dict[str, dict[str, bool]] = {}
        self._catalog_cache: dict[str, dict[str, int]] = {}  # device → {channel_id: fingerprint}
        self._node_cache: dict[str, int] = {}  # device → fingerprint of its org nodes as last written
        self._hidden: dict[str, int] = {}  # device → channels over its max_channels, as last reported
        self._loaded: asyncio.Future[None] | None = None
        self._writes: dict[str, asyncio.Future[Any]] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        # channel ID → the device that owns it (every stored or accepted catalog item): ownership
        # never moves silently, and the play resolver sees accepted items before the store does
        self._owners: dict[str, str] = {}
        self._syncing: set[str] = set()  # devices whose post-login catalog sync has not finished
        self._applied = asyncio.Event()  # pulsed whenever a catalog is applied or a sync ends

    # ------------------------------------------------------------------ what the device shell reads
    def set_limit(self, device_id: str, max_channels: int | None, ranges: ChannelRanges = ()) -> None:
        """The device's whitelist limits: how many channels are exposed, which IDs it may list."""
        self._limits[device_id] = max_channels
        if ranges:
            self._ranges[device_id] = ranges
        else:
            self._ranges.pop(device_id, None)

    def out_of_range_owner(self, channel_id: str) -> str | None:
        """The device whose catalog listed `channel_id` outside its allowed ranges, if any."""
        owner = self._out_of_range.get(channel_id)
        if owner is None or in_channel_ranges(self._ranges.get(owner, ()), channel_id):
            return None
        return owner

    def channels_of(self, device_id: str) -> dict[str, bool]:
        """Exposed channels of `device_id` → whether its catalog said ON."""
        return self._channels.get(device_id, {})

    def knows(self, device_id: str) -> bool:
        return device_id in self._channels

    def stored_channels(self, device_id: str) -> list[str]:
        return list(self._catalog_cache.get(device_id, {}))

    def owner_of(self, channel_id: str) -> str | None:
        """The device whose catalog (stored or accepted) holds `channel_id`, exposed or not."""
        return self._owners.get(channel_id)

    def handle_timer(self, now: float) -> None:
        for result in self.assembler.handle_timer(now):
            self.catalog_done(result)

    def pending_catalogs(self) -> int:
        return len(self.assembler)

    # ------------------------------------------------------------------ loading
    async def load(self) -> None:
        """Channel ownership is needed from the first MESSAGE on (a platform speaking for a channel)."""
        self._loaded = asyncio.ensure_future(self._load())
        try:
            await asyncio.shield(self._loaded)
        except Exception:
            log.exception("cannot load stored channels now; the first catalog sync tries again")
            self._loaded = None

    async def _load(self) -> None:
        for dev, items in (await self.inventory.all_channels()).items():
            self._catalog_cache.setdefault(dev, {cid: _fingerprint(item) for cid, item in items.items()})
        for dev, fps in self._catalog_cache.items():
            for cid in fps:
                self._owners.setdefault(cid, dev)

    async def _known_fingerprints(self, device_id: str) -> dict[str, int]:
        """The device's channels as last applied: {channel_id: fingerprint}, from memory.

        The store is read once, in bulk, on the first sync after start; after that catalogs are
        diffed in memory, so a registration storm's syncs never wait on the database.
        """
        cached = self._catalog_cache.get(device_id)
        if cached is not None:
            return cached
        if self._loaded is None:
            self._loaded = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loaded)
        return self._catalog_cache.setdefault(device_id, {})

    # ------------------------------------------------------------------ workers
    def start_workers(self, count: int) -> None:
        for i in range(count):
            self.spawn(self._worker(), name=f"device-sync-{i}")

    def queue(self, device_id: str) -> None:
        if self.query_on_register and device_id not in self._pending:
            self._pending.add(device_id)
            self._syncing.add(device_id)
            self._queue.put_nowait(device_id)

    async def _worker(self) -> None:
        """Post-login DeviceInfo + Catalog, a few devices at a time."""
        while True:
            device_id = await self._queue.get()
            self._pending.discard(device_id)
            try:
                await self._sync_one(device_id)
            except Exception:
                log.exception("post-login sync of %s failed", device_id)
            finally:
                if device_id not in self._pending:
                    self._syncing.discard(device_id)
                self._pulse()

    async def _sync_one(self, device_id: str) -> None:
        if device_id not in self.presence:
            return
        try:
            await self.refresh_info(device_id)
        except (QueryFailed, SipError) as exc:
            log.info("DeviceInfo from %s failed: %s", device_id, exc)
        if device_id not in self.presence:
            return  # dropped (model mismatch) or gone meanwhile
        try:
            await self.sync(device_id, wait_written=False)
        except (QueryFailed, SipError) as exc:
            log.info("Catalog from %s failed: %s", device_id, exc)
        except Exception:
            log.exception("catalog sync of %s failed", device_id)
        if self.on_synced is not None and device_id in self.presence:
            self.on_synced(device_id)

    # ------------------------------------------------------------------ one catalog
    async def sync(self, device_id: str, *, wait_written: bool = True) -> CatalogResult:
        """Query the catalog and wait until it is assembled (or timed out) and applied.

        With `wait_written` (the API's on-demand query) also wait until the channels are in the
        store; the post-login workers do not, so they are not paced by the writer's batches.
        """
        sn = self.queries.next_sn()
        fut = self.queries.expect(device_id, "Catalog", sn)
        self.assembler.start(device_id, sn, self.clock())
        try:
            await self.queries.send(device_id, "Catalog", sn)
            limit = self.first_timeout + self.idle_timeout + 5
            result: CatalogResult = await asyncio.wait_for(fut, limit)
            written = self._writes.get(device_id)
            if wait_written and written is not None:
                await written
            return result
        except TimeoutError:
            raise QueryFailed(f"Catalog from {device_id}: no response") from None
        finally:
            self.queries.forget(device_id, "Catalog", sn)

    def on_page(self, device_id: str, page: CatalogPage, now: float) -> None:
        """A Catalog Response page: counts only for a query we sent (issue 10 #4)."""
        if not self.queries.expects(device_id, "Catalog", page.sn):
            self.stats["refused:unsolicited_catalog"] += 1
            return
        result = self.assembler.feed(page, now)
        if result is not None:
            self.catalog_done(result)

    def catalog_done(self, result: CatalogResult) -> None:
        self.stats["catalog:complete" if result.complete else "catalog:incomplete"] += 1
        waiter = self.queries.waiter(result.device_id, "Catalog", result.sn)
        task = self.spawn(self._apply(result), name=f"catalog-{result.device_id}")
        if waiter is not None:
            def wake(_task: asyncio.Task[Any]) -> None:
                if not waiter.done():
                    waiter.set_result(result)

            task.add_done_callback(wake)

    def _exposed(self, device_id: str, channel_ids: list[str]) -> set[str]:
        """Channels beyond the whitelist entry's max_channels are not exposed (issue 3)."""
        limit = self._limits.get(device_id)
        ordered = sorted(channel_ids)
        if limit is not None:
            ordered = ordered[: max(0, limit)]
        return set(ordered)

    def _claimable(self, device_id: str, channel_id: str) -> str | None:
        """Who else owns `channel_id` (another device's channel, or another device's own ID), or None."""
        owner = self._owners.get(channel_id)
        if owner is not None:
            return None if owner == device_id else owner
        if channel_id == device_id:
            return None
        entry = self.policy.get(channel_id)
        # a pending entry is only what some caller claimed: it must not let anyone block a channel
        if channel_id in self.presence or (entry is not None and entry.status is not EntryStatus.PENDING):
            return channel_id
        return None

    async def _apply(self, result: CatalogResult) -> None:
        device_id = result.device_id
        old = await self._known_fingerprints(device_id)
        new = {i.device_id: i for i in result.items if is_playable_channel(i.device_id)}
        self._drop_claimed(device_id, new)
        self._drop_out_of_range(device_id, new)
        self._apply_nodes(result)
        fps = {cid: _fingerprint(item) for cid, item in new.items()}
        added = [item for cid, item in new.items() if cid not in old]
        updated = [item for cid, item in new.items() if cid in old and fps[cid] != old[cid]]
        ranges = self._ranges.get(device_id, ())
        # an incomplete catalog must not delete channels that simply did not arrive, but a
        # stored one outside the entry's (new) ranges goes whatever arrived
        removed = [cid for cid in old if cid not in new and (result.complete or not in_channel_ranges(ranges, cid))]
        kept = {} if result.complete else {
            cid: fp for cid, fp in old.items() if cid not in new and in_channel_ranges(ranges, cid)
        }
        channels = list(new.values())
        exposed = self._exposed(device_id, [*new, *kept])
        # queued on the batched writer; not awaited here so a sync worker moves on at once
        written = asyncio.ensure_future(self.inventory.apply_catalog(device_id, added, updated, removed, exposed))
        written.add_done_callback(lambda f: self._write_done(device_id, f))
        self._writes[device_id] = written
        self._catalog_cache[device_id] = {**kept, **fps}
        for cid in removed:
            if self._owners.get(cid) == device_id:
                del self._owners[cid]
        for cid in fps:
            self._owners[cid] = device_id
        d = CatalogDiff(added, updated, removed, len(new) - len(added) - len(updated))
        self.inventory.update_device(device_id, channel_count=len(exposed))
        self._report_limit(device_id, len(new) + len(kept), len(exposed))
        if d.added or d.removed or d.updated:
            self.inventory.add_event(
                device_id,
                "catalog_changed",
                self.clock(),
                added=len(d.added),
                updated=len(d.updated),
                removed=len(d.removed),
                complete=result.complete,
            )
        self._publish(device_id, channels, exposed)

    def _drop_claimed(self, device_id: str, new: dict[str, Any]) -> None:
        """Ownership never moves silently: an item naming another's channel is dropped and alarmed."""
        for cid in list(new):
            other = self._claimable(device_id, cid)
            if other is not None:
                del new[cid]
                self.stats["refused:channel_owned"] += 1
                rec0 = self.presence.get(device_id)
                src = Peer(rec0.transport, rec0.host, rec0.port, rec0.conn_id) if rec0 else Peer("udp", "", 0, None)
                self.alarm(device_id, "alarm_channel_conflict", src, f"channel {cid} belongs to {other}")

    def _drop_out_of_range(self, device_id: str, new: dict[str, Any]) -> None:
        """Items outside the entry's channel_ranges are not channels of ours: dropped from `new`
        (so never stored, and a stored one is removed by a complete catalog), counted, and said
        in ONE `channel_out_of_range` event per sync (a sample of IDs, not one event per item)."""
        ranges = self._ranges.get(device_id)
        if not ranges:
            return
        out = sorted(cid for cid in new if not in_channel_ranges(ranges, cid))
        for cid in out:
            del new[cid]
            if cid in self._out_of_range or len(self._out_of_range) < MAX_OUT_OF_RANGE:
                self._out_of_range[cid] = device_id
        if not out:
            return
        self.stats["refused:channel_out_of_range"] += len(out)
        log.warning("%s lists %d channels outside its allowed ranges (first %s): not stored",
                    device_id, len(out), out[0])
        self.inventory.add_event(device_id, "channel_out_of_range", self.clock(), count=len(out),
                                 sample=out[:OUT_OF_RANGE_SAMPLE], kept=len(new),
                                 channel_ranges=format_channel_ranges(ranges))

    def _apply_nodes(self, result: CatalogResult) -> None:
        """Org nodes (regions, 215 groups, 216 organisations, sub-devices) are stored apart from
        channels for the catalog tree; written only when they changed (or arrived incomplete)."""
        device_id = result.device_id
        nodes: dict[str, Any] = {}
        for item in result.items:
            cid = item.device_id
            if cid == device_id or cid in nodes or is_playable_channel(cid) or kind_of(cid) not in ORG_KINDS:
                continue
            if len(nodes) >= MAX_NODES:
                self.stats["catalog:nodes_dropped"] += 1
                continue
            nodes[cid] = item
        if not nodes and device_id not in self._node_cache:
            # a camera or NVR (no org nodes): no write at all, so a registration storm of thousands
            # of devices adds no jobs. (A platform that dropped every node since our last start keeps
            # its old nodes until it lists one again.)
            return
        fp = hash(tuple(sorted(repr(item) for item in nodes.values())))
        if result.complete and self._node_cache.get(device_id) == fp:
            return
        self._node_cache[device_id] = fp
        written = asyncio.ensure_future(self.inventory.apply_nodes(device_id, list(nodes.values()), result.complete))
        written.add_done_callback(lambda f: self._write_done(device_id, f))

    def _report_limit(self, device_id: str, total: int, exposed: int) -> None:
        """A device over its whitelist entry's max_channels says so once per change, as an event."""
        hidden = total - exposed
        if hidden == self._hidden.get(device_id, 0):
            return
        self._hidden[device_id] = hidden
        if hidden > 0:
            self.stats["catalog:over_limit"] += 1
            log.warning("%s lists %d channels, max_channels %s: %d not exposed", device_id, total,
                        self._limits.get(device_id), hidden)
        self.inventory.add_event(device_id, "channel_limit_exceeded" if hidden > 0 else "channel_limit_ok",
                                 self.clock(), channels=total, exposed=exposed, hidden=hidden,
                                 max_channels=self._limits.get(device_id))

    def _write_done(self, device_id: str, fut: asyncio.Future[Any]) -> None:
        if self._writes.get(device_id) is fut:
            del self._writes[device_id]  # only pending writes are kept (20,000 devices)
        if not fut.cancelled() and fut.exception() is not None:
            self.stats["catalog:write_failed"] += 1
            log.warning("catalog write failed: %r", fut.exception())

    async def apply_notify(self, device_id: str, items: list[Any]) -> None:
        """A Catalog NOTIFY (§4.15): ON/OFF/VLOST/DEFECT change the state of the device's own
        exposed channels in the ledger (ON/OFF also their stored status); ADD/DEL/UPDATE of
        channels are applied to what we hold (`apply_changes`), and only when that cannot be
        done (an org node changed, the catalog not known yet) is the whole catalog queried again."""
        now = self.clock()
        own = self._channels.get(device_id, {})
        statuses: dict[str, str] = {}
        for item in items:
            event = (item.event or "").upper()
            if event in ("ON", "OFF", "VLOST", "DEFECT") and item.device_id not in own:
                # a device's events change only its own (exposed) channels' state (issue 10 #4)
                self.stats["refused:foreign_channel_event"] += 1
                continue
            if event in ("ON", "OFF", "VLOST", "DEFECT"):
                state = {"ON": "online", "OFF": "offline", "VLOST": "no_video", "DEFECT": "offline"}[event]
                self.health.set_state(f"channel:{item.device_id}", state, f"notify_{event.lower()}", now,
                                      {"device_id": device_id, "event": event})
            if event in ("ON", "OFF"):
                # the catalog status follows: the device's next transition and the store see it
                own[item.device_id] = event == "ON"
                statuses[item.device_id] = event
                fps = self._catalog_cache.get(device_id)
                if fps is not None and item.device_id in fps:
                    fps[item.device_id] = 0  # the next full catalog rewrites the row, whatever it says
        if statuses:
            written = asyncio.ensure_future(self.inventory.set_channel_status(device_id, statuses))
            written.add_done_callback(lambda f: self._write_done(device_id, f))
        changes = [i for i in items if (i.event or "").upper() in ("ADD", "DEL", "UPDATE")]
        if changes and not await self.apply_changes(device_id, changes):
            await self.sync(device_id)

    async def apply_changes(self, device_id: str, items: list[Any]) -> bool:
        """ADD/UPDATE/DEL of a device's channels applied incrementally (no re-query of hundreds of
        items for one camera). Ownership, channel_ranges and max_channels apply as for a full
        catalog. Returns False — the caller re-queries the whole catalog — when the device's
        catalog is not known yet, an org node (region, group, organisation) changed, or a deletion
        would expose a channel hidden by max_channels whose status we do not hold."""
        if device_id not in self._channels:
            return False
        old = await self._known_fingerprints(device_id)
        upserts: dict[str, Any] = {}
        deletes: set[str] = set()
        for item in items:
            cid, event = item.device_id, (item.event or "").upper()
            if not is_playable_channel(cid):
                if kind_of(cid) in ORG_KINDS and cid != device_id:
                    return False  # the tree changed: learn it whole
                continue
            if event == "DEL":
                upserts.pop(cid, None)
                if cid in old:
                    deletes.add(cid)
                continue
            deletes.discard(cid)
            upserts[cid] = replace(item, event=None)  # stored like a catalog item, not a notification
        self._drop_claimed(device_id, upserts)
        self._drop_out_of_range(device_id, upserts)
        fps = {cid: _fingerprint(item) for cid, item in upserts.items()}
        added = [item for cid, item in upserts.items() if cid not in old]
        updated = [item for cid, item in upserts.items() if cid in old and fps[cid] != old[cid]]
        removed = sorted(deletes)
        if not (added or updated or removed):
            return True
        cache = {cid: fp for cid, fp in old.items() if cid not in deletes} | fps
        exposed = self._exposed(device_id, list(cache))
        known = self._channels[device_id]
        if any(cid not in known and cid not in upserts for cid in exposed):
            return False  # a hidden channel moves up into the limit: its status comes from a full query
        written = asyncio.ensure_future(self.inventory.apply_catalog(device_id, added, updated, removed, exposed))
        written.add_done_callback(lambda f: self._write_done(device_id, f))
        self._writes[device_id] = written
        self._catalog_cache[device_id] = cache
        for cid in removed:
            if self._owners.get(cid) == device_id:
                del self._owners[cid]
        for cid in fps:
            self._owners[cid] = device_id
        self.stats["catalog:notify_applied"] += 1
        self.inventory.update_device(device_id, channel_count=len(exposed))
        self._report_limit(device_id, len(cache), len(exposed))
        self.inventory.add_event(device_id, "catalog_changed", self.clock(), added=len(added),
                                 updated=len(updated), removed=len(removed), complete=False, notify=True)
        self._publish(device_id, list(upserts.values()), exposed)
        return True

    def _publish(self, device_id: str, items: list[Any], exposed: set[str]) -> None:
        """Channel states into the ledger: known channels no longer exposed go offline
        (`removed_from_catalog`); each exposed item's state follows its status and the device's."""
        now = self.clock()
        rec = self.presence.get(device_id)
        device_online = rec is not None and rec.online
        known = self._channels.setdefault(device_id, {})
        for channel_id in list(known):
            if channel_id not in exposed:
                del known[channel_id]
                self.health.set_state(f"channel:{channel_id}", "offline", "removed_from_catalog", now, {})
        for item in items:
            if item.device_id not in exposed:
                continue
            status_on = (item.status or "ON").upper() in ("ON", "ONLINE", "OK")
            known[item.device_id] = status_on
            on = device_online and status_on
            self.health.set_state(
                f"channel:{item.device_id}",
                "online" if on else "offline",
                "catalog" if device_online else _offline_cause(device_id),
                now,
                {"device_id": device_id, "status": item.status},
            )
        self._pulse()

    # ------------------------------------------------------------------ play resolution
    def _pulse(self) -> None:
        self._applied.set()
        self._applied = asyncio.Event()

    def channel_owner(self, channel_id: str) -> str | None:
        """The device whose accepted catalog exposes `channel_id` (before the batched write lands)."""
        owner = self._owners.get(channel_id)
        if owner is not None and channel_id in self._channels.get(owner, {}):
            return owner
        return None

    def in_flight(self) -> bool:
        return bool(self._syncing) or len(self.assembler) > 0

    async def locate_channel(self, channel_id: str, timeout: float | None = None) -> str | None:
        """The owner of `channel_id`; while catalog syncs are in flight, wait for them (bounded)
        instead of answering "unknown" (issue 12 #3)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + (self.play_wait if timeout is None else timeout)
        while True:
            owner = self.channel_owner(channel_id)
            left = end - loop.time()
            if owner is not None or left <= 0 or not self.in_flight():
                return owner
            try:
                await asyncio.wait_for(self._applied.wait(), min(left, 0.5))
            except TimeoutError:
                pass


def _fingerprint(item: Any) -> int:
    """Equal catalog items have equal fingerprints (all fields, `extra` included) within a process."""
    return hash(repr(item))


def _offline_cause(device_id: str) -> str:
    """Why a channel of an offline device is offline: its platform's absence, or its device's."""
    return PLATFORM_OFFLINE if kind_of(device_id) is IdKind.PLATFORM else "device_offline"
