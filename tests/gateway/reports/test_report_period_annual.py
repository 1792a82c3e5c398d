"""Periods in local time, and the annual offline rule."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import scenario as S

from gateway.health.timeline import Event, State
from gateway.reports.annual import annual_offline_table
from gateway.reports.deductions import DeductionPolicy
from gateway.reports.errors import PeriodError
from gateway.reports.ledger import build_ledger, month_slices
from gateway.reports.model import ChannelInfo, ContractData
from gateway.reports.period import parse_period


def test_periods() -> None:
    now = S.L(12, 5, 12)
    day = parse_period("2026-11-27", now=now)
    assert (day.kind, day.start, day.end, day.days) == ("day", S.L(11, 27), S.L(11, 28), [date(2026, 11, 27)])
    month = parse_period("2026-02", now=now)
    assert (month.first, month.last, len(month.days)) == (date(2026, 2, 1), date(2026, 2, 28), 28)
    year = parse_period(" 2025 ", now=now)
    assert (year.start, year.end, len(year.days)) == (S.L(1, 1, y=2025), S.L(1, 1, y=2026), 365)
    running = parse_period("2026-12", now=now)
    assert running.end == now and running.full_end == S.L(1, 1, y=2027) and not running.complete
    for bad in ["2026-13", "2026-02-30", "26-11", "2026/11", "", "2027", "2026-12-06"]:
        with pytest.raises(PeriodError):
            parse_period(bad, now=now)


def test_month_slices_share() -> None:
    year = parse_period("2024", now=S.L(1, 1))
    slices = month_slices(year)
    assert len(slices) == 12 and slices[1].month_ms == 29 * 86_400_000  # leap February
    assert all(s.share_ms == s.month_ms for s in slices)
    day = month_slices(parse_period("2026-11-27", now=S.L(12, 1)))
    assert len(day) == 1 and day[0].share_ms * 30 == day[0].month_ms


def test_annual_offline_rule() -> None:
    a, b, c = "34020000001320000011", "34020000001320000012", "34020000001320000013"
    contract = ContractData(
        channels=(ChannelInfo(a, vendor="V1"), ChannelInfo(b, vendor="V1"), ChannelInfo(c, vendor="V2"))
    )
    y0 = S.L(1, 1, y=2025)
    events = [
        Event("a1", f"channel:{a}", y0, State.online, "", {}),
        # 31 days and 11 hours offline: 31 full days; the 11 h day is below the 12 h minimum
        Event("a2", f"channel:{a}", S.L(3, 1, y=2025), State.offline, "", {}),
        Event("a3", f"channel:{a}", S.L(4, 1, 11, y=2025), State.online, "", {}),
        Event("b1", f"channel:{b}", y0, State.online, "", {}),
        Event("b2", f"channel:{b}", S.L(6, 1, y=2025), State.offline, "", {}),  # 30 days: not more than 30
        Event("b3", f"channel:{b}", S.L(7, 1, y=2025), State.online, "", {}),
        Event("c1", f"channel:{c}", y0, State.unknown, "", {}),  # a year unknown is never billed
    ]
    policy = DeductionPolicy(
        annual_offline_days=30, annual_offline_day_min_hours=Decimal(12), annual_deduction_per_channel=Decimal(500)
    )
    ledger = build_ledger(events, contract, parse_period("2025", now=S.L(1, 10)))
    table = annual_offline_table(ledger, contract, policy)
    rows = {r["channel_id"]: r for r in table.rows}
    assert (rows[a]["offline_days"], rows[a]["deduction"]) == (31, Decimal("500.00"))
    assert (rows[b]["offline_days"], rows[b]["deduction"]) == (30, Decimal("0.00"))
    assert (rows[c]["offline_days"], rows[c]["deduction"]) == (0, Decimal("0.00"))
    assert table.rows[0]["channel_id"] == a and table.total == {
        "vendor": "*",
        "deduction": Decimal("500.00"),
        "offline_days": 61,
    }
