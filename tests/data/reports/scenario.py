"""A small district in November 2026 whose answers are worked out by hand in the tests.

Channels (local time UTC+8; the gateway was down on 20 Nov 02:00-03:00 for everybody):
  C1 东门1  Kehai B1 (100/month) link L1 station S1: offline 10 Nov 10:00-15:00 (5 h).
  C2 东门2  Kehai B1             link L1 station S1: offline 5 Nov 00:00 - 6 Nov 12:00 (36 h) with
            a maintenance window 5 Nov 20:00 - 6 Nov 04:00 (8 h) in the middle.
  C3 北门   Haikang B2 (200/month) link L2 station S2: admitted 15 Nov 08:00; picture fault (blur)
            16 Nov 09:00-13:00.
  C4 北门2  Haikang B2           link L2 station S2: no video from 30 Nov 22:00 (into December).
Link L2 (3000/month) has its own events: offline 25 Nov 10:00-16:00.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from gateway.health.timeline import UTC8, Event, State
from gateway.reports.deductions import DeductionPolicy
from gateway.reports.faults import Ticket, TicketStatus
from gateway.reports.ledger import MaintenanceDecl
from gateway.reports.model import BatchInfo, ChannelInfo, ContractData, LinkInfo

C1, C2, C3, C4 = (f"3402000000132000000{i}" for i in range(1, 5))


def L(m: int, d: int, h: int = 0, mi: int = 0, y: int = 2026) -> float:
    return datetime(y, m, d, h, mi, tzinfo=UTC8).timestamp()


CONTRACT = ContractData(
    channels=(
        ChannelInfo(C1, "东门1", "SITE1", "万达广场", "L1", "V1", "B1", "S1", device_id="34020000001110000001"),
        ChannelInfo(C2, "东门2", "SITE1", "万达广场", "L1", "V1", "B1", "S1", device_id="34020000001110000001"),
        ChannelInfo(C3, "北门", "SITE2", "第一中学", "L2", "V2", "B2", "S2", admitted_ts=L(11, 15, 8)),
        ChannelInfo(C4, "北门2", "SITE2", "第一中学", "L2", "V2", "B2", "S2"),
    ),
    batches={
        "B1": BatchInfo("B1", "V1", 2016, 300, Decimal("100.00"), "科海2016"),
        "B2": BatchInfo("B2", "V2", 2019, 120, Decimal("200.00"), "海康2019"),
    },
    links={
        "L1": LinkInfo("L1", "万达专线", "电信", "SITE1", Decimal("1500.00")),
        "L2": LinkInfo("L2", "一中专线", "联通", "SITE2", Decimal("3000.00")),
    },
    vendors={"V1": "科海", "V2": "海康"},
    stations={"S1": "城东派出所", "S2": "城北派出所"},
    sites={"SITE1": "万达广场", "SITE2": "第一中学"},
)

_n = 0


def _ev(subject: str, ts: float, state: State, cause: str = "") -> Event:
    global _n
    _n += 1
    return Event(f"s{_n}", subject, ts, state, cause, {})


def ch(c: str) -> str:
    return f"channel:{c}"


EVENTS = [
    _ev("gateway", L(10, 1), State.online, "start"),
    _ev("gateway", L(11, 20, 2), State.unknown, "gateway_down"),
    _ev("gateway", L(11, 20, 3), State.online, "gateway_restart"),
    _ev(ch(C1), L(10, 31, 12), State.online, "registered"),
    _ev(ch(C1), L(11, 10, 10), State.offline, "keepalive_lost"),
    _ev(ch(C1), L(11, 10, 15), State.online, "registered"),
    _ev(ch(C2), L(10, 31, 12), State.online, "registered"),
    _ev(ch(C2), L(11, 5, 0), State.offline, "keepalive_lost"),
    _ev(ch(C2), L(11, 6, 12), State.online, "registered"),
    _ev(ch(C3), L(11, 15, 8), State.online, "registered"),
    _ev(ch(C3), L(11, 16, 9), State.picture_fault, "blur"),
    _ev(ch(C3), L(11, 16, 13), State.online, "picture_ok"),
    _ev(ch(C4), L(10, 31, 12), State.online, "registered"),
    _ev(ch(C4), L(11, 30, 22), State.no_video, "no_stream"),
    _ev("link:L2", L(10, 1), State.online, "up"),
    _ev("link:L2", L(11, 25, 10), State.offline, "link_down"),
    _ev("link:L2", L(11, 25, 16), State.online, "up"),
]

MAINTENANCE = [MaintenanceDecl(ch(C2), L(11, 5, 20), L(11, 6, 4), "更换交换机")]

POLICY = DeductionPolicy.from_body(
    {
        "grace_hours": 2,
        "rate_per_fault_hour": "1.00",
        "repair_deadline_hours": 24,
        "rate_per_day_beyond_deadline": "10.00",
        "failed_channel_fault_hours": 8,
        "failed_channel_rent_ratio": "0.5",
        "cap_at_rent": True,
        "link_grace_hours": 1,
        "annual_offline_days": 30,
        "annual_deduction_per_channel": "500",
    },
    name="default",
    version=3,
)

TICKETS = [
    Ticket(
        "T20261110-0001",
        C1,
        "V1",
        "S1",
        "offline",
        L(11, 10, 10),
        TicketStatus.repaired,
        "keepalive_lost",
        "光纤被挖断",
        L(11, 10, 16),
        L(11, 10, 15, 30),
    ),
]
