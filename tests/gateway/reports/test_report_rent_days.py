"""Issue 11.6: rent pro-rated by days in service (admission / retirement), per a policy setting."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from gateway.health.timeline import UTC8, Event, State
from gateway.reports.deductions import DeductionPolicy, deduction_lines
from gateway.reports.ledger import build_ledger
from gateway.reports.model import BatchInfo, ChannelInfo, ContractData
from gateway.reports.period import parse_period

NEW, OLD = "34020000001320000001", "34020000001320000002"
NOV = parse_period("2026-11", now=datetime(2026, 12, 5, tzinfo=UTC8).timestamp())


def L(d: int, h: int = 0) -> float:
    return datetime(2026, 11, d, h, tzinfo=UTC8).timestamp()


CONTRACT = ContractData(
    channels=(
        ChannelInfo(NEW, vendor="V1", batch="B1", admitted_ts=L(26, 10), contracted=True),
        ChannelInfo(OLD, vendor="V1", batch="B1", admitted_ts=L(1), retired_ts=L(3), contracted=True),
    ),
    batches={"B1": BatchInfo("B1", "V1", 2026, 2, Decimal("300.00"))},
)
EVENTS = [Event("e1", f"channel:{OLD}", L(1), State.online, "registered")]


def test_rent_by_days_in_service() -> None:
    """Rent 300.00/month, November has 30 days.
    NEW admitted 26 Nov 10:00: in service 26-30 Nov = 5 days → 300 × 5/30 = 50.00. It never
    registers: offline (never_registered) 26 Nov 10:00 → 1 Dec = 110 h; at 1.00/h beyond a 2 h
    grace that is 108.00, capped at its rent for the month, 50.00.
    OLD in service 1 Nov 00:00, retired 3 Nov 00:00: 2 days → 300 × 2/30 = 20.00; online, 0.00."""
    policy = DeductionPolicy(grace_hours=Decimal(2), rate_per_fault_hour=Decimal(1), effective_from=date(2026, 1, 1))
    lines = {r["channel_id"]: r for r in deduction_lines(build_ledger(EVENTS, CONTRACT, NOV), CONTRACT, policy)}
    assert (lines[NEW]["rent"], lines[NEW]["fault_hours"], lines[NEW]["deduction"]) == (
        Decimal("50.00"),
        Decimal("110.000"),
        Decimal("50.00"),
    )
    assert (lines[OLD]["rent"], lines[OLD]["deduction"]) == (Decimal("20.00"), Decimal("0.00"))


def test_whole_month_rent_when_the_policy_says_so() -> None:
    """rent_by_days_in_service = false: both pay 300.00 (the month's share of the period is 1);
    NEW's deduction is then capped at 300.00, so it is the uncapped 108.00."""
    policy = DeductionPolicy.from_body(
        {"grace_hours": 2, "rate_per_fault_hour": 1, "rent_by_days_in_service": False}, version=1
    )
    lines = {r["channel_id"]: r for r in deduction_lines(build_ledger(EVENTS, CONTRACT, NOV), CONTRACT, policy)}
    assert lines[NEW]["rent"] == lines[OLD]["rent"] == Decimal("300.00")
    assert lines[NEW]["deduction"] == Decimal("108.00")
