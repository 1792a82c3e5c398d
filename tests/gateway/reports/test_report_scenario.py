"""The November 2026 scenario (tests/data/reports/scenario.py) with every answer worked out here."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import scenario as S

from gateway.health.timeline import DAY_MS, NOT_EXPECTED, State
from gateway.reports.availability import availability_table
from gateway.reports.builder import make_report
from gateway.reports.deductions import deductions_table
from gateway.reports.errors import ReportError
from gateway.reports.ledger import build_ledger
from gateway.reports.period import parse_period

H = 3_600_000
NOW = S.L(12, 5)
NOV = parse_period("2026-11", now=NOW)


@pytest.fixture(scope="module")
def ledger():  # type: ignore[no-untyped-def]
    return build_ledger(S.EVENTS, S.CONTRACT, NOV, maintenance=S.MAINTENANCE)


def test_channel_totals(ledger) -> None:  # type: ignore[no-untyped-def]
    month = 720 * H
    t1 = ledger.totals[S.C1]
    assert (t1[State.offline], t1[State.unknown], t1[State.online]) == (5 * H, H, month - 6 * H)
    t2 = ledger.totals[S.C2]
    # 36 h offline minus the 8 h window; the gateway hour on the 20th
    assert (t2[State.offline], t2[State.maintenance], t2[State.unknown]) == (28 * H, 8 * H, H)
    t3 = ledger.totals[S.C3]
    # admitted 15 Nov 08:00: 15 days 16 h expected
    assert sum(t3[s] for s in State) == 376 * H
    assert (t3[State.picture_fault], t3[State.unknown], t3[State.online]) == (4 * H, H, 371 * H)
    assert t3[NOT_EXPECTED] == month - 376 * H
    t4 = ledger.totals[S.C4]
    assert (t4[State.no_video], t4[State.online]) == (2 * H, 717 * H)


def test_channel_days(ledger) -> None:  # type: ignore[no-untyped-def]
    d1 = ledger.days[S.C1][date(2026, 11, 10)]
    assert (d1[State.offline], d1[State.online]) == (5 * H, 19 * H)
    d3 = ledger.days[S.C3]
    assert date(2026, 11, 14) not in d3
    assert (d3[date(2026, 11, 15)][NOT_EXPECTED], d3[date(2026, 11, 15)][State.online]) == (8 * H, 16 * H)
    for c in (S.C1, S.C2, S.C3, S.C4):
        for totals in ledger.days[c].values():
            assert sum(totals.values()) == DAY_MS
    assert len(ledger.days[S.C2]) == 30


def test_availability_by_channel(ledger) -> None:  # type: ignore[no-untyped-def]
    table = availability_table(ledger, S.CONTRACT)
    got = {r["channel_id"]: r["availability"] for r in table.rows}
    assert got == {S.C1: 0.9930, S.C2: 0.9606, S.C3: 0.9893, S.C4: 0.9972}  # 714/719 683/711 371/375 717/719
    row = table.rows[1]
    assert row["expected_s"] == 2592000 and row["offline_s"] == 100800 and row["maintenance_s"] == 28800
    # the total is time-weighted: (714 + 683 + 371 + 717) / (719 + 711 + 375 + 719)
    assert table.total is not None and table.total["availability"] == 0.9845
    assert table.meta["intact_rate"] == 0.75  # C2 has 28 fault hours > 8


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("vendor", {"V1": (0.9769, 0.5), "V2": (0.9945, 1.0)}),  # 1397/1430, (371+717)/(375+719)
        ("station", {"S1": (0.9769, 0.5), "S2": (0.9945, 1.0)}),
        ("link", {"L1": (0.9769, 0.5), "L2": (0.9945, 1.0)}),
    ],
)
def test_availability_grouped(ledger, group: str, expected: dict) -> None:  # type: ignore[no-untyped-def]
    table = availability_table(ledger, S.CONTRACT, group)
    assert {r["group"]: (r["availability"], r["intact_rate"]) for r in table.rows} == expected
    assert all(r["channels"] == 2 for r in table.rows)


def test_deductions(ledger) -> None:  # type: ignore[no-untyped-def]
    summary, lines = deductions_table(ledger, S.CONTRACT, S.POLICY)
    by = {r["channel_id"]: r for r in lines.rows}
    # C1: one 5 h fault, 3 h beyond the 2 h grace at 1.00/h
    assert by[S.C1]["deduction"] == Decimal("3.00")
    # C2: faults of 20 h and 8 h (the window splits them): 18 + 6 h beyond grace; 28 h > 8 h: failed,
    # half the 100.00 rent; 24 + 50 = 74
    assert (by[S.C2]["fault_episodes"], by[S.C2]["failed"], by[S.C2]["deduction"]) == (2, 1, Decimal("74.00"))
    assert by[S.C3]["deduction"] == Decimal("2.00")
    assert by[S.C4]["deduction"] == Decimal("0.00")
    v = {r["vendor"]: r for r in summary.rows}
    assert (v["V1"]["rent"], v["V1"]["deduction"], v["V1"]["payable"]) == (Decimal(200), Decimal("77.00"), Decimal(123))
    # C3 is admitted 15 Nov 08:00: in service 15-30 Nov, 16 of 30 days, 200 × 16/30 = 106.67 (issue 11.6)
    assert by[S.C3]["rent"] == Decimal("106.67")
    assert (v["V2"]["rent"], v["V2"]["deduction"]) == (Decimal("306.67"), Decimal("2.00"))
    assert summary.meta["policy_version"] == "default v3 (2000-01-01)"
    assert all(r["policy_version"] == "default v3 (2000-01-01)" for r in lines.rows)


def test_link_fees() -> None:
    r = make_report("link-fees", NOV, events=S.EVENTS, contract=S.CONTRACT, policy=S.POLICY)
    rows = {row["link"]: row for row in r.tables[0].rows}
    # L2: 6 h down, 1 h grace, 3000 × 5 / 720
    assert rows["L2"]["offline_s"] == 21600 and rows["L2"]["deduction"] == Decimal("20.83")
    assert rows["L2"]["payable"] == Decimal("2979.17")
    # L1 derived from its channels: never both down; the gateway hour is unknown
    assert rows["L1"]["offline_s"] == 0 and rows["L1"]["unknown_s"] == 3600 and rows["L1"]["deduction"] == 0


def test_daily_faults_bridge_the_maintenance_window() -> None:
    day = parse_period("2026-11-06", now=NOW)
    r = make_report(
        "daily-faults",
        day,
        events=S.EVENTS,
        contract=S.CONTRACT,
        policy=S.POLICY,
        tickets=S.TICKETS,
        maintenance=S.MAINTENANCE,
    )
    (row,) = r.tables[0].rows
    assert row["channel_id"] == S.C2 and row["station"] == "城东派出所"
    assert row["since"] == S.L(11, 5) and row["duration_s"] == 36 * 3600
    assert row["status"] == "recovered" and row["ticket"] == ""


def test_daily_faults_with_ticket_and_ongoing() -> None:
    r = make_report(
        "daily-faults",
        parse_period("2026-11-10", now=NOW),
        events=S.EVENTS,
        contract=S.CONTRACT,
        policy=S.POLICY,
        tickets=S.TICKETS,
    )
    (row,) = r.tables[0].rows
    assert (row["ticket"], row["feedback"], row["status"]) == ("T20261110-0001", "光纤被挖断", "repaired")
    r = make_report(
        "daily-faults",
        parse_period("2026-12-01", now=S.L(12, 1, 9)),
        events=S.EVENTS,
        contract=S.CONTRACT,
        policy=S.POLICY,
    )
    (row,) = r.tables[0].rows
    assert row["channel_id"] == S.C4 and row["status"] == "ongoing" and row["duration_s"] == 11 * 3600


def test_reconciliation_week_ending_thursday() -> None:
    r = make_report(
        "reconciliation",
        parse_period("2026-11-12", now=NOW),
        events=S.EVENTS,
        contract=S.CONTRACT,
        policy=S.POLICY,
        tickets=S.TICKETS,
        maintenance=S.MAINTENANCE,
    )
    rows = {row["channel_id"]: row for row in r.tables[0].rows}
    assert set(rows) == {S.C1, S.C2}  # 6-12 Nov; C2's fault ended on the 6th
    assert rows[S.C1]["difference_s"] == 1800 and rows[S.C1]["check"] == "mismatch"
    assert rows[S.C2]["check"] == "no_ticket"
    # the amounts the Thursday meeting reconciles, 6-12 Nov (7 of 30 days), per vendor × station:
    # 科海 × 城东派出所: rent 2 × round(100 × 7/30) = 2 × 23.33 = 46.66; C1's 5 h → 3 h × 1.00 = 3.00,
    # C2's part in the window (maintenance to 04:00, then offline to 12:00) 8 h → 6 h = 6.00 → 9.00;
    # 海康 × 城北派出所: C4 200 × 7/30 = 46.67, C3 not in service yet (0.00), no deduction
    amounts = [(x["vendor"], x["station"], x["rent"], x["deduction"], x["payable"]) for x in r.tables[1].rows]
    assert amounts == [
        ("海康", "城北派出所", Decimal("46.67"), Decimal("0.00"), Decimal("46.67")),
        ("科海", "城东派出所", Decimal("46.66"), Decimal("9.00"), Decimal("37.66")),
    ]


def test_unknown_kind() -> None:
    with pytest.raises(ReportError):
        make_report("nope", NOV, events=[], contract=S.CONTRACT, policy=S.POLICY)


def test_cascade_link_availability_like_a_fibre_link() -> None:
    """Issue 14: the uplink to an upper platform (ledger subject cascade:<id>) in the availability report.
    Hand: November = 720 h. The uplink registered on 1 Nov 08:00 (the 8 h before: no evidence, unknown),
    the upper stopped answering 10 Nov 10:00-16:00 (6 h offline), and the gateway's own hour on 20 Nov
    02:00-03:00 is unknown. online = 720 - 8 - 6 - 1 = 705 h; availability = 705 / (720 - 9) = 0.9916.
    Plays (cascade:<id>/<channel>) are not links and stay out of the table."""
    up = "44000000002000000001"
    events = [*S.EVENTS,
              S._ev(f"cascade:{up}", S.L(11, 1, 8), State.online, "registered"),
              S._ev(f"cascade:{up}", S.L(11, 10, 10), State.offline, "keepalive_lost"),
              S._ev(f"cascade:{up}", S.L(11, 10, 16), State.online, "registered"),
              S._ev(f"cascade:{up}/34020000001310000001", S.L(11, 12), State.online, "ack")]
    r = make_report("availability", NOV, events=events, contract=S.CONTRACT, policy=S.POLICY)
    assert len(r.tables) == 2 and r.csv_index == 0
    uplinks = r.tables[1]
    assert [row["uplink"] for row in uplinks.rows] == [up]
    row = uplinks.rows[0]
    assert (row["online_s"], row["offline_s"], row["unknown_s"]) == (705 * 3600, 6 * 3600, 9 * 3600)
    assert row["availability"] == round(705 / 711, 4)
    assert uplinks.total["online_s"] == 705 * 3600
    # without any uplink event the report is what it always was: one table
    plain = make_report("availability", NOV, events=S.EVENTS, contract=S.CONTRACT, policy=S.POLICY)
    assert len(plain.tables) == 1
    from gateway.reports.render import render

    html = render(r, "html").decode("utf-8")
    assert "级联上级平台链路在线率" in html and "上级平台编码" in html and up in html
    assert render(r, "xlsx")[:2] == b"PK"
