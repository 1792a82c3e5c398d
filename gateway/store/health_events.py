"""The database side of the health ledger: idempotent inserts and last state per subject."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.health.timeline import Event, State
from gateway.store.contract import HealthEvent


def to_event(row: HealthEvent) -> Event:
    return Event(row.event_id, row.subject, row.ts, State(row.state), row.cause, dict(row.evidence or {}))


class SqlHealthEvents:
    """Implements gateway.health.recorder.HealthEventStore."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def insert(self, events: Iterable[Event]) -> None:
        """Insert events whose IDs are not in the table yet (a replayed journal re-copies safely)."""
        batch = list(events)
        if not batch:
            return
        async with self._sessions() as session, session.begin():
            ids = [e.event_id for e in batch]
            existing: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                q = select(HealthEvent.event_id).where(HealthEvent.event_id.in_(chunk))
                existing.update((await session.execute(q)).scalars())
            rows: dict[str, dict[str, object]] = {}
            for e in batch:
                if e.event_id in existing or e.event_id in rows:
                    continue
                rows[e.event_id] = {
                    "event_id": e.event_id,
                    "subject": e.subject,
                    "ts": e.ts,
                    "state": str(e.state),
                    "cause": e.cause,
                    "evidence": dict(e.evidence),
                }
            if rows:  # Core executemany: thousands of events per copy must not build ORM objects
                await session.execute(insert(HealthEvent.__table__), list(rows.values()))  # type: ignore[attr-defined]

    async def latest(self) -> dict[str, Event]:
        """The last event of every subject (for restoring state and closing crash gaps)."""
        async with self._sessions() as session:
            last = (
                select(HealthEvent.subject, func.max(HealthEvent.id).label("mid"))
                .group_by(HealthEvent.subject)
                .subquery()
            )
            rows = (await session.execute(select(HealthEvent).join(last, HealthEvent.id == last.c.mid))).scalars()
            return {r.subject: to_event(r) for r in rows}

    async def last_ts(self) -> float | None:
        async with self._sessions() as session:
            return (await session.execute(select(func.max(HealthEvent.ts)))).scalar()

    async def events(self, since: float, until: float, subjects: Iterable[str] | None = None) -> list[Event]:
        async with self._sessions() as session:
            q = select(HealthEvent).where(HealthEvent.ts < until, HealthEvent.ts >= since)
            if subjects is not None:
                q = q.where(HealthEvent.subject.in_(list(subjects)))
            rows = (await session.execute(q.order_by(HealthEvent.ts, HealthEvent.id))).scalars()
            return [to_event(r) for r in rows]
