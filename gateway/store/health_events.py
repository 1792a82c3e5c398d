"""The database side of the health ledger: idempotent inserts and last state per subject."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.health.timeline import Event, State
from gateway.store.contract import HealthEvent
from gateway.store.direct import Shape, executemany

_TABLE = HealthEvent.__table__  # type: ignore[attr-defined]


# INSERT ... ON CONFLICT (event_id) DO NOTHING (gateway.store.direct's "insert_new")
_SHAPE: Shape = ("insert_new", ("event_id", "subject", "ts", "state", "cause", "evidence"))


def _insert_ignoring_duplicates(dialect: str) -> Shape | None:
    """The INSERT ... ON CONFLICT (event_id) DO NOTHING shape where the dialect has it (SQLite,
    PostgreSQL): no SELECT of the batch's IDs first. None elsewhere."""
    return _SHAPE if dialect in ("sqlite", "postgresql") else None


def to_event(row: HealthEvent) -> Event:
    return Event(row.event_id, row.subject, row.ts, State(row.state), row.cause, dict(row.evidence or {}))


class SqlHealthEvents:
    """Implements gateway.health.recorder.HealthEventStore."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def insert(self, events: Iterable[Event]) -> None:
        """Insert events whose IDs are not in the table yet (a replayed journal re-copies safely)."""
        rows: dict[str, dict[str, object]] = {}
        for e in events:
            if e.event_id not in rows:
                rows[e.event_id] = {
                    "event_id": e.event_id,
                    "subject": e.subject,
                    "ts": e.ts,
                    "state": str(e.state),
                    "cause": e.cause,
                    "evidence": dict(e.evidence),
                }
        if not rows:
            return
        async with self._sessions() as session, session.begin():
            conn = await session.connection()
            ignoring = _insert_ignoring_duplicates(conn.dialect.name)
            if ignoring is not None:  # one statement: the database skips the IDs it has
                # straight on the driver (gateway.store.direct): the copy follows every login
                await executemany(conn, _TABLE, ignoring, list(rows.values()))
                return
            ids = list(rows)
            existing: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                q = select(col(HealthEvent.event_id)).where(col(HealthEvent.event_id).in_(chunk))
                existing.update((await session.execute(q)).scalars())
            new = [r for event_id, r in rows.items() if event_id not in existing]
            if new:  # Core executemany: thousands of events per copy must not build ORM objects
                await session.execute(insert(_TABLE), new)

    async def latest(self) -> dict[str, Event]:
        """The last event of every subject (for restoring state and closing crash gaps)."""
        async with self._sessions() as session:
            last = (
                select(col(HealthEvent.subject), func.max(HealthEvent.id).label("mid"))
                .group_by(HealthEvent.subject)
                .subquery()
            )
            rows = (await session.execute(select(HealthEvent).join(last, col(HealthEvent.id) == last.c.mid))).scalars()
            return {r.subject: to_event(r) for r in rows}

    async def last_ts(self) -> float | None:
        async with self._sessions() as session:
            return (await session.execute(select(func.max(HealthEvent.ts)))).scalar()

    async def events(self, since: float, until: float, subjects: Iterable[str] | None = None) -> list[Event]:
        async with self._sessions() as session:
            q = select(HealthEvent).where(col(HealthEvent.ts) < until, col(HealthEvent.ts) >= since)
            if subjects is not None:
                q = q.where(col(HealthEvent.subject).in_(list(subjects)))
            rows = (await session.execute(q.order_by(col(HealthEvent.ts), col(HealthEvent.id)))).scalars()
            return [to_event(r) for r in rows]
