"""Issue 11.3 and 11.2: the state at a period's start comes from the full history, and a contracted
channel nobody ever heard from is offline (never_registered) from its contract start."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

import gateway.store.all_tables  # noqa: F401 - every table into the metadata
from gateway.health.timeline import UTC8, Event, State
from gateway.reports import service
from gateway.reports.deductions import DeductionPolicy, deduction_lines
from gateway.reports.ledger import CAUSE_NEVER_REGISTERED, build_ledger
from gateway.reports.model import BatchInfo, ChannelInfo, ContractData
from gateway.reports.period import parse_period
from gateway.store import contract as T

CH = "34020000001320000001"
NEVER = "34020000001320000009"


def L(m: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(2026, m, d, h, mi, tzinfo=UTC8).timestamp()


def ev(n: int, ts: float, state: State, cause: str = "", subject: str = f"channel:{CH}") -> Event:
    return Event(f"e{n}", subject, ts, state, cause, {})


DEC1 = parse_period("2026-12-01", now=L(12, 5))
NOV = parse_period("2026-11", now=L(12, 5))


def test_no_video_carried_over_midnight_is_no_video_not_unknown() -> None:
    """online 1 Nov 08:00, no_video 30 Nov 22:00, nothing since. The report of 1 Dec is given the
    two events before it (what load_events returns). Hand: 1 Dec 00:00-24:00 is no_video,
    86,400 s; online 0; unknown 0."""
    contract = ContractData(channels=(ChannelInfo(CH, vendor="V1"),))
    events = [ev(1, L(11, 1, 8), State.online, "registered"), ev(2, L(11, 30, 22), State.no_video, "play_timeout")]
    ledger = build_ledger(events, contract, DEC1)
    t = ledger.totals[CH]
    assert t[State.no_video] == 86_400_000
    assert t[State.online] == 0 and t[State.unknown] == 0


def test_media_event_alone_is_evidence_of_signalling() -> None:
    """Only the no_video event of 30 Nov 22:00 is known (older history pruned). The media event
    itself says the channel answered: 1 Dec is 86,400 s no_video, not 86,400 s unknown."""
    contract = ContractData(channels=(ChannelInfo(CH),))
    ledger = build_ledger([ev(2, L(11, 30, 22), State.no_video, "play_timeout")], contract, DEC1)
    assert ledger.totals[CH][State.no_video] == 86_400_000


def test_media_fault_cleared_before_the_period_stays_cleared() -> None:
    """online 1 Nov, no_video 20 Nov 10:00, offline 21 Nov 09:00 (keepalive lost; clears media),
    nothing since. Hand: 1 Dec is 86,400 s offline — the older no_video does not come back."""
    contract = ContractData(channels=(ChannelInfo(CH),))
    events = [
        ev(1, L(11, 1), State.online),
        ev(2, L(11, 20, 10), State.no_video),
        ev(3, L(11, 21, 9), State.offline, "keepalive_lost"),
    ]
    ledger = build_ledger(events, contract, DEC1)
    assert ledger.totals[CH][State.offline] == 86_400_000
    assert ledger.totals[CH][State.no_video] == 0


@pytest.fixture
async def sessions():  # type: ignore[no-untyped-def]
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    yield maker
    await engine.dispose()


async def _store(maker, events: list[Event]) -> None:  # type: ignore[no-untyped-def]
    async with maker() as s, s.begin():
        for e in events:
            s.add(T.HealthEvent(event_id=e.event_id, subject=e.subject, ts=e.ts, state=str(e.state), cause=e.cause))


async def test_load_events_keeps_last_signalling_and_last_media_event(sessions) -> None:  # type: ignore[no-untyped-def]
    """Stored: online 1 Nov 08:00, no_video 30 Nov 22:00, and for a second channel online 2 Nov,
    offline 3 Nov. For 1 Dec, load_events must return both events of the first channel (the
    no_video alone is not the whole state) and only the offline of the second. The ledger of
    1 Dec then has 86,400 s no_video and 86,400 s offline."""
    other = "34020000001320000002"
    await _store(
        sessions,
        [
            ev(1, L(11, 1, 8), State.online, "registered"),
            ev(2, L(11, 30, 22), State.no_video, "play_timeout"),
            ev(3, L(11, 2), State.online, subject=f"channel:{other}"),
            ev(4, L(11, 3), State.offline, "keepalive_lost", subject=f"channel:{other}"),
        ],
    )
    events = await service.load_events(sessions, DEC1.start, DEC1.end)
    assert sorted(e.event_id for e in events) == ["e1", "e2", "e4"]
    contract = ContractData(channels=(ChannelInfo(CH), ChannelInfo(other)))
    ledger = build_ledger(events, contract, DEC1)
    assert ledger.totals[CH][State.no_video] == 86_400_000
    assert ledger.totals[other][State.offline] == 86_400_000


def test_never_registered_contracted_channel_is_offline_from_contract_start() -> None:
    """Contracted (batch B1, rent 90/month, vendor V1) from 10 Nov 00:00, never heard from.
    Hand, November: expected 10 Nov → 1 Dec = 21 d = 1,814,400 s, all offline, cause
    never_registered; availability 0.0. Policy: grace 2 h, 1 yuan per fault hour, no cap at
    rent, whole-month rent: fault 504 h, billable 502 h → deduction 502.00."""
    contract = ContractData(
        channels=(ChannelInfo(NEVER, vendor="V1", batch="B1", admitted_ts=L(11, 10), contracted=True),),
        batches={"B1": BatchInfo("B1", "V1", 2026, 1, Decimal("90"))},
    )
    ledger = build_ledger([], contract, NOV)
    ivs = ledger.intervals[NEVER]
    assert [(iv.start, iv.end, iv.state, iv.cause) for iv in ivs] == [
        (L(11, 10), L(12, 1), State.offline, CAUSE_NEVER_REGISTERED)
    ]
    assert ledger.totals[NEVER][State.offline] == 1_814_400_000
    policy = DeductionPolicy(
        grace_hours=Decimal(2), rate_per_fault_hour=Decimal(1), cap_at_rent=False, effective_from=date(2026, 1, 1)
    )
    (line,) = deduction_lines(ledger, contract, policy)
    assert line["fault_hours"] == Decimal("504.000")
    assert line["deduction"] == Decimal("502.00")


def test_never_registered_until_first_heard() -> None:
    """Contracted from 1 Nov, first registers 3 Nov 12:00 and stays online. Hand: offline
    (never_registered) 1 Nov 00:00 → 3 Nov 12:00 = 60 h = 216,000 s; online the rest of
    November (30 d − 60 h = 2,376,000 s). A channel that is not contracted (inventory only)
    keeps the old rule: unknown before its first event."""
    first = ev(1, L(11, 3, 12), State.online, "registered")
    contracted = ContractData(channels=(ChannelInfo(CH, vendor="V1", contracted=True),))
    t = build_ledger([first], contracted, NOV).totals[CH]
    assert t[State.offline] == 216_000_000
    assert t[State.online] == 2_376_000_000
    inventory = ContractData(channels=(ChannelInfo(CH),))
    t2 = build_ledger([first], inventory, NOV).totals[CH]
    assert t2[State.unknown] == 216_000_000 and t2[State.offline] == 0


def test_heard_before_the_period_is_not_never_registered() -> None:
    """Contracted, registered 20 Oct then went unknown (gateway stopped) 25 Oct, nothing since:
    November is unknown (2,592,000 s), not never_registered offline."""
    events = [ev(1, L(10, 20), State.online), ev(2, L(10, 25), State.unknown, "gateway_stopped")]
    contract = ContractData(channels=(ChannelInfo(CH, vendor="V1", contracted=True),))
    t = build_ledger(events, contract, NOV).totals[CH]
    assert t[State.unknown] == 2_592_000_000 and t[State.offline] == 0
