"""Issue 11 verification: one month of a small district, every figure derived by hand.

District (November 2026, 30 days = 720 h, local time UTC+8):

* vendors V1 科海 (batch B1, 100.00 per channel-month) and V2 海康 (batch B2, 200.00);
* stations S1 城东派出所 (A1, A2) and S2 城北派出所 (B1, B2, B3);
* one fibre link L1 (3,000.00/month) carrying A1, A2 and B1;
* policy v1: grace 2 h, 1.00 per fault hour beyond it, capped at the channel's rent for the
  month (rent by days in service), failed channel = more than 8 fault hours; link grace 1 h,
  pro rata.

What happens:

* the gateway crashes 20 Nov 02:00 and restarts 03:00 (the recorder's `recover` marks everyone it
  knew `unknown` from 02:00); A1, B1 and B3 register again at 03:00. A2 had died and never comes
  back: `silent_after_restart` makes it offline at 03:00 + 180 s (keepalive 60 s × 3) = 03:03;
* A1 is offline 10 Nov 08:00-13:00 (5 h), ticket T20261110-0001, disputed by the station;
* the fibre is cut 25 Nov 10:00-12:00: A1 and B1 offline (A2, dead since the 20th, no witness);
* B2 is contracted from 1 Nov and never registers;
* B3 is admitted 16 Nov 00:00 (registers then), has no video from 28 Nov 20:00 into December.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from gateway.health.journal import recover
from gateway.health.recorder import silent_after_restart
from gateway.health.timeline import UTC8, Event, State
from gateway.reports.builder import make_report
from gateway.reports.deductions import DeductionPolicy
from gateway.reports.faults import Ticket, TicketStatus
from gateway.reports.ledger import CAUSE_NEVER_REGISTERED, build_ledger
from gateway.reports.model import BatchInfo, ChannelInfo, ContractData, LinkInfo
from gateway.reports.period import parse_period

A1, A2, B1, B2, B3 = (f"3402000000132000001{i}" for i in range(1, 6))


def L(d: int, h: int = 0, mi: int = 0, m: int = 11) -> float:
    return datetime(2026, m, d, h, mi, tzinfo=UTC8).timestamp()


NOV = parse_period("2026-11", now=L(5, 12, m=12))
POLICY = DeductionPolicy.from_body(
    {
        "grace_hours": 2,
        "rate_per_fault_hour": "1.00",
        "failed_channel_fault_hours": 8,
        "link_grace_hours": 1,
        "link_pro_rata": True,
    },
    version=1,
    effective_from=date(2026, 1, 1),
)
CONTRACT = ContractData(
    channels=(
        ChannelInfo(A1, "东门1", "SITE1", link="L1", vendor="V1", batch="B1", station="S1", contracted=True),
        ChannelInfo(A2, "东门2", "SITE1", link="L1", vendor="V1", batch="B1", station="S1", contracted=True),
        ChannelInfo(B1, "北门1", "SITE2", link="L1", vendor="V2", batch="B2", station="S2", contracted=True),
        ChannelInfo(B2, "北门2", "SITE2", vendor="V2", batch="B2", station="S2", admitted_ts=L(1), contracted=True),
        ChannelInfo(B3, "北门3", "SITE2", vendor="V2", batch="B2", station="S2", admitted_ts=L(16), contracted=True),
    ),
    batches={
        "B1": BatchInfo("B1", "V1", 2026, 10, Decimal("100.00"), "科海2026"),
        "B2": BatchInfo("B2", "V2", 2026, 10, Decimal("200.00"), "海康2026"),
    },
    links={"L1": LinkInfo("L1", "一号专线", "电信", monthly_fee=Decimal("3000.00"))},
    vendors={"V1": "科海", "V2": "海康"},
    stations={"S1": "城东派出所", "S2": "城北派出所"},
)
TICKET = Ticket("T20261110-0001", A1, "V1", "S1", "offline", L(10, 8), TicketStatus.disputed, "keepalive_lost")


def events() -> list[Event]:
    n = 0

    def ev(subject: str, ts: float, state: State, cause: str = "") -> Event:
        nonlocal n
        n += 1
        return Event(f"x{n}", subject, ts, state, cause, {})

    ch = {c: f"channel:{c}" for c in (A1, A2, B1, B2, B3)}
    out = [ev("gateway", L(1, m=10), State.online, "start")]
    out += [ev(ch[c], L(31, 12, m=10), State.online, "registered") for c in (A1, A2, B1)]
    out += [ev(ch[A1], L(10, 8), State.offline, "keepalive_lost"), ev(ch[A1], L(10, 13), State.online, "registered")]
    out.append(ev(ch[B3], L(16), State.online, "registered"))
    # the crash at 02:00 and the restart at 03:00, as the recorder writes them
    before = [e for e in out if e.ts < L(20, 2)]
    gap = recover(before, now=L(20, 3), last_evidence_ts=L(20, 2))
    out += gap
    out += [ev(ch[c], L(20, 3), State.online, "registered") for c in (A1, B1, B3)]
    last = {e.subject: e.state for e in sorted(out, key=lambda e: e.ts)}
    heard = {ch[A1], ch[B1], ch[B3]}
    out += silent_after_restart(last, heard, started=L(20, 3), silent_after=180.0)
    out += [ev(ch[c], L(25, 10), State.offline, "keepalive_lost") for c in (A1, B1)]
    out += [ev(ch[c], L(25, 12), State.online, "registered") for c in (A1, B1)]
    out.append(ev(ch[B3], L(28, 20), State.no_video, "play_timeout"))
    return out


H = 3_600_000


def test_the_restart_and_never_registered_timelines() -> None:
    """A2: online 1 Nov 00:00 → 20 Nov 02:00 (458 h), unknown 02:00 → 03:03 (1 h 3 min; the
    restart gap and the keepalive window), offline (silent_after_restart) 03:03 → 1 Dec
    (720 − 458 − 1.05 = 260.95 h). B2: offline (never_registered) all month but the gateway's
    1 h down: 719 h, unknown 1 h."""
    ledger = build_ledger(events(), CONTRACT, NOV)
    a2 = ledger.totals[A2]
    assert (a2[State.online], a2[State.unknown], a2[State.offline]) == (458 * H, 63 * 60_000, 260 * H + 57 * 60_000)
    assert ledger.intervals[A2][-1].cause == "silent_after_restart"
    b2 = ledger.totals[B2]
    assert (b2[State.offline], b2[State.unknown], b2[State.online]) == (719 * H, 1 * H, 0)
    assert ledger.intervals[B2][0].cause == CAUSE_NEVER_REGISTERED


def test_availability_and_intact_rate() -> None:
    """Per channel, online / (expected − unknown):
    A1 (720 − 1 − 5 − 2) / 719 = 712/719 = 0.99026 → 0.9903; A2 458/718.95 = 0.63704 → 0.6370;
    B1 717/719 = 0.99722 → 0.9972; B2 0/719 = 0.0; B3 (360 − 1 − 52)/359 = 307/359 = 0.85515 →
    0.8552. Total (712 + 458 + 717 + 0 + 307)/(719 + 718.95 + 719 + 719 + 359) = 2194/3234.95 =
    0.67822 → 0.6782. 完好率: fault ≤ 8 h for A1 (7 h) and B1 (2 h) only → 2/5 = 0.4.
    城北派出所 alone: (717 + 0 + 307)/(719 + 719 + 359) = 1024/1797 = 0.56984 → 0.5698; 1/3 → 0.3333."""
    r = make_report("availability", NOV, events=events(), contract=CONTRACT, policy=POLICY)
    (table,) = r.tables
    got = {row["channel_id"]: row["availability"] for row in table.rows}
    assert got == {A1: 0.9903, A2: 0.6370, B1: 0.9972, B2: 0.0, B3: 0.8552}
    assert table.total["availability"] == 0.6782 and table.meta["intact_rate"] == 0.4
    from dataclasses import replace

    north = replace(CONTRACT, channels=tuple(c for c in CONTRACT.channels if c.station == "S2"))
    (t2,) = make_report("availability", NOV, events=events(), contract=north, policy=POLICY).tables
    assert t2.total["availability"] == 0.5698 and t2.meta["intact_rate"] == 0.3333


def test_deductions_with_dispute_admission_and_caps() -> None:
    """Lines (rent by days in service; deduction = Σ(episode − 2 h) × 1.00, capped at rent):
    A1: the disputed 5 h is held out; the 2 h fibre cut is within grace → 0.00, held 5 h,
        rent 100.00;
    A2: one episode of 260.95 h → 258.95, capped at 100.00 → 100.00; failed;
    B1: 2 h → 0.00; rent 200.00;
    B2: 719 h (the 1 h gateway gap does not split it) → 717.00, capped at 200.00; failed;
    B3: rent 200 × 15/30 = 100.00; no video 52 h → 50.00; failed.
    V1 科海: rent 200.00, deduction 100.00, payable 100.00, 1 failed.
    V2 海康: rent 500.00, deduction 250.00, payable 250.00, 2 failed. Total 700.00 / 350.00 / 350.00.
    Per vendor × station: 科海 × 城东派出所 fault 2 + 260.95 = 262.95 h; 海康 × 城北派出所
    2 + 719 + 52 = 773 h."""
    r = make_report("deductions", NOV, events=events(), contract=CONTRACT, policy=POLICY, tickets=[TICKET])
    summary, lines, sheet = r.tables
    by = {x["channel_id"]: x for x in lines.rows}
    assert (by[A1]["deduction"], by[A1]["held_hours"], by[A1]["tickets"]) == (
        Decimal("0.00"),
        Decimal("5.000"),
        "T20261110-0001:disputed",
    )
    assert (by[A2]["deduction"], by[A2]["fault_hours"], by[A2]["failed"]) == (Decimal("100.00"), Decimal("260.950"), 1)
    assert by[B1]["deduction"] == Decimal("0.00")
    assert (by[B2]["deduction"], by[B2]["fault_episodes"], by[B2]["fault_hours"]) == (
        Decimal("200.00"),
        1,
        Decimal("719.000"),
    )
    assert (by[B3]["rent"], by[B3]["deduction"], by[B3]["failed"]) == (Decimal("100.00"), Decimal("50.00"), 1)
    v = {x["vendor"]: x for x in summary.rows}
    assert (v["V1"]["rent"], v["V1"]["deduction"], v["V1"]["payable"], v["V1"]["failed_channels"]) == (
        Decimal("200.00"),
        Decimal("100.00"),
        Decimal("100.00"),
        1,
    )
    assert (v["V2"]["rent"], v["V2"]["deduction"], v["V2"]["payable"], v["V2"]["failed_channels"]) == (
        Decimal("500.00"),
        Decimal("250.00"),
        Decimal("250.00"),
        2,
    )
    assert (summary.total["rent"], summary.total["deduction"], summary.total["payable"]) == (
        Decimal("700.00"),
        Decimal("350.00"),
        Decimal("350.00"),
    )
    assert [(x["vendor"], x["station"], x["fault_hours"]) for x in sheet.rows] == [
        ("海康", "城北派出所", Decimal("773.000")),
        ("科海", "城东派出所", Decimal("262.950")),
    ]


def test_link_fee_from_its_witnesses() -> None:
    """L1 (A1, A2, B1): unknown 20 Nov 02:00-03:00 (nobody could see it); offline 25 Nov
    10:00-12:00 (A1 and B1 testify; A2, offline since the 20th, is no witness) = 7,200 s.
    Billable 2 − 1 h grace = 1 h: 3000 × 1/720 = 4.1667 → 4.17; payable 2,995.83;
    availability 717/719 = 0.9972."""
    (table,) = make_report("link-fees", NOV, events=events(), contract=CONTRACT, policy=POLICY).tables
    (row,) = table.rows
    assert (row["offline_s"], row["unknown_s"]) == (Decimal(7200), Decimal(3600))
    assert (row["deduction"], row["payable"], row["availability"]) == (Decimal("4.17"), Decimal("2995.83"), 0.9972)
