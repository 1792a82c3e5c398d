"""Security alarm de-duplication (issue 10 #7), with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whitelist.alarms import OVERFLOW_SOURCE, AlarmDeduper

DEV = "34020000001320000001"


def test_a_flood_is_one_alarm_with_a_count() -> None:
    d = AlarmDeduper(quiet=60, max_open=3600)
    hits = [d.hit(DEV, "alarm_binding_mismatch", "192.0.2.9", i * 0.0005) for i in range(100)]
    assert [h.new for h in hits].count(True) == 1
    changed = d.changed()
    assert len(changed) == 1 and changed[0].count == 100
    assert d.changed() == []  # written once until it moves again


def test_kind_and_source_separate_alarms() -> None:
    d = AlarmDeduper()
    assert d.hit(DEV, "alarm_binding_mismatch", "192.0.2.9", 0.0).new
    assert d.hit(DEV, "alarm_binding_mismatch", "192.0.2.10", 0.0).new
    assert d.hit(DEV, "alarm_lockout", "192.0.2.9", 0.0).new
    assert not d.hit(DEV, "alarm_lockout", "192.0.2.9", 1.0).new


def test_quiet_alarm_closes_and_reopens() -> None:
    """By hand: quiet 60 → hits at 0 and 59 share an alarm; the next at 119 (60 s after 59) opens a new one."""
    d = AlarmDeduper(quiet=60, max_open=3600)
    assert d.hit(DEV, "k", "s", 0.0).new
    assert not d.hit(DEV, "k", "s", 59.0).new
    assert d.hit(DEV, "k", "s", 119.0).new
    assert len(d.expire(179.0)) == 1 and len(d) == 0


def test_long_flood_opens_a_new_record_every_max_open() -> None:
    d = AlarmDeduper(quiet=60, max_open=100)
    news = [d.hit(DEV, "k", "s", float(t)).new for t in range(0, 250, 10)]
    assert [i * 10 for i, n in enumerate(news) if n] == [0, 100, 200]


def test_spoofed_sources_share_one_overflow_alarm() -> None:
    d = AlarmDeduper(max_keys=10)
    news = [d.hit(DEV, "k", f"10.0.0.{i}", 0.0) for i in range(50)]
    assert sum(h.new for h in news) == 11  # ten real sources, then one "*"
    assert len(d) == 11 and news[-1].alarm.source == OVERFLOW_SOURCE and news[-1].alarm.count == 40


def test_bad_config() -> None:
    with pytest.raises(ValueError):
        AlarmDeduper(quiet=0)


@given(st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from("xyz"), st.floats(0, 5)), max_size=80))
def test_counts_add_up(hits: list[tuple[str, str, float]]) -> None:
    d = AlarmDeduper(quiet=1e9, max_open=1e9)
    last = {}
    for kind, source, dt in hits:
        last[(kind, source)] = d.hit(DEV, kind, source, dt).alarm
    assert sum(a.count for a in last.values()) == len(hits)  # every hit counted exactly once
    assert len(d) == len(last)
