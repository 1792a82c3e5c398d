"""The database side: the scenario stored in SQLite gives the same report as the pure functions."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal
from types import SimpleNamespace

import pytest
import scenario as S
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

import gateway.store.all_tables  # noqa: F401 - every table into the metadata
from gateway.reports import service
from gateway.reports.builder import make_report
from gateway.reports.demo_history import seed_history
from gateway.reports.errors import PeriodError, ReportError, TicketError
from gateway.reports.period import parse_period
from gateway.reports.render import to_csv
from gateway.store import contract as T
from gateway.store.health_events import SqlHealthEvents

SETTINGS = SimpleNamespace(report=SimpleNamespace(timezone="Asia/Shanghai", language="zh-CN"))
NOW = S.L(12, 5)


@pytest.fixture
async def sessions():  # type: ignore[no-untyped-def]
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    c = S.CONTRACT
    async with maker() as s, s.begin():
        from gateway.store.models import Site

        for site_id, name in c.sites.items():
            s.add(Site(id=site_id, name=name))
        for vid, name in c.vendors.items():
            s.add(T.Vendor(id=vid, name=name))
        for sid, name in c.stations.items():
            s.add(T.PoliceStation(id=sid, name=name))
        for b in c.batches.values():
            s.add(
                T.RentalBatch(
                    id=b.id,
                    vendor_id=b.vendor,
                    name=b.name,
                    year=b.year,
                    channel_count=b.channel_count,
                    monthly_rent_per_channel=b.monthly_rent_per_channel,
                )
            )
        for k in c.links.values():
            s.add(T.FibreLink(id=k.id, name=k.name, provider=k.provider, site_id=k.site, monthly_fee=k.monthly_fee))
        for ch in c.channels:
            s.add(
                T.ChannelContract(
                    channel_id=ch.channel_id,
                    name=ch.name,
                    site_id=ch.site,
                    owner=ch.owner,
                    link_id=ch.link,
                    vendor_id=ch.vendor,
                    batch_id=ch.batch,
                    station_id=ch.station,
                    device_id=ch.device_id,
                    admitted_ts=ch.admitted_ts,
                )
            )
        for w in S.MAINTENANCE:
            s.add(T.MaintenanceWindow(subject=w.subject, start_ts=w.start, end_ts=w.end, reason=w.reason))
        s.add(
            T.DeductionPolicyRecord(name="default", version=3, effective_from=date(2000, 1, 1), body=S.POLICY.to_body())
        )
        s.add(
            T.DeductionPolicyRecord(
                name="default", version=4, effective_from=date(2027, 1, 1), body={"rate_per_fault_hour": "99"}
            )
        )
        t = S.TICKETS[0]
        s.add(
            T.FaultTicket(
                id=t.id,
                channel_id=t.channel_id,
                station_id=t.station,
                vendor_id=t.vendor,
                fault=t.fault,
                cause=t.cause,
                since_ts=t.since_ts,
                status=str(t.status),
                vendor_cause=t.vendor_cause,
                expected_repair_ts=t.expected_repair_ts,
                repaired_ts=t.repaired_ts,
                updated_ts=t.since_ts,
            )
        )
    await SqlHealthEvents(maker).insert(S.EVENTS)
    yield maker
    await engine.dispose()


def expected(kind: str, period: str) -> bytes:
    return to_csv(
        make_report(
            kind,
            parse_period(period, now=NOW),
            events=S.EVENTS,
            contract=S.CONTRACT,
            policy=S.POLICY,
            tickets=S.TICKETS,
            maintenance=S.MAINTENANCE,
        )
    )


@pytest.mark.parametrize(
    ("kind", "period"),
    [
        ("availability", "2026-11"),
        ("deductions", "2026-11"),
        ("link-fees", "2026-11"),
        ("daily-faults", "2026-11-06"),
        ("reconciliation", "2026-11-12"),
    ],
)
async def test_same_answer_as_the_pure_functions(sessions, kind: str, period: str) -> None:  # type: ignore[no-untyped-def]
    got = await service.build_report(sessions, SETTINGS, kind, period, now=NOW)
    assert got == expected(kind, period)


async def test_events_before_the_period_set_the_initial_state(sessions) -> None:  # type: ignore[no-untyped-def]
    events = await service.load_events(sessions, S.L(11, 1), S.L(12, 1))
    ids = {e.event_id for e in events}
    first = {e.subject: e for e in sorted(events, key=lambda e: e.ts)}
    assert len(events) == len(S.EVENTS) and len(ids) == len(events)
    assert first  # every subject present
    later = await service.load_events(sessions, S.L(11, 11), S.L(11, 12))
    # C1's last event before 11 Nov (online at 10 Nov 15:00) is included, nothing older for it
    assert [e.ts for e in later if e.subject == f"channel:{S.C1}"] == [S.L(11, 10, 15)]


async def test_formats_station_filter_and_errors(sessions) -> None:  # type: ignore[no-untyped-def]
    data = await service.build_report(sessions, SETTINGS, "deductions", "2026-11", fmt="xlsx", now=NOW)
    wb = load_workbook(io.BytesIO(data))
    assert wb.worksheets[0]["B3"].value == "default v3 (2000-01-01)"  # v4 is not yet in force
    html = await service.build_report(sessions, SETTINGS, "availability", "2026-11", fmt="html", lang="en", now=NOW)
    assert b'lang="en"' in html
    notice = await service.build_report(sessions, SETTINGS, "daily-faults", "2026-11-06", station="城北派出所", now=NOW)
    assert len(list(csv.reader(io.StringIO(notice.decode("utf-8-sig"))))) == 1  # header only
    with pytest.raises(PeriodError):
        await service.build_report(sessions, SETTINGS, "availability", "2027-01", now=NOW)
    with pytest.raises(ReportError):
        await service.build_report(sessions, SETTINGS, "availability", "2026-11", fmt="pdf", now=NOW)
    with pytest.raises(ReportError):
        service.report_timezone("Europe/Berlin")
    assert service.report_timezone("+05:30").utcoffset(None).total_seconds() == 19800  # type: ignore[union-attr]


async def test_maintenance_windows_refuse_overlaps(sessions) -> None:  # type: ignore[no-untyped-def]
    subject = f"channel:{S.C2}"
    with pytest.raises(ReportError, match="overlaps"):
        await service.declare_maintenance(sessions, subject, S.L(11, 6, 3), S.L(11, 6, 5), now=NOW)
    with pytest.raises(ReportError, match="end"):
        await service.declare_maintenance(sessions, subject, S.L(11, 7), S.L(11, 7), now=NOW)
    with pytest.raises(ReportError, match="subject"):
        await service.declare_maintenance(sessions, "camera:1", S.L(11, 7), S.L(11, 8), now=NOW)
    wid = await service.declare_maintenance(sessions, subject, S.L(11, 6, 4), S.L(11, 6, 6), now=NOW)
    assert wid > 0  # touching the previous window is fine


async def test_ticket_actions_and_history(sessions) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TicketError):
        await service.ticket_action(sessions, "T-nope", "answer", actor="v", now=NOW, cause="x")
    with pytest.raises(TicketError):  # a vendor token sees only its own tickets
        await service.ticket_action(sessions, "T20261110-0001", "confirm", actor="v", now=NOW, vendor="V2")
    t = await service.ticket_action(sessions, "T20261110-0001", "confirm", actor="station:S1", now=NOW)
    assert t.status == "confirmed"
    async with sessions() as s:
        row = await s.get(T.FaultTicket, "T20261110-0001")
        hist = (await s.execute(select(T.TicketHistory))).scalars().all()
    assert row.status == "confirmed" and row.confirmed_ts == NOW
    assert [(h.action, h.from_status, h.to_status) for h in hist] == [("confirm", "repaired", "confirmed")]


async def test_open_due_tickets(sessions) -> None:  # type: ignore[no-untyped-def]
    opened = await service.open_due_tickets(sessions, SETTINGS, now=S.L(12, 1, 9))
    assert opened == ["T20261201-0001"]
    assert await service.open_due_tickets(sessions, SETTINGS, now=S.L(12, 1, 9, 30)) == []
    async with sessions() as s:
        row = await s.get(T.FaultTicket, "T20261201-0001")
    assert row.channel_id == S.C4 and row.since_ts == S.L(11, 30, 22) and row.fault == "no_video"


async def test_demo_history_is_idempotent_and_shows_in_every_report() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    ids = [(f"34020000001320{i:06d}", f"34020000001310{i:06d}") for i in range(1, 7)]
    n = await seed_history(maker, ids, now=NOW)
    assert n == await seed_history(maker, ids, now=NOW)
    async with maker() as s:
        assert len((await s.execute(select(T.HealthEvent))).scalars().all()) == n
    month = await service.build_report(maker, SETTINGS, "availability", "2026-11", now=NOW)
    rows = list(csv.DictReader(io.StringIO(month.decode("utf-8-sig"))))
    assert len(rows) == 6 and min(float(r["availability"]) for r in rows) < 0.99
    assert float(rows[3]["maintenance_s"]) == 4 * 3600
    ded = await service.build_report(maker, SETTINGS, "deductions", "2026-11", now=NOW)
    assert any(float(r["deduction"]) > 0 for r in csv.DictReader(io.StringIO(ded.decode("utf-8-sig"))))
    recon = await service.build_report(maker, SETTINGS, "reconciliation", "2026-11", now=NOW)
    assert "光缆被施工挖断" in recon.decode("utf-8-sig")
    await engine.dispose()


async def test_station_filter_covers_summary_total_and_intact_rate(sessions) -> None:  # type: ignore[no-untyped-def]
    """Issue 11.5: --station 城东派出所 (S1: C1 and C2 of vendor V1 only).
    Hand, availability: total (714 + 683) / (719 + 711) h = 1397/1430 = 0.9769 (all four
    channels: 0.9845), 完好率 1 of 2 = 0.5 (C2 has 28 fault hours; all four: 0.75).
    Deductions: only V1 in the summary, rent 2 × 100 = 200.00, deduction 3 + 74 = 77.00, payable
    123.00; the total row is the same (V2's 2.00 and its rent not in it). An unknown station is
    an error naming the field."""
    report, _ = await service.compute_report(
        sessions, SETTINGS, "availability", "2026-11", station="城东派出所", now=NOW
    )
    (table,) = report.tables
    assert {r["channel_id"] for r in table.rows} == {S.C1, S.C2}
    assert table.total["availability"] == 0.9769 and table.meta["intact_rate"] == 0.5
    report, _ = await service.compute_report(sessions, SETTINGS, "deductions", "2026-11", station="S1", now=NOW)
    summary, lines, _ = report.tables
    assert [r["vendor"] for r in summary.rows] == ["V1"]
    assert {r["channel_id"] for r in lines.rows} == {S.C1, S.C2}
    assert (summary.total["rent"], summary.total["deduction"], summary.total["payable"]) == (
        Decimal("200.00"),
        Decimal("77.00"),
        Decimal("123.00"),
    )
    with pytest.raises(ReportError, match=r"^station:"):
        await service.compute_report(sessions, SETTINGS, "availability", "2026-11", station="nowhere", now=NOW)


async def test_closed_month_is_frozen_until_an_explicit_reissue(sessions) -> None:  # type: ignore[no-untyped-def]
    """Issue 11.9. November is closed on 2 Dec (a day after its end). Issued on 5 Dec under policy
    v3: V1 deduction 77.00, V2 2.00 (test_report_scenario). Then policy v5 is back-dated to
    1 Nov with only rate_per_fault_hour 2.00 (defaults otherwise: 2 h grace, nothing beyond the
    deadline, no failed-channel part). Downloads on 6 Dec are byte-identical to 5 Dec's (CSV and
    XLSX). The re-issue (by ops:alice, with a reason) computes under v5 — hand: C1 5 h → 3 h ×
    2 = 6.00; C2 20 h and 8 h faults → 18 + 6 = 24 h × 2 = 48.00; V1 54.00; C3 4 h → 2 h × 2 =
    4.00; C4 2 h → 0; V2 4.00 — stored as revision 2 with who and why; downloads then show it."""
    from gateway.reports import frozen

    first = {
        f: await service.build_report(sessions, SETTINGS, "deductions", "2026-11", fmt=f, now=NOW)
        for f in ("csv", "xlsx")
    }
    await service.save_policy(sessions, {"rate_per_fault_hour": "2.00"}, effective_from=date(2026, 11, 1))
    later = NOW + 86_400
    for f, data in first.items():
        assert await service.build_report(sessions, SETTINGS, "deductions", "2026-11", fmt=f, now=later) == data
    row = await frozen.latest(sessions, "deductions", "2026-11", "", "channel")
    assert (row.revision, row.policy_version, row.issued_by, row.inputs["events"]) == (1, 3, "system", len(S.EVENTS))
    summary = frozen.report_from_json(row.report).tables[0]
    assert {r["vendor"]: r["deduction"] for r in summary.rows} == {"V1": Decimal("77.00"), "V2": Decimal("2.00")}
    with pytest.raises(ReportError, match=r"^reason:"):
        await service.reissue_report(
            sessions, SETTINGS, "deductions", "2026-11", actor="ops:alice", reason=" ", now=later
        )
    out = await service.reissue_report(
        sessions, SETTINGS, "deductions", "2026-11", actor="ops:alice", reason="政策追溯调整", now=later
    )
    assert (out["revision"], out["previous_revision"], out["inputs_changed"]) == (2, 1, True)
    row = await frozen.latest(sessions, "deductions", "2026-11", "", "channel")
    assert (row.revision, row.policy_version, row.issued_by, row.reason) == (2, 5, "ops:alice", "政策追溯调整")
    summary = frozen.report_from_json(row.report).tables[0]
    assert {r["vendor"]: r["deduction"] for r in summary.rows} == {"V1": Decimal("54.00"), "V2": Decimal("4.00")}
    again = await service.build_report(sessions, SETTINGS, "deductions", "2026-11", fmt="xlsx", now=later + 60)
    assert again != first["xlsx"]
    assert again == await service.build_report(sessions, SETTINGS, "deductions", "2026-11", fmt="xlsx", now=later + 120)


async def test_open_period_is_not_frozen_and_cannot_be_reissued(sessions) -> None:  # type: ignore[no-untyped-def]
    """December is under way on 5 Dec: computed afresh each time, nothing stored; a re-issue is
    refused naming the period."""
    from gateway.reports import frozen

    await service.build_report(sessions, SETTINGS, "deductions", "2026-12", now=NOW)
    assert await frozen.latest(sessions, "deductions", "2026-12", "", "channel") is None
    with pytest.raises(ReportError, match=r"^period:"):
        await service.reissue_report(sessions, SETTINGS, "deductions", "2026-12", actor="a", reason="r", now=NOW)


async def test_freeze_after_setting_moves_the_close(sessions) -> None:  # type: ignore[no-untyped-def]
    """`report.freeze_after` = 7 days: on 5 Dec November is still open (computed afresh, nothing
    stored, no re-issue); from 8 Dec 00:00 local (its end + 7 days) the first download freezes it."""
    from gateway.reports import frozen

    week = SimpleNamespace(report=SimpleNamespace(timezone="Asia/Shanghai", language="zh-CN", freeze_after=7 * 86_400))
    await service.build_report(sessions, week, "deductions", "2026-11", now=NOW)
    assert await frozen.latest(sessions, "deductions", "2026-11", "", "channel") is None
    with pytest.raises(ReportError, match=r"^period:"):
        await service.reissue_report(sessions, week, "deductions", "2026-11", actor="a", reason="r", now=NOW)
    await service.build_report(sessions, week, "deductions", "2026-11", now=S.L(12, 8) - 1)
    assert await frozen.latest(sessions, "deductions", "2026-11", "", "channel") is None
    await service.build_report(sessions, week, "deductions", "2026-11", now=S.L(12, 8))
    row = await frozen.latest(sessions, "deductions", "2026-11", "", "channel")
    assert row is not None and row.revision == 1


async def test_jurisdiction_history_is_used_as_of_the_date(sessions) -> None:  # type: ignore[no-untyped-def]
    """Issue 11.9: C1 (offline 10 Nov 10:00-15:00) belonged to 城北派出所 (S2) until 15 Nov and
    to 城东派出所 (S1, its current station) since. The notice of 10 Nov lists it under 城北派出所
    and --station 城北派出所 finds it; under 城东派出所 that day it is absent. For 20 Nov it is S1's."""
    async with sessions() as s, s.begin():
        s.add(T.StationChannel(station_id="S2", channel_id=S.C1, valid_from_ts=0.0, valid_to_ts=S.L(11, 15)))
        s.add(T.StationChannel(station_id="S1", channel_id=S.C1, valid_from_ts=S.L(11, 15)))
    report, _ = await service.compute_report(sessions, SETTINGS, "daily-faults", "2026-11-10", now=NOW)
    assert [(r["channel_id"], r["station"]) for r in report.tables[0].rows] == [(S.C1, "城北派出所")]
    north, _ = await service.compute_report(
        sessions, SETTINGS, "daily-faults", "2026-11-10", station="城北派出所", now=NOW
    )
    assert [r["channel_id"] for r in north.tables[0].rows] == [S.C1]
    east, _ = await service.compute_report(sessions, SETTINGS, "daily-faults", "2026-11-10", station="S1", now=NOW)
    assert east.tables[0].rows == []
    later, _ = await service.compute_report(sessions, SETTINGS, "availability", "2026-11-20", now=NOW)
    assert {r["channel_id"]: r["station"] for r in later.tables[0].rows}[S.C1] == "城东派出所"
