"""Device and channel persistence, with writes batched into one transaction per tick.

Registration storms (thousands of devices after a power cut) must not cost one database
transaction each: state changes are queued and applied together every `interval` seconds.
Reads go straight to the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.store.contract import ChannelContract
from gateway.store.direct import executemany, same, time_converter
from gateway.store.direct import existing as existing_keys
from gateway.store.models import CatalogNode, Channel, Device, DeviceBinding, DeviceEvent

log = logging.getLogger(__name__)

Job = Callable[[AsyncSession], Awaitable[None]]


_DEVICES = Device.__table__  # type: ignore[attr-defined]
_CHANNELS = Channel.__table__  # type: ignore[attr-defined]
_EVENTS = DeviceEvent.__table__  # type: ignore[attr-defined]
_BINDINGS = DeviceBinding.__table__  # type: ignore[attr-defined]
_NODES = CatalogNode.__table__  # type: ignore[attr-defined]


# A binding's columns other than its times: a refresh that leaves these as they were written
# last only moves registered_at/expires_at (a registration storm is almost all such refreshes).
_BINDING_KEYS = ("transport", "host", "port", "contact", "call_id", "realm", "user_agent")
_BINDING_TIMES = ("registered_at", "expires_at", "updated_at")


def binding_key(values: dict[str, Any]) -> tuple[Any, ...]:
    """The binding's columns other than its times, in `_BINDING_KEYS` order."""
    return tuple(map(values.get, _BINDING_KEYS))


async def _write_bindings(
    session: AsyncSession, bindings: dict[str, dict[str, Any] | None], now: datetime,
    written: dict[str, tuple[Any, ...]] | None = None,
) -> int:
    """Upsert (dict) or delete (None) registration bindings, a few statements per batch.

    `written`: each device's `binding_key` as this writer last committed it. A binding that
    matches it is a plain refresh and goes to `_refresh_bindings` (no existence SELECT, three
    columns); `written` is only a hint — if any row was not there as given, they all take the
    full path. Returns how many bindings the plain refresh wrote."""
    gone = [d for d, v in bindings.items() if v is None]
    for i in range(0, len(gone), 500):
        await session.execute(_BINDINGS.delete().where(_BINDINGS.c.device_id.in_(gone[i:i + 500])))
    rows: dict[str, dict[str, Any]] = {}
    refresh: dict[str, dict[str, Any]] = {}
    last = written or {}
    for d, v in bindings.items():
        if v is not None:
            known = last.get(d)
            if known is not None and known == binding_key(v):
                refresh[d] = v
            else:
                rows[d] = v
    refreshed = len(refresh)
    if refresh and not await _refresh_bindings(session, refresh, now):
        rows.update(refresh)  # some were not there (or differed) after all: upsert them all
        refreshed = 0
    if not rows:
        return refreshed
    conn = await session.connection()
    existing = await existing_keys(conn, _BINDINGS.c.device_id, list(rows))
    inserts = {d: v for d, v in rows.items() if d not in existing}
    updates = {d: v for d, v in rows.items() if d in existing}
    whole = all(v.keys() >= _BINDING_COLUMNS for v in rows.values())  # else SQLAlchemy fills defaults
    for stmt, part in ((_INSERT, inserts), (_UPDATE, updates)):
        driver = _driver_statement(stmt, conn.dialect) if whole else None
        if not part:
            continue
        if driver is not None:
            await conn.exec_driver_sql(driver.sql, driver.rows(part, now))
        elif stmt is _INSERT:
            await conn.execute(insert(_BINDINGS), [{**v, "device_id": d, "updated_at": now} for d, v in part.items()])
        else:
            keys = list(next(iter(part.values())))
            upd = update(_BINDINGS).where(_BINDINGS.c.device_id == bindparam("b_id"))
            upd = upd.values({k: bindparam(f"v_{k}") for k in [*keys, "updated_at"]})
            await conn.execute(upd, [{**{f"v_{k}": x for k, x in v.items()}, "v_updated_at": now, "b_id": d}
                                   for d, v in part.items()])
    return refreshed


# A binding row in one fixed order; statements name their parameters <prefix>_<column>.
_ROW = ("device_id", *_BINDING_KEYS, *_BINDING_TIMES)
_BINDING_COLUMNS = frozenset((*_BINDING_KEYS, "registered_at", "expires_at"))  # what save_binding gives
# The refresh: only the times move, and only on a row that holds every other column as given
# (so a stale `written` hint can change nothing it should not).
_REFRESH = (
    update(_BINDINGS)
    .where(_BINDINGS.c.device_id == bindparam("b_device_id"),
           *(_BINDINGS.c[k] == bindparam(f"b_{k}") for k in _BINDING_KEYS))
    .values({k: bindparam(f"v_{k}") for k in _BINDING_TIMES})
)
_UPDATE = (update(_BINDINGS).where(_BINDINGS.c.device_id == bindparam("b_device_id"))
           .values({k: bindparam(f"v_{k}") for k in _ROW[1:]}))
_INSERT = insert(_BINDINGS).values({k: bindparam(f"v_{k}") for k in _ROW})


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    """A binding statement run straight on the driver (see gateway.store.direct), with the rows
    built as tuples from the queued bindings directly: the refresh is the storm's hot loop."""

    sql: str
    pick: Callable[[tuple[Any, ...]], tuple[Any, ...]]  # a `_ROW` tuple → the statement's parameters
    registered_at: Callable[[Any], Any]
    expires_at: Callable[[Any], Any]
    updated_at: Callable[[Any], Any]

    @staticmethod
    def compile(stmt: Any, dialect: Any) -> _DriverStatement | None:
        """None when the dialect binds differently than assumed here (then SQLAlchemy runs it)."""
        compiled = stmt.compile(dialect=dialect)
        names = [n.partition("_")[2] for n in compiled.positiontup or ()]
        if not compiled.positional or not names or any(n not in _ROW for n in names):
            return None
        procs = {k: _BINDINGS.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in _ROW}
        if any(procs[k] is not None for k in ("device_id", *_BINDING_KEYS)):
            return None  # plain strings and integers are bound as they are
        index = [_ROW.index(n) for n in names]
        pick = itemgetter(*index) if len(index) > 1 else (lambda row: (row[index[0]],))
        return _DriverStatement(compiled.string, pick, *(time_converter(procs[k] or same) for k in _BINDING_TIMES))

    def rows(self, bindings: dict[str, dict[str, Any]], now: datetime) -> list[tuple[Any, ...]]:
        reg, exp, stamp, pick = self.registered_at, self.expires_at, self.updated_at(now), self.pick
        return [pick((d, *binding_key(v), reg(v["registered_at"]), exp(v["expires_at"]), stamp))
                for d, v in bindings.items()]


_driver_statements: dict[tuple[int, str, str], _DriverStatement | None] = {}


def _driver_statement(stmt: Any, dialect: Any) -> _DriverStatement | None:
    key = (id(stmt), dialect.name, dialect.driver)  # stmt: one of the module's constants
    if key not in _driver_statements:
        _driver_statements[key] = _DriverStatement.compile(stmt, dialect)
    return _driver_statements[key]


async def _refresh_bindings(session: AsyncSession, refresh: dict[str, dict[str, Any]], now: datetime) -> bool:
    """Move the times of bindings whose other columns are as given; True if every row was there."""
    conn = await session.connection()
    dialect = conn.dialect
    driver = _driver_statement(_REFRESH, dialect)
    if driver is None:
        params = [{"b_device_id": d, **{f"b_{k}": v.get(k) for k in _BINDING_KEYS},
                   "v_registered_at": v["registered_at"], "v_expires_at": v["expires_at"], "v_updated_at": now}
                  for d, v in refresh.items()]
        result = await conn.execute(_REFRESH, params)
    else:
        result = await conn.exec_driver_sql(driver.sql, driver.rows(refresh, now))
    if dialect.supports_sane_multi_rowcount:
        return bool(result.rowcount == len(refresh))
    # the driver cannot count an executemany (asyncpg): count the rows stamped with this batch's now
    ids = list(refresh)
    found = 0
    for i in range(0, len(ids), 500):
        q = (select(func.count()).select_from(_BINDINGS)
             .where(_BINDINGS.c.device_id.in_(ids[i:i + 500]), _BINDINGS.c.updated_at == now))
        found += (await session.execute(q)).scalar_one()
    return bool(found == len(ids))


async def _write_devices(session: AsyncSession, devices: dict[str, dict[str, Any]], now: datetime,
                         written: set[str] | None = None) -> None:
    """Upsert device rows with executemany, grouped by the set of columns changed.

    Core statements, not ORM objects: a registration storm writes thousands of rows per batch
    and building model instances for each cost more than the database work. Each group goes
    to the driver whole (`gateway.store.direct.executemany`).

    `written`: devices whose row this writer has committed before (rows are never deleted):
    they skip the existence SELECT. It is only a hint — where the driver counts an executemany's
    rows, an UPDATE that found fewer rows than hinted makes the batch look the hinted ones up and
    insert those that are missing; where it cannot count, hints are not used.
    """
    conn = await session.connection()
    hinted = set(devices).intersection(written) if written and conn.dialect.supports_sane_multi_rowcount else set()
    existing = await existing_keys(conn, _DEVICES.c.id, [d for d in devices if d not in hinted])
    existing.update(hinted)
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    inserts: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for device_id, values in devices.items():
        row = {**values, "updated_at": now}
        if device_id in existing:
            # bind names must differ from column names in an UPDATE ... SET (SQLAlchemy reserves those)
            bound = {"b_id": device_id, **{f"v_{k}": v for k, v in row.items()}}
            updates.setdefault(tuple(sorted(row)), []).append(bound)
        else:
            row["id"] = device_id
            row.setdefault("first_admitted_at", now)
            inserts.setdefault(tuple(sorted(row)), []).append(row)
    for keys, rows in inserts.items():
        await executemany(conn, _DEVICES, ("insert", keys), rows)
    updated = 0
    for keys, rows in updates.items():
        updated += await executemany(conn, _DEVICES, ("update", keys), rows)
    if hinted and updated != sum(map(len, updates.values())):
        # a hinted row was not there (removed behind this writer's back): the UPDATEs are
        # idempotent, so look the hinted IDs up and insert the missing ones now
        found = await existing_keys(conn, _DEVICES.c.id, list(hinted))
        missing = {d: devices[d] for d in hinted - found}
        if missing:
            written.difference_update(missing)  # type: ignore[union-attr]
            await _write_devices(session, missing, now)


def ts_to_dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass(slots=True)
class DeviceUpdate:
    """Columns to set on a device row (created when missing)."""

    device_id: str
    values: dict[str, Any] = field(default_factory=dict)


class DeviceRepository:
    """Reads devices/channels; queues writes and applies them in batches."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, interval: float = 0.2) -> None:
        self._sessions = sessions
        self._interval = interval
        self._pending_devices: dict[str, dict[str, Any]] = {}
        self._pending_events: list[dict[str, Any]] = []
        self._pending_bindings: dict[str, dict[str, Any] | None] = {}  # None: delete
        # device → binding_key of the binding this writer last committed for it: lets a plain
        # refresh skip the existence SELECT and the unchanged columns (a hint, see _write_bindings)
        self._written_bindings: dict[str, tuple[Any, ...]] = {}
        # devices whose row this writer committed: their updates skip the existence SELECT (a hint)
        self._written_devices: set[str] = set()
        self._jobs: list[tuple[Job, asyncio.Future[None] | None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()  # one writer: batches never overlap
        self.batches = 0
        self.bindings_refreshed = 0  # bindings written by the plain-refresh UPDATE (times only)
        self.last_error: str | None = None  # why the last background flush failed; None after a good one

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="device-writer")

    @property
    def running(self) -> bool:
        """The background writer is alive (for the node's /healthz)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            # Cancel the writer between batches, never inside one: a cancelled batch is neither
            # written nor queued again, so the final flush below would not have it.
            async with self._flush_lock:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception as exc:  # keep the writer alive; the batch is retried on the next tick
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("device store flush failed")
            else:
                self.last_error = None

    # -- queued writes ---------------------------------------------------------------------
    def update_device(self, device_id: str, **values: Any) -> None:
        self._pending_devices.setdefault(device_id, {}).update(values)
        self._wake.set()

    def add_event(self, device_id: str, kind: str, ts: float, **detail: Any) -> None:
        self._pending_events.append({"device_id": device_id, "kind": kind, "ts": ts_to_dt(ts), "detail": detail})
        self._wake.set()

    def update_event(self, device_id: str, kind: str, ts: float, **detail: Any) -> None:
        """Merge `detail` into the event (device, kind, ts) — a de-duplicated alarm's count.
        Queued like the rest; applied after the batch's inserts, so the event may be in it."""
        when = ts_to_dt(ts)

        async def job(session: AsyncSession) -> None:
            where = (_EVENTS.c.device_id == device_id) & (_EVENTS.c.kind == kind) & (_EVENTS.c.ts == when)
            for event_id, old in (await session.execute(select(_EVENTS.c.id, _EVENTS.c.detail).where(where))).all():
                await session.execute(update(_EVENTS).where(_EVENTS.c.id == event_id).values(detail={**old, **detail}))

        self._jobs.append((job, None))
        self._wake.set()

    def save_binding(self, device_id: str, **values: Any) -> None:
        """Queue the device's registration binding (transport, host, port, contact, call_id, realm,
        user_agent, registered_at, expires_at as datetimes); the last one queued wins."""
        self._pending_bindings[device_id] = values
        self._wake.set()

    def delete_binding(self, device_id: str) -> None:
        self._pending_bindings[device_id] = None
        self._wake.set()

    async def bindings(self) -> list[DeviceBinding]:
        async with self._sessions() as session:
            return list((await session.execute(select(DeviceBinding))).scalars())

    def submit(self, job: Job) -> asyncio.Future[None]:
        """Queue an arbitrary write job; the future resolves once it is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.append((job, fut))
        self._wake.set()
        return fut

    async def flush(self) -> None:
        async with self._flush_lock:
            await self._flush()

    async def _flush(self) -> None:
        if not (self._pending_devices or self._pending_events or self._jobs or self._pending_bindings):
            return
        devices, self._pending_devices = self._pending_devices, {}
        events, self._pending_events = self._pending_events, []
        bindings, self._pending_bindings = self._pending_bindings, {}
        jobs, self._jobs = self._jobs, []
        now = datetime.now(UTC)
        refreshed = 0
        try:
            async with self._sessions() as session, session.begin():
                if devices:
                    await _write_devices(session, devices, now, self._written_devices)
                if events:
                    shape = ("insert", tuple(sorted(events[0])))
                    await executemany(await session.connection(), _EVENTS, shape, events)
                if bindings:
                    refreshed = await _write_bindings(session, bindings, now, self._written_bindings)
                catalogs = [job for job, _ in jobs if isinstance(job, CatalogWrite)]
                if catalogs:
                    await _write_catalogs(session, catalogs, now)
                for job, _ in jobs:
                    if not isinstance(job, CatalogWrite):
                        await job(session)
        except Exception as exc:
            # put the work back so nothing is lost; futures learn of the failure
            for device_id, values in devices.items():
                self._pending_devices.setdefault(device_id, {}).update(values)
            self._pending_events[:0] = events
            for device_id, binding in bindings.items():
                self._pending_bindings.setdefault(device_id, binding)
                self._written_bindings.pop(device_id, None)  # rolled back: no hint until written again
            for _, fut in jobs:
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
            raise
        self.batches += 1
        self.bindings_refreshed += refreshed
        self._written_devices.update(devices)
        for device_id, binding in bindings.items():
            if binding is None:
                self._written_bindings.pop(device_id, None)
            else:
                self._written_bindings[device_id] = binding_key(binding)
        for _, fut in jobs:
            if fut is not None and not fut.done():
                fut.set_result(None)

    # -- reads -----------------------------------------------------------------------------
    async def get_device(self, device_id: str) -> Device | None:
        async with self._sessions() as session:
            return await session.get(Device, device_id)

    async def list_devices(self) -> list[Device]:
        async with self._sessions() as session:
            return list((await session.execute(select(Device).order_by(Device.id))).scalars())

    async def channel_counts(self) -> dict[str, int]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(col(Channel.device_id), func.count())
                .where(col(Channel.removed_at).is_(None), col(Channel.exposed).is_(True))
                .group_by(Channel.device_id)
            )
            return {d: int(n) for d, n in rows.all()}

    async def list_channels(self, device_id: str | None = None, *, include_hidden: bool = False) -> list[Channel]:
        async with self._sessions() as session:
            q = select(Channel).where(col(Channel.removed_at).is_(None))
            if device_id is not None:
                q = q.where(col(Channel.device_id) == device_id)
            if not include_hidden:
                q = q.where(col(Channel.exposed).is_(True))
            return list((await session.execute(q.order_by(Channel.device_id, Channel.channel_id))).scalars())

    async def list_nodes(self, device_id: str) -> list[CatalogNode]:
        """The org nodes of a device's catalog (regions, groups, virtual organisations)."""
        async with self._sessions() as session:
            q = select(CatalogNode).where(col(CatalogNode.device_id) == device_id).order_by(CatalogNode.node_id)
            return list((await session.execute(q)).scalars())

    async def channel_vendors(self) -> dict[str, str]:
        """Channel ID → vendor ID from the channel contracts (a cascade shares by vendor)."""
        async with self._sessions() as session:
            rows = await session.execute(select(col(ChannelContract.channel_id), col(ChannelContract.vendor_id)))
            return {str(cid): str(vid) for cid, vid in rows.all()}

    async def find_channel(self, channel_id: str) -> Channel | None:
        """A channel by its ID alone (first exposed, live match); channel IDs may repeat across devices."""
        async with self._sessions() as session:
            q = (
                select(Channel)
                .where(
                    col(Channel.channel_id) == channel_id,
                    col(Channel.removed_at).is_(None),
                    col(Channel.exposed).is_(True),
                )
                .order_by(col(Channel.updated_at).desc())
            )
            return (await session.execute(q)).scalars().first()

    async def events(self, device_id: str, limit: int = 100) -> list[DeviceEvent]:
        async with self._sessions() as session:
            q = (
                select(DeviceEvent)
                .where(col(DeviceEvent.device_id) == device_id)
                .order_by(col(DeviceEvent.ts).desc(), col(DeviceEvent.id).desc())
                .limit(limit)
            )
            return list((await session.execute(q)).scalars())

    async def alarms(self, limit: int = 200) -> list[DeviceEvent]:
        """Security alarms (cloned camera, binding mismatch, lockout, model mismatch), newest first."""
        async with self._sessions() as session:
            q = (
                select(DeviceEvent)
                .where(col(DeviceEvent.kind).like("alarm_%"))
                .order_by(col(DeviceEvent.ts).desc(), col(DeviceEvent.id).desc())
                .limit(limit)
            )
            return list((await session.execute(q)).scalars())

    async def mark_all_offline(self) -> list[str]:
        """At start: whatever the database thought was online is not (we were down)."""
        async with self._sessions() as session, session.begin():
            ids = list((await session.execute(select(col(Device.id)).where(col(Device.online).is_(True)))).scalars())
            if ids:
                await session.execute(update(Device).where(col(Device.id).in_(ids)).values(online=False))
            return ids


def item_dict(item: Any) -> dict[str, Any]:
    """The whole catalog item as JSON, so it can be rebuilt exactly (for diffs and the cascade)."""
    import dataclasses

    return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}


def channel_values(item: Any, now: datetime) -> dict[str, Any]:
    """Column values for a channel row from a gateway.gb CatalogItem."""

    def num(v: Any) -> float | None:
        try:
            return float(v) if v not in (None, "") else None
        except (TypeError, ValueError):
            return None

    def integer(v: Any) -> int | None:
        try:
            return int(v) if v not in (None, "") else None
        except (TypeError, ValueError):
            return None

    return {
        "name": item.name or "",
        "manufacturer": item.manufacturer or "",
        "model": item.model or "",
        "owner": item.owner or "",
        "civil_code": item.civil_code or "",
        "address": item.address or "",
        "parent_id": item.parent_id or "",
        "status": item.status or "",
        "ptz_type": integer(item.ptz_type),
        "longitude": num(item.longitude),
        "latitude": num(item.latitude),
        "extra": item_dict(item),
        "updated_at": now,
    }


@dataclass(slots=True)
class CatalogWrite:
    """A device's catalog diff, queued on the writer; every one queued in the same batch is
    applied with a handful of executemany statements (one SELECT, INSERT, UPDATE each), not
    with ORM round trips per channel: a registration storm brings thousands per second."""

    device_id: str
    changed: list[Any]  # added or updated items
    removed: list[str]
    exposed: set[str]

    async def __call__(self, session: AsyncSession) -> None:
        await _write_catalogs(session, [self], datetime.now(UTC))


async def _write_catalogs(session: AsyncSession, writes: list[CatalogWrite], now: datetime) -> None:
    """Apply catalog diffs: upsert changed channels, mark removed ones, and bring the exposure
    of the device's other live channels in line with `exposed` (max_channels may have changed)."""
    devices = list(dict.fromkeys(w.device_id for w in writes))
    if len(devices) < len(writes):  # a device twice in one batch: apply in rounds, in order
        rounds: list[list[CatalogWrite]] = []
        seen: dict[str, int] = {}
        for w in writes:
            k = seen[w.device_id] = seen.get(w.device_id, -1) + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(w)
        for batch in rounds:
            await _write_catalogs(session, batch, now)
        return
    # device → channel → (exposed, removed) as stored; each device appears once in this batch
    stored: dict[str, dict[str, tuple[bool, bool]]] = {}
    for i in range(0, len(devices), 500):
        chunk = devices[i:i + 500]
        rows = await session.execute(
            select(_CHANNELS.c.device_id, _CHANNELS.c.channel_id, _CHANNELS.c.exposed, _CHANNELS.c.removed_at)
            .where(_CHANNELS.c.device_id.in_(chunk)))
        for dev, ch, exposed, removed_at in rows:
            stored.setdefault(dev, {})[ch] = (bool(exposed), removed_at is not None)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    removals: list[dict[str, Any]] = []
    exposure: list[dict[str, Any]] = []
    for w in writes:
        known = stored.get(w.device_id, {})
        touched = {item.device_id for item in w.changed}
        for item in w.changed:
            values = channel_values(item, now)
            values["exposed"] = item.device_id in w.exposed
            values["removed_at"] = None
            if item.device_id in known:
                updates.append({**{f"v_{k}": v for k, v in values.items()},
                                "b_dev": w.device_id, "b_ch": item.device_id})
            else:
                inserts.append({**values, "device_id": w.device_id, "channel_id": item.device_id, "first_seen": now})
        gone = {ch for ch in w.removed if ch in known}
        removals.extend({"b_dev": w.device_id, "b_ch": ch, "v_removed_at": now} for ch in gone)
        for ch, (exposed, removed) in known.items():
            if ch not in touched and ch not in gone and not removed and exposed != (ch in w.exposed):
                exposure.append({"b_dev": w.device_id, "b_ch": ch, "v_exposed": ch in w.exposed})
    where = (_CHANNELS.c.device_id == bindparam("b_dev")) & (_CHANNELS.c.channel_id == bindparam("b_ch"))
    if inserts:
        await session.execute(insert(_CHANNELS), inserts)
    if updates:
        keys = [k[2:] for k in updates[0] if k.startswith("v_")]
        await session.execute(update(_CHANNELS).where(where).values({k: bindparam(f"v_{k}") for k in keys}), updates)
    if removals:
        await session.execute(update(_CHANNELS).where(where).values(removed_at=bindparam("v_removed_at")), removals)
    if exposure:
        await session.execute(update(_CHANNELS).where(where).values(exposed=bindparam("v_exposed")), exposure)


def make_catalog_job(
    device_id: str, added: Iterable[Any], updated: Iterable[Any], removed: Iterable[str], exposed: set[str]
) -> CatalogWrite:
    """A write job applying a catalog diff (added/updated items, removed IDs) to the channel table."""
    return CatalogWrite(device_id, [*added, *updated], list(removed), set(exposed))


@dataclass(slots=True)
class NodesWrite:
    """A device's org nodes (few: dozens to hundreds). A complete catalog replaces them all; an
    incomplete one only upserts the nodes that arrived, so a lost packet deletes nothing."""

    device_id: str
    items: list[Any]
    complete: bool

    async def __call__(self, session: AsyncSession) -> None:
        now = datetime.now(UTC)
        where = _NODES.c.device_id == self.device_id
        if not self.complete:
            ids = [item.device_id for item in self.items]
            for i in range(0, len(ids), 500):
                await session.execute(_NODES.delete().where(where & _NODES.c.node_id.in_(ids[i:i + 500])))
        else:
            await session.execute(_NODES.delete().where(where))
        rows = [node_values(self.device_id, item, now) for item in self.items]
        if rows:
            await session.execute(insert(_NODES), rows)


@dataclass(slots=True)
class StatusWrite:
    """Channels' catalog status from a Catalog NOTIFY ON/OFF: the column and the kept item."""

    device_id: str
    statuses: dict[str, str]

    async def __call__(self, session: AsyncSession) -> None:
        now = datetime.now(UTC)
        ids = list(self.statuses)
        for i in range(0, len(ids), 500):
            where = (_CHANNELS.c.device_id == self.device_id) & _CHANNELS.c.channel_id.in_(ids[i:i + 500])
            rows = (await session.execute(select(_CHANNELS.c.channel_id, _CHANNELS.c.extra).where(where))).all()
            for channel_id, extra in rows:
                status = self.statuses[channel_id]
                values: dict[str, Any] = {"status": status, "updated_at": now}
                if extra:
                    values["extra"] = {**extra, "status": status}
                q = update(_CHANNELS).where(
                    (_CHANNELS.c.device_id == self.device_id) & (_CHANNELS.c.channel_id == channel_id))
                await session.execute(q.values(values))


def node_values(device_id: str, item: Any, now: datetime) -> dict[str, Any]:
    """Column values for a catalog_node row from an org-node CatalogItem (long text cut to fit)."""
    from gateway.gb.ids import kind_of

    return {
        "device_id": device_id,
        "node_id": item.device_id,
        "kind": kind_of(item.device_id).value,
        "name": (item.name or "")[:200],
        "parent_id": (item.parent_id or "")[:200],
        "business_group_id": (item.business_group_id or "")[:64],
        "civil_code": (item.civil_code or "")[:20],
        "extra": item_dict(item),
        "updated_at": now,
    }
