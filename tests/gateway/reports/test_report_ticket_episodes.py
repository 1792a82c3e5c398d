"""Issue 11.7: a new fault episode gets a new ticket; the old one is `recovered` when the ledger
sees the channel back (the vendor's feedback and the station's confirmation still apply)."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

import gateway.store.all_tables  # noqa: F401 - every table into the metadata
from gateway.health.timeline import UTC8, Event, State
from gateway.reports import service
from gateway.reports.faults import Ticket, TicketStatus, apply_action, daily_faults_table, tickets_to_recover
from gateway.reports.ledger import build_ledger
from gateway.reports.model import ChannelInfo, ContractData
from gateway.reports.period import parse_period
from gateway.store import contract as T

CH = "34020000001320000001"
SETTINGS = SimpleNamespace(report=SimpleNamespace(timezone="Asia/Shanghai", language="zh-CN"))


def L(d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(2026, 12, d, h, mi, tzinfo=UTC8).timestamp()


EVENTS = [
    Event("e1", f"channel:{CH}", L(1, 0), State.online, "registered"),
    Event("e2", f"channel:{CH}", L(1, 8), State.offline, "keepalive_lost"),  # fault A 08:00-10:00
    Event("e3", f"channel:{CH}", L(1, 10), State.online, "registered"),
    Event("e4", f"channel:{CH}", L(1, 10, 30), State.online, "stream_up"),
    Event("e5", f"channel:{CH}", L(1, 14), State.no_video, "play_timeout"),  # fault B from 14:00
]
OLD = Ticket("T20261201-0001", CH, "V1", "S1", "offline", L(1, 8), TicketStatus.vendor_answered, vendor_cause="停电")
CONTRACT = ContractData(channels=(ChannelInfo(CH, "东门", vendor="V1", station="S1", contracted=True),))


def test_new_episode_does_not_inherit_the_old_ticket() -> None:
    """Fault A 08:00-10:00 has ticket T…0001 (answered: 停电); fault B from 14:00 is still on at
    16:00. Hand: A's row shows T…0001 with feedback 停电; B's row has no ticket and no feedback
    (before the fix it showed T…0001 and 停电). T…0001 is due to recover at 10:00."""
    period = parse_period("2026-12-01", now=L(1, 16))
    ledger = build_ledger(EVENTS, CONTRACT, period)
    table = daily_faults_table(ledger, CONTRACT, [OLD], window=(period.start, period.end))
    rows = [(r["since"], r["ticket"], r["feedback"], r["status"]) for r in table.rows]
    assert rows == [
        (L(1, 8), OLD.id, "停电", "vendor_answered"),
        (L(1, 14), "", "", "ongoing"),
    ]
    assert [(t.id, back) for t, back in tickets_to_recover(ledger, [OLD])] == [(OLD.id, L(1, 10))]


def test_recovered_ticket_still_takes_feedback_and_confirmation() -> None:
    """open → recover (ledger saw it back) → recovered; then the vendor answers (stays recovered),
    then the station confirms → confirmed; or the station disputes → disputed."""
    t = Ticket("T1", CH, "V1", "S1", "offline", L(1, 8))
    t, _ = apply_action(t, "recover", actor="system", now=L(1, 11), repaired_ts=L(1, 10))
    assert (t.status, t.recovered_ts) == (TicketStatus.recovered, L(1, 10))
    t, _ = apply_action(t, "answer", actor="v", now=L(1, 12), cause="停电")
    assert (t.status, t.vendor_cause) == (TicketStatus.recovered, "停电")
    disputed, _ = apply_action(t, "dispute", actor="s", now=L(1, 13), reason="未到场")
    assert disputed.status is TicketStatus.disputed
    done, _ = apply_action(t, "confirm", actor="s", now=L(1, 13))
    assert done.status is TicketStatus.confirmed


@pytest.fixture
async def sessions():  # type: ignore[no-untyped-def]
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as s, s.begin():
        s.add(T.Vendor(id="V1", name="科海"))
        s.add(T.PoliceStation(id="S1", name="城东派出所"))
        s.add(T.ChannelContract(channel_id=CH, name="东门", vendor_id="V1", station_id="S1"))
        for e in EVENTS:
            s.add(T.HealthEvent(event_id=e.event_id, subject=e.subject, ts=e.ts, state=str(e.state), cause=e.cause))
        s.add(
            T.FaultTicket(
                id=OLD.id,
                channel_id=CH,
                station_id="S1",
                vendor_id="V1",
                fault="offline",
                since_ts=OLD.since_ts,
                status="vendor_answered",
                vendor_cause="停电",
                opened_ts=L(1, 8, 10),
                updated_ts=L(1, 9),
            )
        )
    yield maker
    await engine.dispose()


async def test_open_due_tickets_recovers_the_old_and_opens_a_new_one(sessions) -> None:  # type: ignore[no-untyped-def]
    """At 16:00 the due-ticket job recovers T…0001 (recovered_ts 10:00, history line by system)
    and opens T…0002 for fault B since 14:00. Run again at 16:30: nothing new."""
    opened = await service.open_due_tickets(sessions, SETTINGS, now=L(1, 16))
    assert opened == ["T20261201-0002"]
    async with sessions() as s:
        old = await s.get(T.FaultTicket, OLD.id)
        new = await s.get(T.FaultTicket, "T20261201-0002")
        hist = (await s.execute(select(T.TicketHistory).where(T.TicketHistory.ticket_id == OLD.id))).scalars().all()
    assert (old.status, old.recovered_ts, old.vendor_cause) == ("recovered", L(1, 10), "停电")
    assert [(h.action, h.from_status, h.to_status, h.actor) for h in hist] == [
        ("recover", "vendor_answered", "recovered", "system")
    ]
    assert (new.since_ts, new.fault, new.status) == (L(1, 14), "no_video", "open")
    assert await service.open_due_tickets(sessions, SETTINGS, now=L(1, 16, 30)) == []
