"""From raw ledger events to per-channel intervals and totals for one report period (pure).

Channel timelines use the `channel:<id>` events the recorder writes (it turns a device's
keepalive loss into transitions of that device's channels). `events` must hold each subject's
history up to the period as `service.load_events` gives it (its last signalling and media events
before the period): the state at the period's start is what the full history implies. A
contracted channel with no event at all before its expected start has never registered: it is
`offline` (cause `never_registered`) from its contract start until it is first heard from.
Maintenance windows apply to a channel when declared for the channel, its device, its site or its
link. Gateway down periods come from the `gateway` subject; if the ledger holds no gateway
events at all, none are assumed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, tzinfo
from typing import NamedTuple

from gateway.health.timeline import (
    CAUSE_NO_EVIDENCE,
    FAULT_STATES,
    NOT_EXPECTED,
    Event,
    Interval,
    State,
    build_intervals,
    gateway_down_periods,
    split_days,
    to_ms,
    totals_of,
)
from gateway.reports.model import ChannelInfo, ContractData
from gateway.reports.period import Period

_FAULTS = frozenset(FAULT_STATES)
_ONLINE = State.online
#: cause of the offline time of a contracted channel nobody has ever heard from (issue 11.2)
CAUSE_NEVER_REGISTERED = "never_registered"


@dataclass(slots=True, frozen=True)
class MaintenanceDecl:
    """A declared window: subject is channel:<id>, device:<id>, site:<id> or link:<id>."""

    subject: str
    start: float
    end: float
    reason: str = ""


class Episode(NamedTuple):
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


class LazyDays(dict[str, dict[date, dict[str, int]]]):
    """channel_id → per-day totals, split on first access (monthly reports never need it)."""

    def __init__(self, intervals: dict[str, list[Interval]], tz: tzinfo) -> None:
        super().__init__()
        self._intervals, self._tz = intervals, tz

    def __missing__(self, channel_id: str) -> dict[date, dict[str, int]]:
        days = split_days(self._intervals[channel_id], self._tz)
        self[channel_id] = days
        return days


@dataclass(slots=True)
class Ledger:
    period: Period
    intervals: dict[str, list[Interval]]  # channel_id → its intervals (expected time only)
    days: LazyDays
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
    intervals: dict[str, list[Interval]] = {}
    ledger = Ledger(period, intervals, LazyDays(intervals, period.tz), {}, down, dict(windows))
    for ch in contract.channels:
        start = max(period.start, ch.admitted_ts if ch.admitted_ts is not None else period.start)
        end = min(period.end, ch.retired_ts if ch.retired_ts is not None else period.end)
        ivs: list[Interval] = []
        if start < end:
            evs = by_subject.get(channel_subject(ch.channel_id), ())
            initial, initial_cause = State.unknown, CAUSE_NO_EVIDENCE
            if ch.contracted and not any(ev.ts < start for ev in evs):
                initial, initial_cause = State.offline, CAUSE_NEVER_REGISTERED
            ivs = build_intervals(
                evs,
                start=start,
                end=end,
                initial=initial,
                initial_cause=initial_cause,
                gateway_down=down,
                maintenance=windows_for(ch, windows),
            )
        totals = totals_of(ivs)
        totals[NOT_EXPECTED] = period_ms - sum(v for k, v in totals.items() if k != NOT_EXPECTED)
        intervals[ch.channel_id] = ivs
        ledger.totals[ch.channel_id] = totals
    return ledger


#: online causes that are a (re-)registration, not evidence that the picture came back
REREGISTRATION_CAUSES = frozenset({"registered", "keepalive_resumed"})
#: re-registrations this short inside a fault continue it (notices; billing takes the policy's)
REREGISTRATION_BRIDGE_MS = 30 * 60_000


def _bridged(iv: Interval, gaps: bool, unknown: bool, rereg_ms: int) -> bool:
    """Whether this non-fault interval continues the fault run around it (see `episodes`)."""
    if iv.state is State.unknown:
        return gaps or unknown
    if iv.state is State.maintenance:
        return gaps
    return (
        iv.state is State.online
        and iv.cause in REREGISTRATION_CAUSES
        and round(iv.end * 1000) - round(iv.start * 1000) <= rereg_ms
    )


def episodes(
    channel_id: str,
    intervals: list[Interval],
    *,
    bridge_gaps: bool = False,
    bridge_unknown: bool = False,
    bridge_reregistration_ms: int = 0,
    ledger_end: float | None = None,
) -> list[Episode]:
    """Fault runs of one channel's intervals.

    A run continues across (issue 11.8) an `unknown` gap when `bridge_unknown` (billing: the
    gateway not seeing a fault does not end it) and across an `online` stretch caused by a
    re-registration no longer than `bridge_reregistration_ms` (a device re-registering inside a
    fault is presumed good only until the probe looks again). Bridged time is never fault time:
    `fault_ms` counts the fault intervals only, so one grace applies to the whole episode and the
    gap itself is not billed. `bridge_gaps` (notices) also bridges maintenance, so `since` is the
    real start of the fault. Any other non-fault state ends a run.
    """
    out: list[Episode] = []
    run_start = run_end = 0.0
    run_cause = ""
    run_ms: dict[State, int] = {}
    in_run = False

    def close() -> None:
        state = max(run_ms, key=run_ms.__getitem__)
        ongoing = ledger_end is not None and round(run_end * 1000) >= round(ledger_end * 1000)
        out.append(Episode(channel_id, run_start, run_end, state, run_cause, sum(run_ms.values()), ongoing))

    for iv in intervals:
        state = iv.state
        if state in _FAULTS:
            ms = round(iv.end * 1000) - round(iv.start * 1000)
            if not in_run:
                in_run, run_start, run_cause, run_ms = True, iv.start, iv.cause, {state: ms}
            else:
                run_ms[state] = run_ms.get(state, 0) + ms
            run_end = iv.end
        elif not in_run:
            continue
        elif state is _ONLINE:  # the common case first: most runs end in a plain recovery
            if not (
                bridge_reregistration_ms
                and iv.cause in REREGISTRATION_CAUSES
                and round(iv.end * 1000) - round(iv.start * 1000) <= bridge_reregistration_ms
            ):
                close()
                in_run = False
        elif not _bridged(iv, bridge_gaps, bridge_unknown, bridge_reregistration_ms):
            close()
            in_run = False
    if in_run:
        close()
    return out


def clip(intervals: list[Interval], start: float, end: float) -> list[Interval]:
    """The parts of `intervals` inside [start, end)."""
    if not intervals or (intervals[0].start >= start and intervals[-1].end <= end):
        return intervals
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
