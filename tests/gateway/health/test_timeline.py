"""Hand-made timelines with answers worked out here, plus hypothesis invariants."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.health.errors import TimelineError
from gateway.health.timeline import (
    DAY_MS,
    NOT_EXPECTED,
    STATES,
    UTC8,
    Event,
    Interval,
    State,
    availability,
    build_intervals,
    gateway_down_periods,
    intact_rate,
    local_day,
    split_days,
    sum_totals,
)

H = 3_600_000  # one hour in ms
CH = "channel:34020000001320000001"


def L(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, m, d, h, mi, tzinfo=UTC8).timestamp()


_n = 0


def ev(ts: float, state: State, cause: str = "", subject: str = CH, eid: str | None = None) -> Event:
    global _n
    _n += 1
    return Event(eid or f"e{_n}", subject, ts, state, cause, {})


def day_totals(ivs: list[Interval], day: date) -> dict[str, int]:
    return split_days(ivs)[day]


def test_simple_day_online_offline_online() -> None:
    d0, d1 = L(2026, 11, 27), L(2026, 11, 28)
    ivs = build_intervals(
        [
            ev(d0, State.online, "registered"),
            ev(L(2026, 11, 27, 10), State.offline, "keepalive_lost"),
            ev(L(2026, 11, 27, 12, 30), State.online, "registered"),
        ],
        start=d0,
        end=d1,
    )
    assert [(iv.state, iv.cause) for iv in ivs] == [
        (State.online, "registered"),
        (State.offline, "keepalive_lost"),
        (State.online, "registered"),
    ]
    assert ivs[0].start == d0 and ivs[-1].end == d1
    t = day_totals(ivs, date(2026, 11, 27))
    assert t[State.online] == 21 * H + H // 2
    assert t[State.offline] == 2 * H + H // 2
    assert t[NOT_EXPECTED] == 0
    assert availability(t) == round(21.5 / 24, 4) == 0.8958


def test_maintenance_overlays_offline() -> None:
    d0, d1 = L(2026, 11, 27), L(2026, 11, 28)
    ivs = build_intervals(
        [
            ev(d0 - 5, State.online),
            ev(L(2026, 11, 27, 10), State.offline),
            ev(L(2026, 11, 27, 14), State.online),
        ],
        start=d0,
        end=d1,
        maintenance=[(L(2026, 11, 27, 13), L(2026, 11, 27, 15))],
    )
    t = day_totals(ivs, date(2026, 11, 27))
    assert t[State.offline] == 3 * H  # 10:00-13:00
    assert t[State.maintenance] == 2 * H  # 13:00-15:00 hides both the fault and an online hour
    assert t[State.online] == 19 * H
    # 19 / (24 - 2)
    assert availability(t) == 0.8636


def test_overlapping_maintenance_windows_are_merged() -> None:
    d0, d1 = L(2026, 11, 27), L(2026, 11, 28)
    ivs = build_intervals(
        [ev(d0, State.offline)],
        start=d0,
        end=d1,
        maintenance=[
            (L(2026, 11, 27, 1), L(2026, 11, 27, 3)),
            (L(2026, 11, 27, 2), L(2026, 11, 27, 4)),
            (L(2026, 11, 27, 4), L(2026, 11, 27, 5)),
        ],
    )
    t = day_totals(ivs, date(2026, 11, 27))
    assert t[State.maintenance] == 4 * H
    assert t[State.offline] == 20 * H
    assert [iv.state for iv in ivs] == [State.offline, State.maintenance, State.offline]


def test_gateway_outage_in_the_middle_of_a_fault() -> None:
    d0, d1 = L(2026, 11, 27), L(2026, 11, 28)
    ivs = build_intervals(
        [ev(d0, State.online), ev(L(2026, 11, 27, 10), State.offline), ev(L(2026, 11, 27, 13), State.online)],
        start=d0,
        end=d1,
        gateway_down=[(L(2026, 11, 27, 11), L(2026, 11, 27, 12))],
    )
    assert [(iv.state, iv.cause) for iv in ivs][1:4] == [
        (State.offline, ""),
        (State.unknown, "gateway_down"),
        (State.offline, ""),
    ]
    t = day_totals(ivs, date(2026, 11, 27))
    assert t[State.offline] == 2 * H  # 10-11 and 12-13, the gap is not billed
    assert t[State.unknown] == H
    assert t[State.online] == 21 * H
    assert availability(t) == 0.9130  # 21 / 23: the unknown hour leaves the denominator


def test_maintenance_wins_over_gateway_down() -> None:
    d0, d1 = L(2026, 11, 27), L(2026, 11, 28)
    ivs = build_intervals(
        [ev(d0, State.online)],
        start=d0,
        end=d1,
        gateway_down=[(L(2026, 11, 27, 1), L(2026, 11, 27, 3))],
        maintenance=[(L(2026, 11, 27, 2), L(2026, 11, 27, 4))],
    )
    t = day_totals(ivs, date(2026, 11, 27))
    assert (t[State.unknown], t[State.maintenance], t[State.online]) == (H, 2 * H, 21 * H)


def test_local_day_boundary_is_utc_plus_8() -> None:
    # offline 23:00 local on the 27th to 02:00 local on the 28th = 15:00Z to 18:00Z on the 27th (one UTC day)
    start, end = L(2026, 11, 27), L(2026, 11, 29)
    ivs = build_intervals(
        [
            ev(start, State.online),
            ev(L(2026, 11, 27, 23), State.offline),
            ev(L(2026, 11, 28, 2), State.online),
        ],
        start=start,
        end=end,
    )
    days = split_days(ivs)
    assert list(days) == [date(2026, 11, 27), date(2026, 11, 28)]
    assert days[date(2026, 11, 27)][State.offline] == H
    assert days[date(2026, 11, 28)][State.offline] == 2 * H
    utc_days = split_days(ivs, UTC)
    assert utc_days[date(2026, 11, 27)][State.offline] == 3 * H
    assert local_day(L(2026, 11, 28, 0)) == date(2026, 11, 28)
    assert local_day(L(2026, 11, 28, 0) - 0.001) == date(2026, 11, 27)


def test_month_boundary_splits_a_fault() -> None:
    events = [
        ev(L(2026, 10, 1), State.online),
        ev(L(2026, 10, 31, 22), State.offline),
        ev(L(2026, 11, 1, 3), State.online),
    ]
    octo = build_intervals(events, start=L(2026, 10, 1), end=L(2026, 11, 1))
    nov = build_intervals(events, start=L(2026, 11, 1), end=L(2026, 12, 1))
    assert nov[0].state is State.offline and nov[0].start == L(2026, 11, 1)  # state carried in
    t_oct = sum_totals(split_days(octo).values())
    t_nov = sum_totals(split_days(nov).values())
    assert t_oct[State.offline] == 2 * H and t_nov[State.offline] == 3 * H
    assert t_oct[State.online] == 31 * 24 * H - 2 * H
    assert t_nov[State.online] == 30 * 24 * H - 3 * H
    assert len(split_days(nov)) == 30


def test_admitted_mid_day_counts_from_admission() -> None:
    admitted = L(2026, 11, 27, 9)
    ivs = build_intervals([ev(admitted, State.online)], start=admitted, end=L(2026, 11, 28))
    t = day_totals(ivs, date(2026, 11, 27))
    assert t[NOT_EXPECTED] == 9 * H
    assert t[State.online] == 15 * H
    assert sum(t.values()) == DAY_MS
    assert availability(t) == 1.0


def test_clipped_period_end_is_not_expected() -> None:
    ivs = build_intervals([ev(L(2026, 11, 27), State.online)], start=L(2026, 11, 27), end=L(2026, 11, 27, 18))
    t = day_totals(ivs, date(2026, 11, 27))
    assert (t[State.online], t[NOT_EXPECTED]) == (18 * H, 6 * H)


def test_picture_fault_only_while_signalling_is_up() -> None:
    d0 = L(2026, 11, 27)
    ivs = build_intervals(
        [
            ev(d0, State.online),
            ev(d0 + 3600, State.picture_fault, "blur"),
            ev(d0 + 7200, State.offline),
            ev(d0 + 7300, State.no_video, "stale probe"),
            ev(d0 + 10800, State.online, "registered"),
            ev(d0 + 14400, State.no_video, "no stream"),
            ev(d0 + 18000, State.online, "stream ok"),
        ],
        start=d0,
        end=d0 + 21600,
    )
    assert [(iv.state, iv.start - d0, iv.end - d0) for iv in ivs] == [
        (State.online, 0, 3600),
        (State.picture_fault, 3600, 7200),
        (State.offline, 7200, 10800),
        (State.online, 10800, 14400),
        (State.no_video, 14400, 18000),
        (State.online, 18000, 21600),
    ]


def test_initial_state_and_events_before_start() -> None:
    d0 = L(2026, 11, 27)
    ivs = build_intervals([], start=d0, end=d0 + 60)
    assert ivs == [Interval(d0, d0 + 60, State.unknown, "no_evidence")]
    ivs = build_intervals([], start=d0, end=d0 + 60, initial=State.picture_fault)
    assert ivs[0].state is State.picture_fault
    ivs = build_intervals([ev(d0 - 100, State.offline), ev(d0 - 50, State.online)], start=d0, end=d0 + 60)
    assert [iv.state for iv in ivs] == [State.online]
    assert build_intervals([ev(d0, State.online)], start=d0, end=d0) == []


def test_duplicate_event_ids_and_same_instant() -> None:
    d0 = L(2026, 11, 27)
    a = ev(d0 + 10, State.offline, eid="x")
    ivs = build_intervals(
        [ev(d0, State.online), a, a, ev(d0 + 10, State.online, eid="y")], start=d0, end=d0 + 20
    )
    assert [iv.state for iv in ivs] == [State.online]  # same instant: later event wins, merged
    ivs = build_intervals(
        [
            ev(d0, State.online, eid="p"),
            ev(d0 + 5, State.offline, eid="q"),
            ev(d0 + 9, State.online, eid="q"),
        ],
        start=d0,
        end=d0 + 20,
    )
    assert [(iv.state, iv.end - iv.start) for iv in ivs] == [(State.online, 5), (State.offline, 15)]


def test_bad_input() -> None:
    d0 = L(2026, 11, 27)
    with pytest.raises(TimelineError):
        build_intervals([], start=d0 + 1, end=d0)
    with pytest.raises(TimelineError):
        build_intervals(
            [ev(d0, State.online), ev(d0, State.online, subject="channel:x")], start=d0, end=d0 + 1
        )
    with pytest.raises(TimelineError):
        build_intervals([], start=d0, end=d0 + 1, initial=State.maintenance)
    with pytest.raises(TimelineError):
        split_days([Interval(d0, d0 + 1, State.online, "")], ZoneInfo("Asia/Shanghai"))
    with pytest.raises(TimelineError):
        split_days([Interval(d0, d0 + 86400, State.online, ""), Interval(d0, d0 + 1, State.online, "")])
    with pytest.raises(TimelineError):
        build_intervals([ev(float("nan"), State.online)], start=d0, end=d0 + 1)


def test_gateway_down_periods() -> None:
    d0 = L(2026, 11, 27)
    evs = [
        ev(d0 + 10, State.online, subject="gateway"),
        ev(d0 + 100, State.unknown, subject="gateway"),
        ev(d0 + 150, State.online, subject="gateway"),
        ev(d0 + 5, State.offline),
    ]
    assert gateway_down_periods(evs, start=d0, end=d0 + 200) == [(d0, d0 + 10), (d0 + 100, d0 + 150)]


def test_availability_and_intact_rate() -> None:
    all_unknown = {State.unknown: DAY_MS}
    assert availability(all_unknown) is None
    assert availability({State.online: 1, State.offline: 2}) == 0.3333
    assert availability({State.online: 2, State.offline: 1}) == 0.6667
    month = 30 * 24 * H
    good = {State.online: month - 8 * H, State.offline: 8 * H}  # exactly 8 h: still intact
    bad = {State.online: month - 8 * H - 1, State.no_video: 8 * H + 1}
    idle = {State.maintenance: month}
    assert intact_rate([good, bad, idle]) == 0.5
    assert intact_rate([good, bad], min_availability=0.99) == 0.0
    assert intact_rate([idle]) is None


# ---------------------------------------------------------------- hypothesis invariants

BASE = L(2026, 11, 1)
SPAN = 5 * 86400.0
times = st.floats(min_value=-86400, max_value=SPAN + 86400, allow_nan=False).map(lambda x: BASE + round(x, 3))
windows = st.lists(st.tuples(times, times).map(lambda p: (min(p), max(p))), max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    evs=st.lists(st.tuples(times, st.sampled_from(list(State))), max_size=30),
    down=windows,
    maint=windows,
    bounds=st.tuples(times, times),
    initial=st.sampled_from([s for s in State if s is not State.maintenance]),
)
def test_invariants(evs, down, maint, bounds, initial) -> None:  # type: ignore[no-untyped-def]
    start, end = min(bounds), max(bounds)
    events = [Event(f"h{i}", CH, ts, s, "", {}) for i, (ts, s) in enumerate(evs)]
    ivs = build_intervals(events, start=start, end=end, initial=initial, gateway_down=down, maintenance=maint)
    if round(start * 1000) == round(end * 1000):
        assert ivs == []
        return
    assert ivs[0].start == round(start * 1000) / 1000 and ivs[-1].end == round(end * 1000) / 1000
    for a, b in itertools.pairwise(ivs):
        assert a.end == b.start and a.start < a.end
        assert (a.state, a.cause) != (b.state, b.cause)
    days = split_days(ivs)
    for totals in days.values():
        assert sum(totals.values()) == DAY_MS
        assert all(v >= 0 for v in totals.values())
        avail = availability(totals)
        assert avail is None or 0.0 <= avail <= 1.0
    total = sum_totals(days.values())
    assert sum(total[s] for s in STATES) == round(end * 1000) - round(start * 1000)
    # every millisecond inside a declared window is maintenance, and only those
    spans: list[tuple[int, int]] = []
    for a, b in sorted((round(a * 1000), round(b * 1000)) for a, b in maint):
        a, b = max(a, round(start * 1000)), min(b, round(end * 1000))
        if a >= b:
            continue
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(b, spans[-1][1]))
        else:
            spans.append((a, b))
    in_maint = sum(b - a for a, b in spans)
    assert total[State.maintenance] == in_maint
