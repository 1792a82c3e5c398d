"""Monthly fee per fibre link minus deductions for the link's downtime (issue 5 §5).

A link's timeline comes from its own `link:<id>` events when the recorder writes them; otherwise
it is derived from the cameras it carries that can testify (issue 11.4):

* the link is `online` while any of its expected channels has signalling (online, no_video,
  picture_fault);
* when none has, the outage starts; the *witnesses* are the channels that are `offline` and went
  offline no earlier than `link_witness_minutes` (policy, 60 min) before the outage started —
  a camera dead for long before the link went down says nothing about the link, and a channel
  `unknown` (silent since a restart, never heard from) or in maintenance is no witness at all;
* with at least one witness the link is `offline` (billable), else `maintenance` if any channel
  is in maintenance, else `unknown` (nobody could see it), and nothing where no channel is
  expected. So one silent camera no longer makes a fibre cut unbillable, and one long-dead
  camera alone never makes the link offline.

Deduction per local month: billable = Σ max(0, outage − link_grace_hours) over outage runs;
fee × billable / month length when `link_pro_rata`, plus link_rate_per_hour × billable hours,
capped at fee × link_cap_ratio × the month's share of the period.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from gateway.health.timeline import (
    Event,
    Interval,
    State,
    availability,
    build_intervals,
    split_days,
    sum_totals,
    to_ms,
)
from gateway.reports.availability import seconds
from gateway.reports.deductions import HOUR_MS, DeductionPolicy, money
from gateway.reports.ledger import Ledger, clip, month_slices
from gateway.reports.model import ContractData
from gateway.reports.table import Column, Table

_UP = frozenset({State.online, State.no_video, State.picture_fault})

LINK_COLUMNS = [
    Column("link"),
    Column("name"),
    Column("provider"),
    Column("site"),
    Column("channels", "int"),
    Column("monthly_fee", "money"),
    Column("fee", "money"),
    Column("expected_s", "seconds"),
    Column("offline_s", "seconds"),
    Column("maintenance_s", "seconds"),
    Column("unknown_s", "seconds"),
    Column("availability", "ratio"),
    Column("billable_hours", "hours"),
    Column("deduction", "money"),
    Column("payable", "money"),
    Column("policy_version"),
]


def derive_link_intervals(
    channel_intervals: Iterable[list[Interval]], *, witness_window_ms: int = 3_600_000
) -> list[Interval]:
    """The link's timeline from its channels' timelines (see the module docstring); one sweep."""
    points: list[tuple[int, int, State | None]] = []
    for idx, ivs in enumerate(channel_intervals):
        for iv in ivs:
            points.append((to_ms(iv.start), idx, iv.state))
        if ivs:
            points.append((to_ms(ivs[-1].end), idx, None))
    # at equal instants an interval's end (None) must not undo the next one's start
    points.sort(key=lambda p: (p[0], p[2] is not None))
    current: dict[int, State] = {}
    offline_since: dict[int, int] = {}
    counts: dict[State, int] = dict.fromkeys(State, 0)
    outage_start: int | None = None
    out: list[Interval] = []
    i, n = 0, len(points)
    while i < n:
        a = points[i][0]
        while i < n and points[i][0] == a:
            _, idx, st = points[i]
            prev = current.pop(idx, None)
            if prev is not None:
                counts[prev] -= 1
            if st is None:
                offline_since.pop(idx, None)
            else:
                current[idx] = st
                counts[st] += 1
                if st is State.offline:
                    offline_since.setdefault(idx, a)
                else:
                    offline_since.pop(idx, None)
            i += 1
        if i == n:
            break
        b = points[i][0]
        if any(counts[s] for s in _UP):
            outage_start, link = None, State.online
        else:
            if outage_start is None:
                outage_start = a
            cutoff = outage_start - witness_window_ms
            if any(since >= cutoff for since in offline_since.values()):
                link = State.offline
            elif counts[State.maintenance]:
                link = State.maintenance
            elif current:
                link = State.unknown
            else:
                continue  # no channel expected here
        if out and out[-1].state is link and to_ms(out[-1].end) == a:
            out[-1] = Interval(out[-1].start, b / 1000, link, out[-1].cause)
        else:
            out.append(Interval(a / 1000, b / 1000, link, "derived_from_channels"))
    return out


def _outage_runs(intervals: list[Interval]) -> list[int]:
    runs, cur = [], 0
    for iv in intervals:
        if iv.state is State.offline:
            cur += to_ms(iv.end) - to_ms(iv.start)
        elif cur:
            runs.append(cur)
            cur = 0
    if cur:
        runs.append(cur)
    return runs


def link_deduction(
    intervals: list[Interval], policy: DeductionPolicy, *, fee: Decimal, month_ms: int, share: Decimal
) -> tuple[int, Decimal]:
    """(billable ms, deduction) for one link within one month."""
    grace = int(policy.link_grace_hours * HOUR_MS)
    billable = sum(max(0, run - grace) for run in _outage_runs(intervals))
    amount = Decimal(0)
    if policy.link_pro_rata:
        amount += fee * Decimal(billable) / Decimal(month_ms)
    amount += policy.link_rate_per_hour * Decimal(billable) / HOUR_MS
    return billable, min(amount, fee * policy.link_cap_ratio * share)


def link_fees_table(
    ledger: Ledger, contract: ContractData, policy: DeductionPolicy, *, link_events: Iterable[Event] = ()
) -> Table:
    """One row per fibre link: fee for the period, downtime, deduction, payable."""
    own: dict[str, list[Event]] = defaultdict(list)
    for ev in link_events:
        if ev.subject.startswith("link:"):
            own[ev.subject[5:]].append(ev)
    members: dict[str, list[str]] = defaultdict(list)
    for ch in contract.channels:
        if ch.link:
            members[ch.link].append(ch.channel_id)
    slices = month_slices(ledger.period)
    table = Table("link-fees", LINK_COLUMNS)
    table.meta.update(period=ledger.period.label, policy_version=policy.label)
    for link_id in sorted(set(contract.links) | set(members)):
        info = contract.links.get(link_id)
        fee_month = info.monthly_fee if info else Decimal(0)
        if link_id in own:
            ivs = build_intervals(
                own[link_id],
                start=ledger.period.start,
                end=ledger.period.end,
                gateway_down=ledger.gateway_down,
                maintenance=ledger.windows.get(f"link:{link_id}", ()),
            )
        else:
            ivs = derive_link_intervals(
                (ledger.intervals[c] for c in members.get(link_id, ())),
                witness_window_ms=int(policy.link_witness_minutes * 60_000),
            )
        totals = sum_totals(split_days(ivs, ledger.period.tz).values())
        fee = billable = Decimal(0)
        deduction = Decimal(0)
        for sl in slices:
            share = Decimal(sl.share_ms) / Decimal(sl.month_ms)
            fee += fee_month * share
            b, d = link_deduction(clip(ivs, sl.start, sl.end), policy, fee=fee_month, month_ms=sl.month_ms, share=share)
            billable += b
            deduction += d
        expected = sum(v for k, v in totals.items() if k != "not_expected")
        row: dict[str, Any] = {
            "link": link_id,
            "name": info.name if info else "",
            "provider": info.provider if info else "",
            "site": info.site if info else "",
            "channels": len(members.get(link_id, ())),
            "monthly_fee": money(fee_month),
            "fee": money(fee),
            "expected_s": seconds(expected),
            "offline_s": seconds(totals[State.offline]),
            "maintenance_s": seconds(totals[State.maintenance]),
            "unknown_s": seconds(totals[State.unknown]),
            "availability": availability(totals),
            "billable_hours": (billable / HOUR_MS).quantize(Decimal("0.001")),
            "deduction": money(deduction),
            "payable": money(fee) - money(deduction),
            "policy_version": policy.label,
        }
        table.rows.append(row)
    table.total = {
        "link": "*",
        "fee": sum((r["fee"] for r in table.rows), Decimal(0)),
        "deduction": sum((r["deduction"] for r in table.rows), Decimal(0)),
        "payable": sum((r["payable"] for r in table.rows), Decimal(0)),
    }
    table.chart = ("link", "deduction")
    return table
