"""From raw ledger events to per-channel intervals and totals for one report period (pure).

Channel timelines use the `channel:<id>` events the recorder writes (it turns a device's
keepalive loss into transitions of that device's channels). Maintenance windows apply to a
channel when declared for the channel, its device, its site or its link. Gateway down periods
come from the `gateway` subject; if the ledger holds no gateway events at all, none are assumed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from gateway.health.timeline import (
    FAULT_STATES,
    NOT_EXPECTED,
    Event,
    Interval,
    State,
    build_intervals,
    empty_totals,
    gateway_down_periods,
    split_days,
    sum_totals,
    to_ms,
)
from gateway.reports.model import ChannelInfo, ContractData
from gateway.reports.period import Period

_FAULTS = frozenset(FAULT_STATES)


@dataclass(slots=True, frozen=True)
class MaintenanceDecl:
    """A declared window: subject is channel:<id>, device:<id>, site:<id> or link:<id>."""

    subject: str
    start: float
    end: float
    reason: str = ""


@dataclass(slots=True, frozen=True)
class Episode:
    """A run of fault states (offline/no_video/picture_fault) of one channel.

    `fault_ms` is the billable fault time inside it: equal to its length unless gaps of
    unknown/maintenance were bridged (notices bridge them; billing does not).
    """

    channel_id: str
    start: float
    end: float
    state: State  # the state holding most of the time
    cause: str  # cause of the first fault interval
    fault_ms: int
    ongoing: bool  # still faulty at the end of the ledger


@dataclass(slots=True)
class Ledger:
    period: Period
    intervals: dict[str, list[Interval]]  # channel_id → its intervals (expected time only)
    days: dict[str, dict[date, dict[str, int]]]
    totals: dict[str, dict[str, int]]  # channel_id → ms per state (+ not_expected)
    gateway_down: list[tuple[float, float]] = field(default_factory=list)
    windows: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # subject → windows


def channel_subject(channel_id: str) -> str:
    return f"channel:{channel_id}"


def windows_for(ch: ChannelInfo, by_subject: dict[str, list[tuple[float, float]]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for subject in (f"channel:{ch.channel_id}", f"device:{ch.device_id}", f"site:{ch.site}", f"link:{ch.link}"):
        out.extend(by_subject.get(subject, ()))
    return out


def build_ledger(
    events: Iterable[Event],
    contract: ContractData,
    period: Period,
    *,
    maintenance: Iterable[MaintenanceDecl] = (),
) -> Ledger:
    """Intervals, per-day and period totals for every channel of `contract` over `period`."""
    by_subject: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        by_subject[ev.subject].append(ev)
    gw = by_subject.get("gateway", [])
    down = gateway_down_periods(gw, start=period.start, end=period.end) if gw else []
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for w in maintenance:
        windows[w.subject].append((w.start, w.end))
    period_ms = to_ms(period.full_end) - to_ms(period.start)
    ledger = Ledger(period, {}, {}, {}, down, dict(windows))
    for ch in contract.channels:
        start = max(period.start, ch.admitted_ts if ch.admitted_ts is not None else period.start)
        end = min(period.end, ch.retired_ts if ch.retired_ts is not None else period.end)
        ivs: list[Interval] = []
        if start < end:
            ivs = build_intervals(
                by_subject.get(channel_subject(ch.channel_id), ()),
                start=start,
                end=end,
                gateway_down=down,
                maintenance=windows_for(ch, windows),
            )
        days = split_days(ivs, period.tz)
        totals = sum_totals(days.values()) if days else empty_totals()
        totals[NOT_EXPECTED] = period_ms - sum(v for k, v in totals.items() if k != NOT_EXPECTED)
        ledger.intervals[ch.channel_id] = ivs
        ledger.days[ch.channel_id] = days
        ledger.totals[ch.channel_id] = totals
    return ledger


def episodes(
    channel_id: str, intervals: list[Interval], *, bridge_gaps: bool = False, ledger_end: float | None = None
) -> list[Episode]:
    """Fault runs of one channel's intervals.

    Without `bridge_gaps` (billing) any non-fault state ends a run, so an unknown or maintenance
    gap can never make a fault cost more. With it (notices), unknown/maintenance gaps between two
    fault runs are bridged so `since` is the real start of the fault.
    """
    out: list[Episode] = []
    run: list[Interval] = []
    pending_gap: list[Interval] = []

    def close() -> None:
        if not run:
            return
        by_state: dict[State, int] = defaultdict(int)
        for iv in run:
            if iv.state in _FAULTS:
                by_state[iv.state] += to_ms(iv.end) - to_ms(iv.start)
        state = max(by_state, key=lambda s: by_state[s])
        end = run[-1].end
        ongoing = ledger_end is not None and to_ms(end) >= to_ms(ledger_end)
        out.append(Episode(channel_id, run[0].start, end, state, run[0].cause, sum(by_state.values()), ongoing))
        run.clear()

    for iv in intervals:
        if iv.state in _FAULTS:
            if run and pending_gap:
                run.extend(pending_gap)
            pending_gap.clear()
            run.append(iv)
        elif bridge_gaps and run and iv.state in (State.unknown, State.maintenance):
            pending_gap.append(iv)
        else:
            pending_gap.clear()
            close()
    close()
    return out


def clip(intervals: list[Interval], start: float, end: float) -> list[Interval]:
    """The parts of `intervals` inside [start, end)."""
    out = []
    for iv in intervals:
        a, b = max(iv.start, start), min(iv.end, end)
        if a < b:
            out.append(Interval(a, b, iv.state, iv.cause))
    return out


@dataclass(slots=True, frozen=True)
class MonthSlice:
    """The part of a period inside one local calendar month; `share` of the month it covers."""

    month: date  # first day
    start: float
    end: float  # clipped to the period's (possibly clipped) end
    month_ms: int
    share_ms: int  # length of the full period's overlap with the month


def month_slices(period: Period) -> list[MonthSlice]:
    from gateway.reports.period import local_ts

    out = []
    m = period.first.replace(day=1)
    while m <= period.last:
        nxt = date(m.year + (m.month == 12), m.month % 12 + 1, 1)
        m0, m1 = local_ts(m, period.tz), local_ts(nxt, period.tz)
        a, b_full = max(m0, period.start), min(m1, period.full_end)
        out.append(MonthSlice(m, a, min(b_full, period.end), to_ms(m1) - to_ms(m0), to_ms(b_full) - to_ms(a)))
        m = nxt
    return out
