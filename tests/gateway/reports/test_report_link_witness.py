"""Issue 11.4: a fibre link's state from the cameras that can testify."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from gateway.health.timeline import UTC8, Event, Interval, State
from gateway.reports.deductions import DeductionPolicy
from gateway.reports.ledger import build_ledger
from gateway.reports.link_fees import derive_link_intervals, link_fees_table
from gateway.reports.model import ChannelInfo, ContractData, LinkInfo
from gateway.reports.period import parse_period

A, B, C = (f"3402000000132000000{i}" for i in (1, 2, 3))
NOV = parse_period("2026-11", now=datetime(2026, 12, 5, tzinfo=UTC8).timestamp())
POLICY = DeductionPolicy(link_grace_hours=Decimal(0), link_pro_rata=True, effective_from=date(2026, 1, 1))


def L(d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(2026, 11, d, h, mi, tzinfo=UTC8).timestamp()


def ev(n: int, ch: str, ts: float, state: State) -> Event:
    return Event(f"e{n}", f"channel:{ch}", ts, state, "", {})


CONTRACT = ContractData(
    channels=tuple(ChannelInfo(c, link="L1") for c in (A, B, C)),
    links={"L1": LinkInfo("L1", "一中专线", "联通", monthly_fee=Decimal("3000.00"))},
)


def test_one_silent_camera_does_not_make_a_fibre_cut_unbillable() -> None:
    """A is never heard from (unknown all month). B and C are online from 1 Nov; the fibre is
    cut 25 Nov 10:00 (B offline 10:00, C 10:02: keepalives lapse at different times) and both
    come back 11:02. Hand: the link is online until 10:02, when the last witness goes down;
    B (down 2 min before) and C testify: offline 10:02 → 11:02 = 1 h = 3,600 s. Fee 3000 for a
    720 h month, pro rata, no grace: 3000 × 1 / 720 = 4.1667 → 4.17 (the old rule: 0.00)."""
    events = [
        ev(1, B, L(1), State.online),
        ev(2, C, L(1), State.online),
        ev(3, B, L(25, 10), State.offline),
        ev(4, C, L(25, 10, 2), State.offline),
        ev(5, B, L(25, 11, 2), State.online),
        ev(6, C, L(25, 11, 2), State.online),
    ]
    ledger = build_ledger(events, CONTRACT, NOV)
    (row,) = link_fees_table(ledger, CONTRACT, POLICY).rows
    assert row["offline_s"] == Decimal(3600)
    assert row["deduction"] == Decimal("4.17")
    assert row["payable"] == Decimal("2995.83")


def _iv(a: float, b: float, state: State) -> Interval:
    return Interval(a, b, state, "")


def test_a_camera_dead_for_long_is_no_witness() -> None:
    """A is offline all day (its run began at 00:00); B and C are online until 25 Nov 09:00 and then
    unknown (the gateway could not see them) until 12:00. Hand: no witness for the outage that
    starts at 09:00 (A went down 9 h before, more than 60 min), so the link is unknown
    09:00-12:00, not offline. If instead B goes offline at 09:00 it testifies: offline."""
    day = (L(25), L(26))
    a = [_iv(day[0], day[1], State.offline)]
    b = [
        _iv(day[0], L(25, 9), State.online),
        _iv(L(25, 9), L(25, 12), State.unknown),
        _iv(L(25, 12), day[1], State.online),
    ]
    c = list(b)
    link = derive_link_intervals([a, b, c])
    assert [(iv.start, iv.end, iv.state) for iv in link] == [
        (day[0], L(25, 9), State.online),
        (L(25, 9), L(25, 12), State.unknown),
        (L(25, 12), day[1], State.online),
    ]
    b_off = [_iv(day[0], L(25, 9), State.online), _iv(L(25, 9), L(25, 12), State.offline), b[2]]
    link = derive_link_intervals([a, b_off, c])
    assert (L(25, 9), L(25, 12), State.offline) in [(iv.start, iv.end, iv.state) for iv in link]


def test_maintenance_and_nobody_expected() -> None:
    """All channels in maintenance 10:00-11:00 → link maintenance; before any channel is expected
    the link has no interval at all."""
    a = [_iv(L(25, 10), L(25, 11), State.maintenance), _iv(L(25, 11), L(25, 12), State.online)]
    link = derive_link_intervals([a])
    assert [(iv.start, iv.end, iv.state) for iv in link] == [
        (L(25, 10), L(25, 11), State.maintenance),
        (L(25, 11), L(25, 12), State.online),
    ]
