"""Receive-port and SSRC pool for media sessions (architecture.md §1: "a port and SSRC from the pool").

RTP gets even ports (RFC 3550 §11: RTP on an even port, RTCP on the next odd one), so the pool
hands out even ports in `media.port_min..port_max`. A `Lease` holds one port and one GB SSRC
(gb28181.md §5.4, allocated by `gateway.gb.ssrc.SsrcAllocator`); it is returned exactly once,
by `release()` or by leaving its `with` block — a second release is a no-op, so error paths can
release unconditionally without leaking or double-freeing. Ports cycle round-robin so late RTP of
a closed session does not land in the next one at once. A port found busy at bind time is
`quarantine`d for a while instead of being handed out again immediately.

Both cycles start at a random point on every start (issue 10.13): a lower platform's un-BYEd
streams from before a restart keep sending to the old ports with the old SSRCs, and must not land
on the first new sessions as they did when every start began at the first port and serial 0001.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Self

from gateway.gb.errors import SsrcExhausted
from gateway.gb.ssrc import SERIALS, SsrcAllocator, ssrc_to_int
from gateway.media.errors import MediaError


class PoolExhausted(MediaError):
    """No free receive port or SSRC is left (local condition: raise the range or wait)."""


@dataclass(slots=True)
class Lease:
    """One port + SSRC held by one media session until `release()` (idempotent)."""

    port: int
    ssrc: str
    _pool: PortPool | None = field(repr=False, default=None)

    @property
    def ssrc_int(self) -> int:
        return ssrc_to_int(self.ssrc)

    @property
    def released(self) -> bool:
        return self._pool is None

    def release(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._give_back(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PortPool:
    """Even ports of a range plus SSRCs of a domain; thread-safe, O(1) allocate/release."""

    def __init__(self, port_min: int, port_max: int, domain: str, *,
                 clock: Callable[[], float] | None = None, quarantine_s: float = 30.0,
                 rng: random.Random | None = None) -> None:
        first = port_min + (port_min & 1)
        ports = list(range(first, port_max + 1, 2))
        if not ports:
            raise MediaError(f"no even port in {port_min}..{port_max}")
        rng = rng or random.SystemRandom()
        self.port_min, self.port_max = port_min, port_max
        self._free: deque[int] = deque(ports)
        self._free.rotate(-rng.randrange(len(ports)))
        self._all = frozenset(ports)
        self._used: set[int] = set()
        self._quarantined: dict[int, float] = {}
        self._ssrc = SsrcAllocator(domain, start=rng.randrange(SERIALS))
        self._lock = threading.Lock()
        self._clock = clock
        self._quarantine_s = quarantine_s
        self.allocated = 0
        self.released = 0
        self.exhausted = 0

    @property
    def capacity(self) -> int:
        return len(self._all)

    @property
    def in_use(self) -> int:
        return len(self._used)

    @property
    def free(self) -> int:
        return len(self._free)

    def allocate(self, *, live: bool = True, ssrc: str | None = None) -> Lease:
        """A fresh lease. `ssrc` reserves a given one (e.g. a cascade offer) instead of allocating."""
        with self._lock:
            self._unquarantine()
            if not self._free:
                self.exhausted += 1
                raise PoolExhausted(f"all {self.capacity} media ports in use")
            try:
                if ssrc is None:
                    value = self._ssrc.allocate(live)
                elif self._ssrc.reserve(ssrc):
                    value = ssrc
                else:
                    raise PoolExhausted(f"SSRC {ssrc} is taken or not of this domain")
            except SsrcExhausted as exc:
                self.exhausted += 1
                raise PoolExhausted(str(exc)) from None
            port = self._free.popleft()
            self._used.add(port)
            self.allocated += 1
            return Lease(port, value, self)

    def quarantine(self, lease: Lease) -> None:
        """The lease's port could not be bound (someone else has it): keep it out for a while."""
        with self._lock:
            if lease.port in self._used:
                now = (self._clock or time.monotonic)()
                self._quarantined[lease.port] = now + self._quarantine_s
        lease.release()

    def _give_back(self, lease: Lease) -> None:
        with self._lock:
            if lease.port not in self._used:
                return
            self._used.discard(lease.port)
            self._ssrc.release(lease.ssrc)
            self.released += 1
            if lease.port not in self._quarantined:
                self._free.append(lease.port)

    def _unquarantine(self) -> None:
        if not self._quarantined:
            return
        now = (self._clock or time.monotonic)()
        for port, until in list(self._quarantined.items()):
            if until <= now and port not in self._used:
                del self._quarantined[port]
                self._free.append(port)

    def stats(self) -> dict[str, int]:
        return {"capacity": self.capacity, "in_use": self.in_use, "free": self.free,
                "quarantined": len(self._quarantined), "allocated": self.allocated,
                "released": self.released, "exhausted": self.exhausted}



class PoolSet:
    """Leases from several pools in turn (`allocate` and `quarantine` as `PortPool`'s).

    Main's own media sockets (the cascade relay's) when media workers split the port range: each
    port is then leased from the slice's pool the workers' streams lease from too, so main and
    a worker never both hold it (main's full-range pool would hand out ports a worker is bound
    to, found busy only at bind time)."""

    def __init__(self, pools: Sequence[PortPool]) -> None:
        if not pools:
            raise MediaError("a PoolSet needs at least one pool")
        self.pools = tuple(pools)
        self._next = 0

    @property
    def in_use(self) -> int:
        return sum(p.in_use for p in self.pools)

    def allocate(self, *, live: bool = True, ssrc: str | None = None) -> Lease:
        """From the next pool round-robin that has a port; PoolExhausted when none has."""
        n = len(self.pools)
        start, self._next = self._next, (self._next + 1) % n
        last: PoolExhausted | None = None
        for i in range(n):
            try:
                return self.pools[(start + i) % n].allocate(live=live, ssrc=ssrc)
            except PoolExhausted as exc:
                last = exc
        assert last is not None
        raise last

    def quarantine(self, lease: Lease) -> None:
        """To the pool the lease came from."""
        for p in self.pools:
            if lease._pool is p:
                p.quarantine(lease)
                return
        lease.release()
