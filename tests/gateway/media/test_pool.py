"""Port/SSRC pool: even ports, no leaks under concurrent allocate/release, idempotent release."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.gb.ssrc import ssrc_to_int
from gateway.media.errors import MediaError
from gateway.media.pool import PoolExhausted, PoolSet, PortPool

DOMAIN = "3402000000"


def test_even_ports_in_range_and_unique_ssrcs() -> None:
    pool = PortPool(30001, 30010, DOMAIN)
    leases = [pool.allocate() for _ in range(pool.capacity)]
    assert sorted(lease.port for lease in leases) == [30002, 30004, 30006, 30008, 30010]
    assert len({lease.ssrc for lease in leases}) == 5
    assert all(lease.ssrc.startswith("0" + DOMAIN[3:8]) for lease in leases)
    assert leases[0].ssrc_int == ssrc_to_int(leases[0].ssrc)
    with pytest.raises(PoolExhausted):
        pool.allocate()
    assert pool.exhausted == 1
    assert isinstance(PoolExhausted("x"), MediaError)


def test_release_is_idempotent_and_context_manager_releases() -> None:
    pool = PortPool(30000, 30003, DOMAIN)
    with pool.allocate() as lease:
        assert pool.in_use == 1
    assert lease.released and pool.in_use == 0
    lease.release()
    lease.release()
    assert pool.free == 2 and pool.released == 1
    with pytest.raises(RuntimeError), pool.allocate():
        raise RuntimeError("boom")
    assert pool.in_use == 0 and pool.free == 2


def test_round_robin_does_not_reuse_a_just_released_port() -> None:
    pool = PortPool(30000, 30009, DOMAIN)
    a = pool.allocate()
    a.release()
    b = pool.allocate()
    assert b.port != a.port and b.ssrc != a.ssrc


def test_quarantine_keeps_a_busy_port_out_until_it_expires() -> None:
    now = [0.0]
    pool = PortPool(30000, 30003, DOMAIN, clock=lambda: now[0], quarantine_s=5)
    a = pool.allocate()
    pool.quarantine(a)
    assert a.released and pool.in_use == 0
    b = pool.allocate()
    assert b.port != a.port
    with pytest.raises(PoolExhausted):
        pool.allocate()
    now[0] = 6.0
    c = pool.allocate()
    assert c.port == a.port


def test_ssrc_reserve_for_a_given_value() -> None:
    pool = PortPool(30000, 30009, DOMAIN)
    lease = pool.allocate(ssrc="0200000042")
    assert lease.ssrc == "0200000042"
    with pytest.raises(PoolExhausted):
        pool.allocate(ssrc="0200000042")
    lease.release()
    assert pool.allocate(ssrc="0200000042").ssrc == "0200000042"


async def test_no_leak_under_concurrent_allocate_release() -> None:
    pool = PortPool(30000, 30063, DOMAIN)  # 32 ports, 200 workers: exhaustion happens
    rng = random.Random(7)
    held: set[int] = set()
    errors = 0

    async def worker(i: int) -> None:
        nonlocal errors
        for _ in range(20):
            try:
                lease = pool.allocate()
            except PoolExhausted:
                errors += 1
                await asyncio.sleep(0)
                continue
            assert lease.port not in held, "a port was handed out twice"
            held.add(lease.port)
            try:
                await asyncio.sleep(rng.random() * 0.002)
                if rng.random() < 0.2:
                    raise ValueError("session failed")
            except ValueError:
                pass
            finally:
                held.discard(lease.port)
                lease.release()
                if rng.random() < 0.3:
                    lease.release()  # double release: no-op

    await asyncio.gather(*(worker(i) for i in range(200)))
    assert errors > 0
    assert pool.in_use == 0 and pool.free == pool.capacity == 32
    assert pool.allocated == pool.released
    assert len({pool.allocate().ssrc for _ in range(32)}) == 32


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=200))
def test_random_operation_sequences_never_leak(ops: list[tuple[bool, int]]) -> None:
    pool = PortPool(30000, 30019, DOMAIN)  # 10 ports
    live = []
    for alloc, k in ops:
        if alloc:
            try:
                live.append(pool.allocate())
            except PoolExhausted:
                assert pool.in_use == pool.capacity
        elif live:
            lease = live[k % len(live)]
            lease.release()
            if lease in live and k % 3 == 0:
                live.remove(lease)
        ports = [lease.port for lease in live if not lease.released]
        assert len(ports) == len(set(ports)) == pool.in_use
    for lease in live:
        lease.release()
    assert pool.in_use == 0 and pool.free == 10


class _Start(random.Random):
    """An rng whose randrange(n) is a chosen value: the pool's start points, made visible."""

    def __init__(self, value: int) -> None:
        super().__init__(0)
        self.value = value

    def randrange(self, *args: Any, **kw: Any) -> int:  # type: ignore[override]
        return self.value


def test_ports_and_ssrc_serials_start_at_a_random_point_and_cycle_from_there() -> None:
    """Start point 3 of ports 30000..30018 (10 even ports) → 30006 first; serial 3 → ...0003 first.
    A restart with another start point hands out other ports and SSRCs first (issue 10.13)."""
    pool = PortPool(30000, 30019, DOMAIN, rng=_Start(3))
    a = pool.allocate()
    assert (a.port, a.ssrc[-4:]) == (30006, "0003")
    assert pool.allocate().port == 30008
    restarted = PortPool(30000, 30019, DOMAIN, rng=_Start(7))
    b = restarted.allocate()
    assert (b.port, b.ssrc[-4:]) == (30014, "0007")
    # the wrap: start 9 → 30018, then 30000
    late = PortPool(30000, 30019, DOMAIN, rng=_Start(9))
    assert [late.allocate().port for _ in range(2)] == [30018, 30000]


def test_default_start_points_differ_between_starts() -> None:
    """With the system's randomness, 20 pools of 500 ports × 10,000 serials do not all start alike
    (a fixed start fails this: every pool's first lease would be port 30000, serial 0000/0001)."""
    firsts = {(p.port, p.ssrc) for p in (PortPool(30000, 30999, DOMAIN).allocate() for _ in range(20))}
    assert len(firsts) > 1


def test_a_pool_set_leases_from_its_pools_in_turn_and_never_twice() -> None:
    a, b = PortPool(30000, 30005, DOMAIN), PortPool(30006, 30011, DOMAIN)  # 3 even ports each
    both = PoolSet([a, b])
    direct = a.allocate()  # a worker's stream holds one of a's ports
    leases = [both.allocate() for _ in range(5)]
    ports = [lease.port for lease in leases] + [direct.port]
    assert len(set(ports)) == 6 and both.in_use == 6 == a.in_use + b.in_use
    assert {lease.port < 30006 for lease in leases[:2]} == {True, False}  # round-robin over the pools
    with pytest.raises(PoolExhausted):
        both.allocate()
    busy = next(lease for lease in leases if lease.port >= 30006)
    both.quarantine(busy)  # back to b, kept out: not handed out again at once
    assert busy.released and b.stats()["quarantined"] == 1 and a.stats()["quarantined"] == 0
    with pytest.raises(PoolExhausted):
        both.allocate()
    direct.release()
    assert both.allocate().port == direct.port
    with pytest.raises(MediaError):
        PoolSet([])
