"""Issue 14 #2: a lower platform going offline is ONE fault in tickets and the daily notice.

Scenario (1 Dec 2026, UTC+8), hand-written; every figure below is derived from it by hand:

    platform P (type 200) carries C1, C2, C3, C4; camera channel X sits on its own device.
    00:00  all five online (registered)
    06:00  C4 no_video (play_timeout)             ← C4 faulty on its own before the outage
    08:00  P offline: C1..C4 offline platform_offline
    11:00  P back: C1, C2, C4 online (registered); C3 offline catalog_off (stays down on its own)
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

import gateway.store.all_tables  # noqa: F401 - every table into the metadata
from gateway.health.timeline import UTC8, Event, State
from gateway.reports import service
from gateway.reports.deductions import DeductionPolicy, deduction_lines, repairs_table
from gateway.reports.faults import (
    Ticket,
    TicketStatus,
    daily_faults_table,
    faults_to_open,
    reconciliation_table,
    tickets_to_recover,
)
from gateway.reports.ledger import build_ledger
from gateway.reports.model import ChannelInfo, ContractData
from gateway.reports.notify import notice_markdown
from gateway.reports.outages import id_ranges
from gateway.reports.period import parse_period
from gateway.store import contract as T

P = "34020000002000000001"
C1, C2, C3, C4 = (f"3402000000131000000{i}" for i in range(1, 5))
X, XDEV = "34020000001320000009", "34020000001320000009"
SETTINGS = SimpleNamespace(report=SimpleNamespace(timezone="Asia/Shanghai", language="zh-CN"))


def L(d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(2026, 12, d, h, mi, tzinfo=UTC8).timestamp()


def ev(n: str, ch: str, ts: float, state: State, cause: str) -> Event:
    return Event(n, f"channel:{ch}", ts, state, cause)


BASE = [ev(f"up{c}", c, L(1, 0), State.online, "registered") for c in (C1, C2, C3, C4, X)]
OUTAGE = [
    ev("c4nv", C4, L(1, 6), State.no_video, "play_timeout"),
    *(ev(f"off{c}", c, L(1, 8), State.offline, "platform_offline") for c in (C1, C2, C3, C4)),
]
BACK = [
    ev("b1", C1, L(1, 11), State.online, "registered"),
    ev("b2", C2, L(1, 11), State.online, "registered"),
    ev("b3", C3, L(1, 11), State.offline, "catalog_off"),
    ev("b4", C4, L(1, 11), State.online, "registered"),
]
EVENTS = BASE + OUTAGE + BACK


def chan(cid: str, name: str, device: str = P) -> ChannelInfo:
    return ChannelInfo(
        cid, name, site="站前", vendor="V1", station="S1", device_id=device, contracted=True,
        maintenance_contract="M1",
    )  # fmt: skip


CONTRACT = ContractData(
    channels=(chan(C1, "进站口"), chan(C2, "出站口"), chan(C3, "售票厅"), chan(C4, "候车室"), chan(X, "广场", XDEV)),
    vendors={"V1": "科海"},
    stations={"S1": "车站派出所"},
    sites={"站前": "火车站"},
    maintenance_fees={"M1": Decimal(9300)},
)
T_C4 = Ticket("T20261201-0001", C4, "V1", "S1", "no_video", L(1, 6), cause="play_timeout")
T_P = Ticket("T20261201-0002", P, "V1", "S1", "offline", L(1, 8), cause="platform_offline")


def ledger_at(now: float, events: list[Event] = EVENTS, day: str = "2026-12-01"):  # type: ignore[no-untyped-def]
    return build_ledger([e for e in events if e.ts <= now], CONTRACT, parse_period(day, now=now))


def test_during_the_outage_one_fault_for_the_platform_and_c4_keeps_its_own() -> None:
    """At 10:00: C4's own fault since 06:00 (cause play_timeout) and ONE outage of P since 08:00
    naming C1, C2, C3 — not four channel faults. X is fine: nothing."""
    due = faults_to_open(ledger_at(L(1, 10)), CONTRACT, [])
    got = [(f.subject, f.episode.start, f.episode.cause, f.episode.ongoing, f.channels) for f in due]
    assert got == [
        (C4, L(1, 6), "play_timeout", True, ()),
        (P, L(1, 8), "platform_offline", True, (C1, C2, C3)),
    ]
    # with both tickets on file nothing more is due; the platform's ticket is the one ticket
    assert faults_to_open(ledger_at(L(1, 10)), CONTRACT, [T_C4, T_P]) == []


def test_platform_returns_ticket_recovers_and_a_channel_still_down_gets_its_own() -> None:
    """At 16:00: T_P's outage ended 11:00 → recover at 11:00; C4's fault (06:00-11:00) ended 11:00
    too → T_C4 recovers at 11:00. C3 has been off on its own since 11:00 (5 h): its own ticket."""
    ledger = ledger_at(L(1, 16))
    assert tickets_to_recover(ledger, [T_C4, T_P], CONTRACT) == [(T_C4, L(1, 11)), (T_P, L(1, 11))]
    due = faults_to_open(ledger, CONTRACT, [T_C4, T_P])
    assert [(f.subject, f.episode.start, f.episode.cause, f.channels) for f in due] == [
        (C3, L(1, 11), "catalog_off", ())
    ]


def test_daily_notice_has_one_row_for_the_outage() -> None:
    """Rows (station 车站派出所, by since): C4 06:00 5 h (T_C4); P 08:00 3 h = 10800 s, 3
    channels, name = their IDs as one range, site shared; C3 11:00 ongoing 5 h = 18000 s."""
    ledger = ledger_at(L(1, 16))
    table = daily_faults_table(ledger, CONTRACT, [T_C4, T_P], window=(L(1, 0), L(1, 16)))
    rows = [
        (r["channel_id"], r["name"], r["since"], int(r["duration_s"]), r["cause"], r["ticket"], r["channels"])
        for r in table.rows
    ]
    assert rows == [
        (C4, "候车室", L(1, 6), 18000, "play_timeout", T_C4.id, 1),
        (P, f"{C1}-{C3}", L(1, 8), 10800, "platform_offline", T_P.id, 3),
        (C3, "售票厅", L(1, 11), 18000, "catalog_off", "", 1),
    ]
    p_row = table.rows[1]
    got = (p_row["station"], p_row["vendor"], p_row["site"], p_row["status"])
    assert got == ("车站派出所", "科海", "火车站", "open")
    md = notice_markdown(table, lang="en")
    assert f"**{P}** (3 Channels: {C1}-{C3})" in md
    assert md.count(C2) == 0  # C2 is inside the range, never a row of its own


def test_reconciliation_lists_the_outage_once() -> None:
    ledger = ledger_at(L(1, 16))
    table = reconciliation_table(ledger, CONTRACT, [T_C4, T_P], window=(L(1, 0), L(1, 16)))
    got = [(r["channel_id"], r["ticket"], r["recovered"], str(r["fault_hours"])) for r in table.rows]
    # P: 3 h fault → 3.000; C4: 06:00-11:00 → 5.000; C3 ongoing, no ticket yet
    assert got == [(C4, T_C4.id, L(1, 11), "5.000"), (P, T_P.id, L(1, 11), "3.000"), (C3, "", None, "5.000")]


def test_availability_still_counts_each_channels_downtime() -> None:
    """Unchanged arithmetic: offline ms per channel over 00:00-16:00. C1, C2: 08-11 = 3 h; C3:
    08-16 = 8 h; C4: offline 08-11 = 3 h plus no_video 06-08 = 2 h; X: none. The platform is not
    a contracted channel, so its outage is not counted a sixth time."""
    t = ledger_at(L(1, 16)).totals
    h = 3_600_000
    assert [t[c]["offline"] for c in (C1, C2, C3, C4, X)] == [3 * h, 3 * h, 8 * h, 3 * h, 0]
    assert t[C4]["no_video"] == 2 * h
    assert P not in t


def test_a_disputed_platform_ticket_holds_out_its_channels_deductions() -> None:
    """Policy: grace 2 h, 10 CNY per fault hour beyond it; rent 9300 a month, so the cap (one day
    of 31 in service: 300) is not reached.
    C1 and C2: 3 h fault → 1 h billable → 10.00 each. With T_P disputed, C1's and C2's outage
    is held out (held 3 h, deduction 0.00); C4's own ticket is not disputed: 5 h → 30.00."""
    policy = DeductionPolicy(rate_per_fault_hour=Decimal(10))
    ledger = ledger_at(L(1, 16), [*EVENTS, ev("x3", C3, L(1, 12), State.online, "registered")])

    def by_channel(tickets: list[Ticket]) -> dict[str, tuple[str, str]]:
        return {
            ln["channel_id"]: (str(ln["deduction"]), str(ln["held_hours"]))
            for ln in deduction_lines(ledger, CONTRACT, policy, tickets)
        }

    plain = by_channel([T_C4, T_P])
    assert plain[C1] == plain[C2] == ("10.00", "0.000")
    disputed = by_channel([T_C4, Ticket(**{**_fields(T_P), "status": TicketStatus.disputed})])
    assert disputed[C1] == disputed[C2] == ("0.00", "3.000")
    assert disputed[C4] == plain[C4] == ("30.00", "0.000")
    rows = repairs_table(
        ledger, CONTRACT, policy, [Ticket(**{**_fields(T_P), "status": TicketStatus.disputed})],
        window=(L(1, 0), L(1, 16)),
    )  # fmt: skip
    c1 = next(r for r in rows.rows if r["channel_id"] == C1)
    assert (c1["ticket"], str(c1["deduction"])) == (T_P.id, "0.00")


def _fields(t: Ticket) -> dict[str, object]:
    return {f: getattr(t, f) for f in Ticket.__slots__}  # type: ignore[attr-defined]


def test_restart_during_the_outage_is_still_one_fault() -> None:
    """The gateway stops at 09:00 (every subject unknown, gateway_stopped), starts 09:30 and at
    09:35 marks the still-silent channels offline (silent_after_restart). The platform returns at
    11:00. One outage 08:00-11:00 for C1..C3; its fault time is 08-09 + 09:35-11 = 2 h 25 min
    (the gateway's own down time is not the platform's fault)."""
    restart = [Event("gs", "gateway", L(1, 0), State.online, "gateway_started")]
    restart += [Event("gx", "gateway", L(1, 9), State.unknown, "gateway_stopped")]
    restart += [ev(f"st{c}", c, L(1, 9), State.unknown, "gateway_stopped") for c in (C1, C2, C3, C4, X)]
    restart += [Event("gu", "gateway", L(1, 9, 30), State.online, "gateway_started")]
    restart += [ev(f"si{c}", c, L(1, 9, 35), State.offline, "silent_after_restart") for c in (C1, C2, C3, C4)]
    restart += [ev("xb", X, L(1, 9, 31), State.online, "registered")]
    events = BASE + OUTAGE + restart + BACK
    # the ticket opened at 08:30 before the restart is found again from the ledger: nothing new
    assert [f.subject for f in faults_to_open(ledger_at(L(1, 10), events), CONTRACT, [T_C4, T_P])] == []
    ledger = ledger_at(L(1, 16), events)
    outages = [f for f in faults_to_open(ledger_at(L(1, 10), events), CONTRACT, [T_C4]) if f.channels]
    assert [(f.subject, f.episode.start, f.channels) for f in outages] == [(P, L(1, 8), (C1, C2, C3))]
    table = daily_faults_table(ledger, CONTRACT, [T_C4, T_P], window=(L(1, 0), L(1, 16)))
    p_rows = [r for r in table.rows if r["channel_id"] == P]
    assert [(r["since"], int(r["duration_s"]), r["channels"]) for r in p_rows] == [(L(1, 8), 10800, 3)]
    recon = reconciliation_table(ledger, CONTRACT, [T_P], window=(L(1, 0), L(1, 16)))
    assert [str(r["fault_hours"]) for r in recon.rows if r["channel_id"] == P] == [f"{145 / 60:.3f}"]
    assert not any(r["channel_id"] in (C1, C2) for r in table.rows)
    assert tickets_to_recover(ledger, [T_P], CONTRACT) == [(T_P, L(1, 11))]


def test_outage_over_midnight_is_one_ticket() -> None:
    """P drops 1 Dec 22:00 and returns 2 Dec 03:00. The ticket opened 1 Dec 22:30 (since 22:00)
    is the 2 Dec ledger's outage too (already under way at its start): nothing new is due at
    01:00, the 2 Dec notice row carries it with since = that ledger's start, and at 09:00 it
    recovers at 03:00. Over both days it is one 5 h outage."""
    night = BASE + [ev(f"n{c}", c, L(1, 22), State.offline, "platform_offline") for c in (C1, C2, C3, C4)]
    night += [ev(f"m{c}", c, L(2, 3), State.online, "registered") for c in (C1, C2, C3, C4)]
    tk = Ticket("T20261201-0003", P, "V1", "S1", "offline", L(1, 22), cause="platform_offline")
    assert faults_to_open(ledger_at(L(2, 1), night, "2026-12-02"), CONTRACT, [tk]) == []
    day2 = ledger_at(L(2, 9), night, "2026-12-02")
    rows = daily_faults_table(day2, CONTRACT, [tk], window=(L(2, 0), L(2, 9))).rows
    assert [(r["channel_id"], r["since"], r["ticket"], r["channels"]) for r in rows] == [(P, L(2, 0), tk.id, 4)]
    assert tickets_to_recover(day2, [tk], CONTRACT) == [(tk, L(2, 3))]
    both = ledger_at(L(2, 9), night, "2026-12")  # the month so far: 1 Dec 00:00 to 2 Dec 09:00
    rows = daily_faults_table(both, CONTRACT, [tk], window=(L(1, 0), L(2, 9))).rows
    assert [(r["channel_id"], r["since"], int(r["duration_s"])) for r in rows] == [(P, L(1, 22), 5 * 3600)]


def test_a_per_channel_ticket_from_before_grouping_still_recovers() -> None:
    """A ticket opened for C1 with cause platform_offline (as before outages were grouped)
    follows C1's platform part: recovered at 11:00, and C1 gets no new ticket."""
    old = Ticket("T20261201-0009", C1, "V1", "S1", "offline", L(1, 8), cause="platform_offline")
    assert tickets_to_recover(ledger_at(L(1, 16)), [old], CONTRACT) == [(old, L(1, 11))]


def test_id_ranges() -> None:
    assert id_ranges([C3, C1, C2, X]) == f"{C1}-{C3},{X}"
    assert id_ranges([C1]) == C1
    assert id_ranges([]) == ""


@pytest.fixture(params=["contract", "inventory"])
async def sessions(request):  # type: ignore[no-untyped-def]
    """The platform is known from the contract rows' device_id, or (rows without it) from the
    inventory: the channels as the platform's catalog stored them."""
    from gateway.store import models

    in_contract = request.param == "contract"
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as s, s.begin():
        s.add(T.Vendor(id="V1", name="科海"))
        s.add(T.PoliceStation(id="S1", name="车站派出所"))
        for c in CONTRACT.channels:
            s.add(
                T.ChannelContract(
                    channel_id=c.channel_id,
                    name=c.name,
                    vendor_id="V1",
                    station_id="S1",
                    device_id=c.device_id if in_contract else "",
                )
            )
        if not in_contract:
            s.add_all([models.Device(id=P, name="车站平台"), models.Device(id=XDEV, name="广场")])
            await s.flush()
            s.add_all(models.Channel(device_id=c.device_id, channel_id=c.channel_id) for c in CONTRACT.channels)
        for e in EVENTS:
            s.add(T.HealthEvent(event_id=e.event_id, subject=e.subject, ts=e.ts, state=str(e.state), cause=e.cause))
    yield maker
    await engine.dispose()


async def test_open_due_tickets_opens_one_for_the_platform(sessions) -> None:  # type: ignore[no-untyped-def]
    """The scheduled job through the store. At 10:00: T…0001 for C4 (its own, since 06:00), T…0002
    for P naming C1..C3 in its history; again at 10:30: nothing. At 16:00: both recover at 11:00
    and C3 (off on its own since 11:00) gets T…0003."""
    opened = await service.open_due_tickets(sessions, SETTINGS, now=L(1, 10))
    assert opened == ["T20261201-0001", "T20261201-0002"]
    async with sessions() as s:
        rows = {r.id: r for r in (await s.execute(select(T.FaultTicket))).scalars()}
        hist = (await s.execute(select(T.TicketHistory).where(T.TicketHistory.ticket_id == "T20261201-0002"))).scalars()
        detail = next(iter(hist)).detail
    assert [(r.channel_id, r.cause, r.since_ts) for r in rows.values()] == [
        (C4, "play_timeout", L(1, 6)),
        (P, "platform_offline", L(1, 8)),
    ]
    assert detail == {"since_ts": L(1, 8), "platform_id": P, "channel_count": 3, "channels": [C1, C2, C3]}
    assert await service.open_due_tickets(sessions, SETTINGS, now=L(1, 10, 30)) == []
    assert await service.open_due_tickets(sessions, SETTINGS, now=L(1, 16)) == ["T20261201-0003"]
    async with sessions() as s:
        rows = {r.id: r for r in (await s.execute(select(T.FaultTicket))).scalars()}
    assert [(r.channel_id, r.status, r.recovered_ts) for r in rows.values()] == [
        (C4, "recovered", L(1, 11)),
        (P, "recovered", L(1, 11)),
        (C3, "open", None),
    ]
