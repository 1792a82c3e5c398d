"""The health ledger's writer: one durable event per state change, then copied to the database.

`set_state` is called from hot-ish paths (registration, catalog, stream up/down): it compares
with the subject's last state in memory, appends to the journal buffer (no I/O on the loop) and
returns an awaitable that resolves after the covering fsync — callers that acknowledge
something to a peer await it first. A background task copies durable events into the database
and lets the journal compact. On start, a crash gap (last evidence → now) becomes `unknown`.

After a restart (issue 11.1) every device and channel is `unknown` until it speaks. One that
has not been heard from once the gateway has been up for `silent_after` seconds (the keepalive
interval × the keepalive timeout count: the time in which a live device must have sent a
keepalive or REGISTER) becomes `offline` at start + `silent_after`, cause
`silent_after_restart`; the restart gap itself stays `unknown`. The rule only fills subjects
nobody spoke for: any state recorded for a subject after the start — a REGISTER, or the
`offline` the registrar emits for a persisted binding that expired during the downtime (issue
16.1) — overrides it, because such a subject is no longer silent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Set
from pathlib import Path
from typing import Any, Protocol

from gateway.health.journal import Journal, recover
from gateway.health.timeline import Event, State, to_ms
from gateway.tasks import TaskSet

log = logging.getLogger(__name__)

CAUSE_SILENT_AFTER_RESTART = "silent_after_restart"
_STATES = {str(s.value): s for s in State}  # State(name) without the enum machinery (set_state's hot path)
_WATCHED = ("device:", "channel:")


def silent_after_restart(
    last: Mapping[str, State], heard: Set[str], *, started: float, silent_after: float
) -> list[Event]:
    """`offline` events for devices/channels still `unknown` and not heard from since `started`.

    Pure; the event time is start + `silent_after` whenever the check actually runs, and the IDs
    are deterministic so running it twice appends nothing new.
    """
    ts = started + silent_after
    mark = to_ms(ts)
    evidence = {"restart_ts": started, "silent_after_s": silent_after}
    return [
        Event(f"silent:{subject}:{mark}", subject, ts, State.offline, CAUSE_SILENT_AFTER_RESTART, dict(evidence))
        for subject, state in sorted(last.items())
        if state is State.unknown and subject not in heard and subject.startswith(_WATCHED)
    ]


class EventIds:
    """Unique event IDs, cheaply: a random 128-bit prefix per recorder, then a counter.

    IDs only make the journal's copy into the database idempotent (insert-or-ignore), so they
    must never repeat across processes, restarts or nodes sharing a database — the random prefix
    sees to that as uuid4 did — but need not be random each: uuid4 (a getrandom call and a UUID
    object) per event was a visible share of a registration storm."""

    __slots__ = ("__weakref__", "_prefix", "_seq")

    def __init__(self) -> None:
        self._reset()
        _LIVE_IDS.add(self)

    def _reset(self) -> None:
        self._prefix = uuid.uuid4().hex
        self._seq = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._seq):x}"


# A forked child must not continue its parent's sequences: it draws new prefixes at the fork
# (not by comparing os.getpid() per event: a syscall on every event of a registration storm).
_LIVE_IDS: weakref.WeakSet[EventIds] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for ids in list(_LIVE_IDS):
        ids._reset()


os.register_at_fork(after_in_child=_reset_after_fork)


class HealthEventStore(Protocol):
    async def latest(self) -> dict[str, Event]: ...

    async def insert(self, events: Iterable[Event]) -> None: ...

    async def last_ts(self) -> float | None: ...


class HealthRecorder:
    """Implements adapters.base.HealthSink."""

    def __init__(
        self,
        journal: Journal,
        store: HealthEventStore,
        *,
        heartbeat_path: str | os.PathLike[str],
        copy_interval: float = 2.0,
        heartbeat_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        silent_after: float | None = None,
    ) -> None:
        self.journal = journal
        self.store = store
        self.heartbeat_path = Path(heartbeat_path)
        self.copy_interval = copy_interval
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        self._last: dict[str, State] = {}
        self.silent_after = silent_after
        self.started: float | None = None
        self._heard: set[str] = set()
        self._tasks = TaskSet("health-recorder", logger=log)  # journal writer, copy, heartbeat loops
        self.recorded = 0
        self._journal_task: asyncio.Task[None] | None = None
        self._new_id = EventIds()

    @property
    def running(self) -> bool:
        """The journal writer is alive (for the node's /healthz)."""
        return self._journal_task is not None and not self._journal_task.done()

    async def start(self) -> list[Event]:
        """Open the journal, restore last states, record the crash gap. Returns the gap events."""
        replayed = await self.journal.open()
        latest = await self.store.latest()
        for ev in replayed:
            prev = latest.get(ev.subject)
            if prev is None or ev.ts >= prev.ts:
                latest[ev.subject] = ev
        last_evidence = max(
            [self._heartbeat_mtime() or 0.0, *(e.ts for e in latest.values())], default=0.0
        )
        now = self.clock()
        gap: list[Event] = []
        if latest and last_evidence:
            gap = recover(latest.values(), now=now, last_evidence_ts=min(last_evidence, now))
        for ev in gap:
            self.journal.append(ev)
            latest[ev.subject] = ev
        self._last = {s: e.state for s, e in latest.items()}
        if "gateway" not in self._last or self._last["gateway"] is not State.online:
            ev = Event(self._new_id(), "gateway", now, State.online, "gateway_started", {})
            self.journal.append(ev)
            self._last["gateway"] = State.online
        await self.journal.flush()
        self._beat()
        self.started = now
        self._heard = set()
        self._journal_task = self._tasks.spawn(self.journal.run(), name="journal")
        self._tasks.spawn(self._copy_loop(), name="journal-copy")
        self._tasks.spawn(self._heartbeat_loop(), name="heartbeat")
        if self.silent_after is not None:
            self._tasks.spawn(self._silent_check(self.silent_after), name="silent-after-restart")
        return gap

    def expire_silent(self) -> list[Event]:
        """Record `offline` for subjects still silent since the start (see the module docstring)."""
        if self.started is None or self.silent_after is None:
            return []
        out = silent_after_restart(self._last, self._heard, started=self.started, silent_after=self.silent_after)
        for ev in out:
            self.journal.append(ev)
            self._last[ev.subject] = ev.state
            self.recorded += 1
        return out

    async def _silent_check(self, delay: float) -> None:
        await asyncio.sleep(delay)
        events = self.expire_silent()
        if events:
            log.info("%d devices/channels silent since the restart are now offline", len(events))
            await self.journal.barrier()

    async def stop(self) -> None:
        """Orderly stop: every subject becomes `unknown` now (we no longer watch it), then flush."""
        now = self.clock()
        for subject, state in list(self._last.items()):
            if state is not State.unknown:
                self.journal.append(Event(self._new_id(), subject, now, State.unknown, "gateway_stopped", {}))
        await self._tasks.close()
        await self.journal.flush()
        try:
            await self._copy_once()
        except Exception:
            log.exception("final copy of health events failed; they stay in the journal")
        await self.journal.close()
        self._beat()

    def state_of(self, subject: str) -> State | None:
        return self._last.get(subject)

    def set_state(
        self, subject: str, state: str, cause: str, ts: float, evidence: Mapping[str, Any] | None = None
    ) -> Awaitable[None] | None:
        st = _STATES.get(state) if isinstance(state, str) else None
        if st is None:
            st = State(state)  # a State itself, or not a state (ValueError as ever)
        self._heard.add(subject)
        if self._last.get(subject) is st:
            return None
        self._last[subject] = st
        event = Event(self._new_id(), subject, ts, st, cause, dict(evidence or {}))
        self.journal.append(event)
        self.recorded += 1
        return self.journal.barrier()

    def _heartbeat_mtime(self) -> float | None:
        try:
            return self.heartbeat_path.stat().st_mtime
        except OSError:
            return None

    def _beat(self) -> None:
        try:
            self.heartbeat_path.parent.mkdir(parents=True, exist_ok=True)
            self.heartbeat_path.touch()
        except OSError:
            log.warning("cannot touch heartbeat %s", self.heartbeat_path)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await asyncio.to_thread(self._beat)

    async def copy_now(self) -> None:
        """Copy the durable events into the database now, as the background copy does every
        `copy_interval` (for benchmarks that charge each batch of work its own copy)."""
        await self._copy_once()

    async def _copy_once(self) -> None:
        events, upto = self.journal.committable()
        if events:
            await self.store.insert(events)
            await self.journal.mark_committed(upto)

    async def _copy_loop(self) -> None:
        while True:
            await asyncio.sleep(self.copy_interval)
            try:
                await self._copy_once()
            except Exception:
                log.exception("copying health events to the database failed; will retry")
