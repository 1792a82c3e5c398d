"""The ledger's copy into the database (SqlHealthEvents.insert), on SQLite and PostgreSQL.

A replayed journal copies events again: an event ID already in the table (or twice in one batch)
is skipped, never duplicated and never overwritten — by ON CONFLICT DO NOTHING where the dialect
has it, by a SELECT of the batch's IDs elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

import gateway.store.health_events as health_events
from gateway.health.timeline import Event, State
from gateway.store.contract import HealthEvent
from gateway.store.db import make_engine, make_sessionmaker
from gateway.store.health_events import SqlHealthEvents
from gateway.store.migrate import upgrade

T0 = 1_780_000_000.0


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlHealthEvents]:
    url = f"sqlite:///{tmp_path}/h.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    async with sessions() as s, s.begin():  # a clean slate on the shared PostgreSQL
        await s.execute(HealthEvent.__table__.delete())  # type: ignore[attr-defined]
    yield SqlHealthEvents(sessions)
    await engine.dispose()


def ev(i: int, cause: str = "registered") -> Event:
    return Event(f"e{i}", f"device:D{i % 3}", T0 + i, State.online if i % 2 else State.offline, cause, {"n": i})


async def rows(ledger: SqlHealthEvents) -> list[tuple[str, str, float, str, str, dict[str, int]]]:
    async with ledger._sessions() as s:
        q = select(HealthEvent).order_by(HealthEvent.id)
        return [(r.event_id, r.subject, r.ts, r.state, r.cause, r.evidence) for r in (await s.execute(q)).scalars()]


@pytest.mark.parametrize("ignoring", [True, False], ids=["on-conflict", "select-first"])
async def test_a_replayed_copy_skips_the_ids_it_has(
    ledger: SqlHealthEvents, ignoring: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not ignoring:
        monkeypatch.setattr(health_events, "_insert_ignoring_duplicates", lambda dialect: None)
    await ledger.insert([ev(1), ev(2), ev(3)])
    # a replay: 2 and 3 again (3 with other content: the stored one stays), 4 twice, 5 new
    await ledger.insert([ev(2), ev(3, cause="changed"), ev(4), ev(4), ev(5)])
    await ledger.insert([])
    assert await rows(ledger) == [(e.event_id, e.subject, e.ts, str(e.state), e.cause, e.evidence)
                                  for e in (ev(1), ev(2), ev(3), ev(4), ev(5))]
    latest = await ledger.latest()
    assert {s: e.event_id for s, e in latest.items()} == {"device:D0": "e3", "device:D1": "e4", "device:D2": "e5"}


async def test_the_driver_copy_stores_what_sqlalchemy_stores(
    ledger: SqlHealthEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy runs straight on the driver (gateway.store.direct): the stored rows, raw text of
    the JSON evidence included, are those of SQLAlchemy's own INSERT ... ON CONFLICT DO NOTHING."""
    import gateway.store.direct as store_direct

    events = [ev(1), Event("e2", "channel:C1", T0 + 0.125, State.unknown, "", {"a": [1, None, "中"], "b": 1.5})]
    seen = []
    for direct in (True, False):
        with monkeypatch.context() as m:
            m.setattr(store_direct, "compiled_shapes", {})
            if not direct:
                m.setattr(store_direct.Direct, "compile", staticmethod(lambda *a: None))
            async with ledger._sessions() as s, s.begin():
                await s.execute(HealthEvent.__table__.delete())  # type: ignore[attr-defined]
            await ledger.insert(events)
            await ledger.insert([ev(1, cause="again")])  # skipped, not overwritten
            assert all((v is not None) == direct for v in store_direct.compiled_shapes.values())
        async with ledger._sessions() as s:
            raw = text("select event_id, subject, ts, state, cause, cast(evidence as text) from health_event "
                       "order by event_id")
            seen.append((await s.execute(raw)).all())
    assert seen[0] == seen[1]
    assert [r[0] for r in seen[0]] == ["e1", "e2"] and seen[0][0][4] == "registered"
