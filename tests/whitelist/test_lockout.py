"""Lockout (K failures in T → locked for lock_for) and per-source flood control, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whitelist.decide import Reason
from whitelist.lockout import FloodGuard, Lockout

DEV, DEV2 = "34020000001320000001", "34020000001320000002"


def test_k_failures_within_window_lock_id_then_expire() -> None:
    lock = Lockout(max_failures=5, window=60, lock_for=900)
    for i in range(4):
        assert lock.record_failure(DEV, f"10.0.0.{i}", float(i)) is None
    assert lock.is_locked(DEV, "10.0.0.9", 4.0) is None
    assert lock.record_failure(DEV, "10.0.0.4", 10.0) is Reason.LOCKED_ID
    assert lock.is_locked(DEV, "10.0.0.9", 10.0) is Reason.LOCKED_ID
    lock.record_success(DEV, "10.0.0.9", 11.0)                  # the right password does not unlock
    assert lock.is_locked(DEV, "10.0.0.9", 909.99) is Reason.LOCKED_ID
    assert lock.is_locked(DEV, "10.0.0.9", 910.0) is None       # lock_for after the locking failure
    assert lock.record_failure(DEV, "10.0.0.1", 911.0) is None  # counting starts afresh


def test_failures_spread_beyond_window_do_not_lock() -> None:
    lock = Lockout(max_failures=3, window=60, lock_for=900)
    for t in (0.0, 40.0, 80.0, 120.0, 160.0):      # never 3 within 60 s
        assert lock.record_failure(DEV, "10.0.0.1", t) is None
    assert lock.is_locked(DEV, "10.0.0.1", 161.0) is None
    assert lock.record_failure(DEV, "10.0.0.1", 170.0) is Reason.LOCKED_ID   # 120, 160, 170


def test_source_counter_is_separate() -> None:
    lock = Lockout(max_failures=3, window=60, lock_for=100)
    for i in range(2):
        lock.record_failure(f"3402000000132000000{i}", "192.0.2.1", float(i))
    assert lock.record_failure("34020000001320000009", "192.0.2.1", 2.0) is Reason.LOCKED_SOURCE
    assert lock.is_locked(DEV, "192.0.2.1", 3.0) is Reason.LOCKED_SOURCE     # any ID from that source
    assert lock.is_locked(DEV, "192.0.2.2", 3.0) is None                     # other sources fine
    assert lock.is_locked(DEV, "192.0.2.1", 102.0) is None


def test_success_clears_id_failures_not_source_failures() -> None:
    lock = Lockout(max_failures=3, window=60, lock_for=100, source_distinct_ids=3)
    lock.record_failure(DEV, "192.0.2.1", 0.0)
    lock.record_failure(DEV2, "192.0.2.1", 1.0)
    lock.record_success(DEV, "192.0.2.1", 2.0)
    assert lock.record_failure(DEV, "192.0.2.2", 3.0) is None             # ID count restarted
    # the source kept its failures of two IDs: a third ID from it locks it
    assert lock.record_failure("34020000001320000003", "192.0.2.1", 4.0) is Reason.LOCKED_SOURCE


def test_one_bad_camera_behind_nat_does_not_lock_its_neighbours() -> None:
    """Issue 10 #15: 5 wrong passwords from one camera lock that ID only, not the site's address.
    By hand: max_failures 5 → DEV locked at the 5th; the source saw 5 failures of 1 ID, under both
    source_distinct_ids (3) and source_max_failures (10 × 5 = 50)."""
    lock = Lockout(max_failures=5, window=60, lock_for=900)
    for i in range(5):
        lock.record_failure(DEV, "198.51.100.7", float(i))
    assert lock.is_locked(DEV, "198.51.100.7", 5.0) is Reason.LOCKED_ID
    assert lock.is_locked(DEV2, "198.51.100.7", 5.0) is None


def test_source_locks_at_the_higher_count_even_for_one_id() -> None:
    lock = Lockout(max_failures=5, window=60, lock_for=900, source_max_failures=8)
    reasons = [lock.record_failure(f"3402000000132000{i % 1:04d}", "198.51.100.7", i * 0.1) for i in range(8)]
    assert reasons[-1] is Reason.LOCKED_SOURCE and Reason.LOCKED_SOURCE not in reasons[:-1]


def test_source_lock_never_blocks_an_approved_id_whose_binding_matches() -> None:
    lock = Lockout(max_failures=5, window=60, lock_for=900, source_distinct_ids=2)
    lock.record_failure("34020000001320000101", "198.51.100.7", 0.0)
    assert lock.record_failure("34020000001320000102", "198.51.100.7", 1.0) is Reason.LOCKED_SOURCE
    assert lock.is_locked(DEV, "198.51.100.7", 2.0) is Reason.LOCKED_SOURCE
    assert lock.is_locked(DEV, "198.51.100.7", 2.0, binding_matches=True) is None
    for i in range(5):
        lock.record_failure(DEV, "198.51.100.7", 3.0 + i)
    assert lock.is_locked(DEV, "198.51.100.7", 9.0, binding_matches=True) is Reason.LOCKED_ID  # own lock holds


@given(st.lists(st.floats(min_value=0, max_value=10_000, allow_nan=False), min_size=1, max_size=40))
def test_lock_iff_k_failures_in_some_window(times: list[float]) -> None:
    times = sorted(times)
    lock = Lockout(max_failures=3, window=60, lock_for=1e9)
    locked_at = None
    for t in times:
        if lock.record_failure(DEV, "x", t) is Reason.LOCKED_ID:
            locked_at = t
            break
    expected = next((times[i] for i in range(2, len(times)) if times[i - 2] > times[i] - 60), None)
    assert locked_at == expected


def test_lockout_memory_bounded() -> None:
    lock = Lockout(max_failures=2, window=60, lock_for=900, max_keys=100)
    for i in range(10_000):
        lock.record_failure(f"{i:020d}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", float(i) / 100)
    assert lock.tracked_keys() <= 400


def test_lockout_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        Lockout(max_failures=0)
    with pytest.raises(ValueError):
        Lockout(source_distinct_ids=1)


def test_flood_guard_bucket_and_ban() -> None:
    fg = FloodGuard(max_per_second=10, ban_for=60)
    assert all(fg.allow("a", 0.0) for _ in range(10))
    assert fg.allow("a", 0.0) is False                    # 11th in the same instant
    assert fg.is_banned("a", 59.9) and fg.allow("a", 59.9) is False
    assert fg.allow("b", 0.0)                             # other sources unaffected
    assert fg.allow("a", 60.0) is True                    # ban over, bucket refilled


def test_flood_guard_steady_rate_is_fine() -> None:
    fg = FloodGuard(max_per_second=50, ban_for=60)
    assert all(fg.allow("a", i * 0.025) for i in range(2000))    # 40/s for 50 s


def test_flood_guard_memory_bounded() -> None:
    fg = FloodGuard(max_per_second=5, max_keys=1000)
    for i in range(50_000):
        fg.allow(f"src{i}", i * 0.001)
    assert len(fg) <= 1000
