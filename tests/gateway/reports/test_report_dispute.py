"""Maintenance regulation: the station's confirmation or dispute changes the money."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import scenario as S

from gateway.reports.builder import make_report
from gateway.reports.faults import TicketStatus
from gateway.reports.period import parse_period

NOV = parse_period("2026-11", now=S.L(12, 5))


def sheet(status: TicketStatus) -> tuple[dict[str, dict], dict[str, dict]]:  # type: ignore[type-arg]
    tickets = [replace(S.TICKETS[0], status=status)]
    r = make_report(
        "deductions",
        NOV,
        events=S.EVENTS,
        contract=S.CONTRACT,
        policy=S.POLICY,
        tickets=tickets,
        maintenance=S.MAINTENANCE,
    )
    summary, lines, _ = r.tables
    return {x["vendor"]: x for x in summary.rows}, {x["channel_id"]: x for x in lines.rows}


def test_disputed_fault_is_held_out_until_resolved() -> None:
    """C1's 5 h fault (10 Nov 10:00-15:00) has ticket T20261110-0001. Policy v3: 2 h grace,
    1.00/h → 3.00 when billed. Disputed: held out — C1 deduction 0.00, held 5.000 h, the line
    says "T20261110-0001:disputed"; V1 = 77.00 − 3.00 = 74.00. Confirmed: billed, 3.00 and
    V1 77.00, the line says ":confirmed"."""
    vendors, lines = sheet(TicketStatus.disputed)
    c1 = lines[S.C1]
    assert (c1["deduction"], c1["held_hours"], c1["tickets"]) == (
        Decimal("0.00"),
        Decimal("5.000"),
        "T20261110-0001:disputed",
    )
    assert vendors["V1"]["deduction"] == Decimal("74.00")
    vendors, lines = sheet(TicketStatus.confirmed)
    c1 = lines[S.C1]
    assert (c1["deduction"], c1["held_hours"], c1["tickets"]) == (
        Decimal("3.00"),
        Decimal("0.000"),
        "T20261110-0001:confirmed",
    )
    assert vendors["V1"]["deduction"] == Decimal("77.00")


def test_monthly_sheet_per_vendor_and_station_by_name() -> None:
    """The signable sheet per vendor × station (names, not IDs), November under policy v3:
    科海 × 城东派出所 (C1, C2): faults 5 h + 28 h = 33 h, 1 failed (C2), rent 2 × 100 = 200.00,
    deduction 3.00 + 74.00 = 77.00, payable 123.00.
    海康 × 城北派出所 (C3, C4): 4 h + 2 h (C4 from 30 Nov 22:00) = 6 h, none failed, rent
    106.67 (C3: 16 of 30 days) + 200.00 = 306.67, deduction 2.00, payable 304.67.
    It goes to 技防办 and carries the department head's signature-and-seal line; the channel lines
    show names and the fault time as h:mm (C2: 28:00)."""
    r = make_report("deductions", NOV, events=S.EVENTS, contract=S.CONTRACT, policy=S.POLICY, maintenance=S.MAINTENANCE)
    _, lines, sheet = r.tables
    rows = [
        (
            x["vendor"],
            x["station"],
            x["channels"],
            x["failed_channels"],
            x["fault_hours"],
            x["rent"],
            x["deduction"],
            x["payable"],
        )
        for x in sheet.rows
    ]
    assert rows == [
        ("海康", "城北派出所", 2, 0, Decimal("6.000"), Decimal("306.67"), Decimal("2.00"), Decimal("304.67")),
        ("科海", "城东派出所", 2, 1, Decimal("33.000"), Decimal("200.00"), Decimal("77.00"), Decimal("123.00")),
    ]
    assert sheet.meta["send_to"] == "技防办" and "sign_head" in sheet.signatures
    c2 = next(x for x in lines.rows if x["channel_id"] == S.C2)
    assert (c2["vendor"], c2["station"], c2["batch"], c2["fault_hm"]) == ("科海", "城东派出所", "科海2016", "28:00")


def test_repairs_published_with_their_deduction() -> None:
    """The 17:00 publication for 10 Nov: C1's fault 10:00-15:00 ended that day — 5 h, ticket
    T20261110-0001; charged alone under v3: (5 − 2) h × 1.00 = 3.00. While the ticket is
    disputed the publication shows 0.00. Nothing else ended on 10 Nov."""
    from gateway.reports.notify import repairs_markdown

    day = parse_period("2026-11-10", now=S.L(12, 5))
    for status, amount in ((TicketStatus.repaired, "3.00"), (TicketStatus.disputed, "0.00")):
        tickets = [replace(S.TICKETS[0], status=status)]
        (table,) = make_report(
            "repairs", day, events=S.EVENTS, contract=S.CONTRACT, policy=S.POLICY, tickets=tickets
        ).tables
        rows = [(r["channel_id"], r["recovered"], r["fault_hm"], r["ticket"], r["deduction"]) for r in table.rows]
        assert rows == [(S.C1, S.L(11, 10, 15), "5:00", "T20261110-0001", Decimal(amount))]
    text = repairs_markdown(table)
    assert "**东门1** · 城东派出所 · 科海 · 离线 · 5:00 · 11-10 15:00 · 扣款(元) 0.00" in text
