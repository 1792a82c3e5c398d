"""Pure interval arithmetic for the health ledger (issue 5, "the ledger").

No I/O and no clock: every function takes timestamps (unix seconds, float) and returns values.
Internally all times are **integer milliseconds** so that per-day sums are exact: a channel-day
always adds up to exactly 86,400,000 ms (86,400 s), which floats cannot promise.

How the state of one subject is derived (`build_intervals`):

* Two layers are kept. *Signalling* is `online`, `offline` or `unknown` (from REGISTER/keepalive
  events, or `unknown` when there is no evidence). *Media* is `no_video` or `picture_fault`
  (from stream and probe events). Media faults count only while signalling is `online`: a stale
  probe result arriving after the keepalive was lost does not turn `offline` into `picture_fault`.
  When nothing at all is known before a media event (no signalling event supplied), the media
  event is itself the evidence: the subject was answering, so the media fault holds.
  An `online`, `offline` or `unknown` event clears the media layer (after a reconnection the
  picture is presumed good until the probe says otherwise, which takes repeat × probe interval).
* Gateway down periods (`gateway_down`) overlay the subject as `unknown`: nobody can bill time the
  gateway itself could not observe (issue 5: "never billed to the owner or vendor").
* Declared maintenance windows (`maintenance`) overlay everything else, including `unknown`.
  `maintenance` *events* in the journal are records of the declaration only and are ignored here;
  the windows passed in are the source of truth.

Expected time: a channel's expected time starts when it was first admitted (contract.md), so the
caller starts `build_intervals` at max(period start, admission). `split_days` puts whatever part of
a local day is not covered by intervals (before admission, after a clipped period end) into the
`not_expected` bucket, so every day still totals 86,400 s and the identity
``sum(states) + not_expected == 86,400 s`` holds for every channel-day.

Local days are a *fixed* UTC offset (China has had no daylight saving since 1991); a zone whose
offset depends on the date is refused rather than silently mis-split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, NamedTuple

from gateway.health.errors import TimelineError

DAY_MS = 86_400_000
UTC8 = timezone(timedelta(hours=8), "UTC+08:00")
NOT_EXPECTED = "not_expected"
_EPOCH = date(1970, 1, 1)


class State(StrEnum):
    """What a subject was doing; the values are stable strings stored in the journal and database."""

    online = "online"
    offline = "offline"
    no_video = "no_video"
    picture_fault = "picture_fault"
    maintenance = "maintenance"
    unknown = "unknown"


#: Column order used by every report.
STATES: tuple[State, ...] = tuple(State)
_SIGNALLING = frozenset({State.online, State.offline, State.unknown})
_MEDIA = frozenset({State.no_video, State.picture_fault})
#: States that count as the subject's fault (billable downtime).
FAULT_STATES: tuple[State, ...] = (State.offline, State.no_video, State.picture_fault)

CAUSE_GATEWAY_DOWN = "gateway_down"
CAUSE_MAINTENANCE = "maintenance_window"
CAUSE_NO_EVIDENCE = "no_evidence"


@dataclass(slots=True, frozen=True)
class Event:
    """One state transition of one subject, with the evidence that justified it.

    `subject` is "channel:<20 digits>", "device:<20 digits>", "link:<id>", "site:<id>" or "gateway".
    `event_id` makes appends idempotent: the same transition recorded twice counts once.
    """

    event_id: str
    subject: str
    ts: float
    state: State
    cause: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


class Interval(NamedTuple):
    """[start, end) in unix seconds (millisecond-exact) during which `state` held for `cause`.

    A NamedTuple rather than a frozen dataclass: a monthly report builds hundreds of thousands
    of these, and a frozen dataclass's `__init__` costs several times more per instance.
    """

    start: float
    end: float
    state: State
    cause: str

    @property
    def duration(self) -> float:
        return (to_ms(self.end) - to_ms(self.start)) / 1000


def to_ms(ts: float) -> int:
    """Unix seconds to integer milliseconds (the quantum of the ledger)."""
    try:
        return round(ts * 1000)
    except (ValueError, OverflowError):  # NaN, ±inf
        raise TimelineError(f"timestamp is not finite: {ts!r}") from None


Window = tuple[float, float]
_Seg = tuple[int, int, State, str]


def _windows_ms(windows: Iterable[Window], s: int, e: int) -> list[tuple[int, int]]:
    """Clip to [s, e), drop empties, sort and merge overlapping or touching windows."""
    clipped = []
    for a, b in windows:
        a_ms, b_ms = max(to_ms(a), s), min(to_ms(b), e)
        if a_ms < b_ms:
            clipped.append((a_ms, b_ms))
    clipped.sort()
    merged: list[tuple[int, int]] = []
    for a_ms, b_ms in clipped:
        if merged and a_ms <= merged[-1][1]:
            if b_ms > merged[-1][1]:
                merged[-1] = (merged[-1][0], b_ms)
        else:
            merged.append((a_ms, b_ms))
    return merged


def _merge(segs: Sequence[_Seg]) -> list[_Seg]:
    out: list[_Seg] = []
    for seg in segs:
        if seg[0] >= seg[1]:
            continue
        if out and out[-1][2] == seg[2] and out[-1][3] == seg[3] and out[-1][1] == seg[0]:
            out[-1] = (out[-1][0], seg[1], seg[2], seg[3])
        else:
            out.append(seg)
    return out


def _paint(segs: list[_Seg], windows: list[tuple[int, int]], state: State, cause: str) -> list[_Seg]:
    """Overlay `state` on every part of `segs` inside a window (windows sorted and disjoint)."""
    if not windows:
        return segs
    out: list[_Seg] = []
    wi, nw = 0, len(windows)
    for a, b, st, c in segs:
        pos = a
        while pos < b:
            while wi < nw and windows[wi][1] <= pos:
                wi += 1
            if wi == nw or windows[wi][0] >= b:
                out.append((pos, b, st, c))
                break
            wa, wb = windows[wi]
            if wa > pos:
                out.append((pos, wa, st, c))
                pos = wa
            stop = min(wb, b)
            out.append((pos, stop, state, cause))
            pos = stop
    return _merge(out)


class _Layers:
    """Initial signalling + media layers of one subject (see module docstring); the rules for
    events are inlined in `build_intervals`."""

    __slots__ = ("media", "media_cause", "sig", "sig_cause")

    def __init__(self, initial: State, cause: str) -> None:
        if initial is State.maintenance:
            raise TimelineError("maintenance comes from declared windows, not an initial state")
        self.media: State | None = None
        self.media_cause = ""
        if initial in _MEDIA:
            self.sig, self.sig_cause = State.online, cause
            self.media, self.media_cause = initial, cause
        else:
            self.sig, self.sig_cause = initial, cause

    def effective(self) -> tuple[State, str]:
        if self.media is not None:
            return self.media, self.media_cause
        return self.sig, self.sig_cause


def build_intervals(
    events: Iterable[Event],
    *,
    start: float,
    end: float,
    initial: State = State.unknown,
    initial_cause: str = CAUSE_NO_EVIDENCE,
    gateway_down: Iterable[Window] = (),
    maintenance: Iterable[Window] = (),
) -> list[Interval]:
    """The subject's timeline over [start, end): contiguous, non-overlapping, exactly covering it.

    `events` are one subject's transitions in any order (ties keep input order, i.e. journal
    order; a repeated event_id counts once). Events before `start` set the state at `start`;
    `initial` (for `initial_cause`) is the state before the first event. Adjacent pieces with the same state and cause
    are merged.
    """
    s, e = to_ms(start), to_ms(end)
    if e < s:
        raise TimelineError(f"period ends before it starts: {start} > {end}")
    if e == s:
        return []
    evs = sorted(events, key=lambda ev: ev.ts)
    for ev in evs[:1] + evs[-1:]:
        to_ms(ev.ts)  # NaN sorts anywhere, so check every one below; ±inf sort to the ends
    if any(ev.ts != ev.ts for ev in evs):
        raise TimelineError("event timestamp is NaN")
    subjects = {ev.subject for ev in evs}
    if len(subjects) > 1:
        raise TimelineError(f"events of several subjects given to one timeline: {sorted(subjects)[:3]}")
    layers = _Layers(initial, initial_cause)
    sig, sig_cause, media, media_cause = layers.sig, layers.sig_cause, layers.media, layers.media_cause
    cur_state, cur_cause = layers.effective()
    points: list[tuple[int, State, str]] = [(s, cur_state, cur_cause)]
    seen: set[str] = set()
    online = State.online
    # the _Layers rules, inlined: this loop runs once per event of a monthly report
    for ev in evs:
        eid = ev.event_id
        if eid in seen:
            continue
        seen.add(eid)
        t = round(ev.ts * 1000)
        if t >= e:
            break
        state = ev.state if type(ev.state) is State else State(ev.state)
        if state in _SIGNALLING:
            sig, sig_cause, media = state, ev.cause, None
        elif state in _MEDIA:
            if sig is online:
                media, media_cause = state, ev.cause
            elif sig is State.unknown and sig_cause == CAUSE_NO_EVIDENCE:
                # nothing known before it: a stream or probe result is itself evidence that the
                # channel answered (issue 11.3: a no_video carried over midnight is not unknown)
                sig, sig_cause = online, ev.cause
                media, media_cause = state, ev.cause
        else:
            continue  # maintenance records: windows are authoritative
        if media is not None:
            st, cause = media, media_cause
        else:
            st, cause = sig, sig_cause
        if t < s:
            t = s
        last = points[-1]
        if last[0] == t:
            points[-1] = (t, st, cause)  # a later event at the same instant wins
        elif st is not last[1] or cause != last[2]:
            points.append((t, st, cause))
    segs: list[_Seg] = [
        (t, points[i + 1][0] if i + 1 < len(points) else e, st, c) for i, (t, st, c) in enumerate(points)
    ]
    segs = _merge(segs)
    segs = _paint(segs, _windows_ms(gateway_down, s, e), State.unknown, CAUSE_GATEWAY_DOWN)
    segs = _paint(segs, _windows_ms(maintenance, s, e), State.maintenance, CAUSE_MAINTENANCE)
    return [Interval(a / 1000, b / 1000, st, c) for a, b, st, c in segs]


def gateway_down_periods(
    events: Iterable[Event], *, start: float, end: float, initial: State = State.unknown
) -> list[Window]:
    """Periods within [start, end) when the `gateway` subject was not `online` (down or unknown)."""
    gw = [ev for ev in events if ev.subject == "gateway"]
    ivs = build_intervals(gw, start=start, end=end, initial=initial)
    return [(iv.start, iv.end) for iv in ivs if iv.state is not State.online]


def _offset_ms(tz: tzinfo) -> int:
    off = tz.utcoffset(None)
    if off is None:
        raise TimelineError(f"timezone {tz!r} has no fixed offset; use datetime.timezone(timedelta(...))")
    return int(off.total_seconds() * 1000)


def empty_totals() -> dict[str, int]:
    """Zeroed buckets: every State plus `not_expected`, in milliseconds."""
    totals: dict[str, int] = dict.fromkeys(STATES, 0)
    totals[NOT_EXPECTED] = 0
    return totals


def local_day(ts: float, tz: tzinfo = UTC8) -> date:
    """The local calendar day containing `ts`."""
    return _EPOCH + timedelta(days=(to_ms(ts) + _offset_ms(tz)) // DAY_MS)


def split_days(intervals: Iterable[Interval], tz: tzinfo = UTC8) -> dict[date, dict[str, int]]:
    """Milliseconds per state per local day, for every day the intervals touch.

    Each day's buckets (every State plus `not_expected`) sum to exactly DAY_MS; the time of the
    day not covered by any interval is `not_expected` (before admission, after the period end).
    Raises TimelineError if intervals overlap (a day would exceed 24 h).
    """
    off = _offset_ms(tz)
    days: dict[int, dict[str, int]] = {}
    for iv in intervals:
        a, b = to_ms(iv.start), to_ms(iv.end)
        state = iv.state
        while a < b:
            day = (a + off) // DAY_MS
            stop = min(b, (day + 1) * DAY_MS - off)
            buckets = days.get(day)
            if buckets is None:
                buckets = days[day] = empty_totals()
            buckets[state] += stop - a
            a = stop
    out: dict[date, dict[str, int]] = {}
    for day in sorted(days):
        buckets = days[day]
        covered = sum(buckets[st] for st in STATES)
        if covered > DAY_MS:
            raise TimelineError(f"intervals overlap on {_EPOCH + timedelta(days=day)}")
        buckets[NOT_EXPECTED] = DAY_MS - covered
        out[_EPOCH + timedelta(days=day)] = buckets
    return out


def totals_of(intervals: Iterable[Interval]) -> dict[str, int]:
    """Milliseconds per state over the intervals (no day split; `not_expected` left at 0)."""
    totals = empty_totals()
    for iv in intervals:
        totals[iv.state] += round(iv.end * 1000) - round(iv.start * 1000)
    return totals


def sum_totals(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Bucket-wise sum of several totals (days of a month, channels of a site)."""
    total = empty_totals()
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def expected_ms(totals: Mapping[str, int]) -> int:
    """Expected time: every state's time (not the `not_expected` bucket)."""
    return sum(totals.get(st, 0) for st in STATES)


def fault_ms(totals: Mapping[str, int]) -> int:
    """Billable downtime: offline + no_video + picture_fault (never maintenance or unknown)."""
    return sum(totals.get(st, 0) for st in FAULT_STATES)


def round4(value: Fraction) -> float:
    """Round half up to 4 decimals (the way a person checking the sheet by hand would)."""
    q = Decimal(value.numerator) / Decimal(value.denominator)
    return float(q.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def availability(totals: Mapping[str, int]) -> float | None:
    """online / (expected − maintenance − unknown), 4 decimals; None when nothing is billable.

    Maintenance and unknown time is removed from the denominator, so neither helps nor hurts.
    """
    denom = expected_ms(totals) - totals.get(State.maintenance, 0) - totals.get(State.unknown, 0)
    if denom <= 0:
        return None
    return round4(Fraction(totals.get(State.online, 0), denom))


def intact_rate(
    channel_totals: Iterable[Mapping[str, int]],
    *,
    max_fault_s: float | None = None,
    min_availability: float | None = None,
) -> float | None:
    """完好率: share of channels that were "intact" over the period, 4 decimals.

    Default definition (the contract's): a channel is failed when its billable fault time
    (offline + no_video + picture_fault) exceeds `max_fault_s` (8 h, "more than 8 fault hours in a
    month counts as one failed channel"). Alternatively pass `min_availability` to count a channel
    intact when its availability is at least that. Channels with no billable time are left out;
    None when no channel is left.
    """
    if max_fault_s is not None and min_availability is not None:
        raise TimelineError("give max_fault_s or min_availability, not both")
    limit_ms = to_ms(8 * 3600 if max_fault_s is None else max_fault_s)
    counted = intact = 0
    for totals in channel_totals:
        avail = availability(totals)
        if avail is None:
            continue
        counted += 1
        if min_availability is not None:
            intact += avail >= min_availability
        else:
            intact += fault_ms(totals) <= limit_ms
    if counted == 0:
        return None
    return round4(Fraction(intact, counted))
