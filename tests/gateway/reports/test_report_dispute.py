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
    summary, lines = r.tables
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
