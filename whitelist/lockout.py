"""Failed-authentication lockout and per-source flood control — pure, `now` (seconds) passed in.

Lockout: K failures within T seconds lock the device ID for `lock_for` seconds (defaults after
Kamailio pike / fail2ban practice: 5 in 60 s → 15 min). The source address has its own counter
with a different trigger (issue 10 #15): a NATed site puts hundreds of cameras behind one address,
so one camera with a wrong password must not lock its neighbours out. A source is locked only when
its failures in the window name `source_distinct_ids` different IDs (someone guessing IDs or
passwords across devices) or reach `source_max_failures` in all; and a source lock never refuses
an approved ID whose live registration binding is that very address (the caller says so).
A success clears the device ID's failure count but never the source's: otherwise anyone holding
one valid device could interleave its logins to guess other devices' passwords from the same
address. Existing locks are never lifted by a success.

FloodGuard: a token bucket per source (burst = rate = `max_per_second`); an empty bucket bans the
source for `ban_for` seconds, during which its packets are ignored without answer.

Both keep memory bounded (`max_keys`): idle counters are evicted first (oldest first); live locks
are kept in their own table, evicted soonest-to-expire first only if that table overflows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from whitelist.decide import Decision, Reason, Request


@dataclass(slots=True)
class _Failures:
    times: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # the device ID of each failure (source counter)


class _Counter:
    """Sliding-window failure counter plus lock table for one kind of key."""

    __slots__ = ("_fails", "_locks", "distinct_ids", "lock_for", "max_failures", "max_keys", "window")

    def __init__(self, max_failures: int, window: float, lock_for: float, max_keys: int,
                 distinct_ids: int | None = None) -> None:
        self.max_failures, self.window = max_failures, window
        self.lock_for, self.max_keys = lock_for, max_keys
        self.distinct_ids = distinct_ids  # also lock once this many different IDs failed in the window
        self._fails: dict[str, _Failures] = {}
        self._locks: dict[str, float] = {}     # key → locked until; insertion order ≈ expiry order

    def locked(self, key: str, now: float) -> bool:
        until = self._locks.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del self._locks[key]
        return False

    def failure(self, key: str, now: float, device_id: str = "") -> bool:
        """Count one failure (of `device_id`); True when this failure locks the key."""
        if self.locked(key, now):
            return False
        rec = self._fails.pop(key, None)       # pop + reinsert keeps dict order = least recently used
        if rec is None:
            rec = _Failures()
        horizon = now - self.window
        keep = [i for i, t in enumerate(rec.times) if t > horizon]
        times = [rec.times[i] for i in keep]
        times.append(now)
        ids: list[str] = []
        if self.distinct_ids is not None:
            ids = [rec.ids[i] for i in keep]
            ids.append(device_id)
        if len(times) >= self.max_failures or (
                self.distinct_ids is not None and len(set(ids)) >= self.distinct_ids):
            self._lock(key, now)
            return True
        rec.times, rec.ids = times, ids
        self._fails[key] = rec
        while len(self._fails) > self.max_keys:
            del self._fails[next(iter(self._fails))]
        return False

    def clear(self, key: str) -> None:
        self._fails.pop(key, None)

    def _lock(self, key: str, now: float) -> None:
        self._locks.pop(key, None)
        self._locks[key] = now + self.lock_for
        while len(self._locks) > self.max_keys:
            del self._locks[next(iter(self._locks))]

    def __len__(self) -> int:
        return len(self._fails) + len(self._locks)


class Lockout:
    """Separate failure counters per device ID and per source address."""

    __slots__ = ("_ids", "_sources")

    def __init__(self, *, max_failures: int = 5, window: float = 60.0, lock_for: float = 900.0,
                 max_keys: int = 100_000, source_distinct_ids: int = 3,
                 source_max_failures: int | None = None) -> None:
        """`source_max_failures` defaults to 10 × `max_failures` (a NATed site's bad camera retrying)."""
        source_max = source_max_failures if source_max_failures is not None else 10 * max_failures
        if (max_failures < 1 or window <= 0 or lock_for <= 0 or max_keys < 1 or source_distinct_ids < 2
                or source_max < 1):
            raise ValueError("max_failures, window, lock_for, max_keys and source limits must be positive "
                             "(source_distinct_ids at least 2)")
        self._ids = _Counter(max_failures, window, lock_for, max_keys)
        self._sources = _Counter(source_max, window, lock_for, max_keys, distinct_ids=source_distinct_ids)

    def record_failure(self, device_id: str, source: str, now: float) -> Reason | None:
        """Count a failed authentication; returns the lock it caused (LOCKED_ID first) or None."""
        id_locked = self._ids.failure(device_id, now)
        source_locked = self._sources.failure(source, now, device_id)
        if id_locked:
            return Reason.LOCKED_ID
        return Reason.LOCKED_SOURCE if source_locked else None

    def record_success(self, device_id: str, source: str, now: float) -> None:
        """A verified login clears the device ID's failures (not the source's, not any lock)."""
        self._ids.clear(device_id)

    def has_failures(self, device_id: str) -> bool:
        """The ID has failures in its window (a success would clear something)."""
        return device_id in self._ids._fails

    def is_locked(self, device_id: str, source: str, now: float, *, binding_matches: bool = False) -> Reason | None:
        """`binding_matches`: the ID is approved and registered from this very address, so a
        lock of the (shared, NATed) source is not its doing and does not apply to it."""
        if self._ids.locked(device_id, now):
            return Reason.LOCKED_ID
        if self._sources.locked(source, now) and not binding_matches:
            return Reason.LOCKED_SOURCE
        return None

    def tracked_keys(self) -> int:
        return len(self._ids) + len(self._sources)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    banned_until: float = 0.0


class FloodGuard:
    """Token bucket per source address; an exhausted bucket bans the source for `ban_for` seconds."""

    __slots__ = ("_buckets", "ban_for", "max_keys", "rate")

    def __init__(self, *, max_per_second: float = 50, ban_for: float = 60.0, max_keys: int = 100_000) -> None:
        if max_per_second <= 0 or ban_for < 0 or max_keys < 1:
            raise ValueError("max_per_second and max_keys must be positive, ban_for non-negative")
        self.rate = float(max_per_second)
        self.ban_for = ban_for
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, source: str, now: float) -> bool:
        b = self._buckets.get(source)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            self._buckets[source] = _Bucket(self.rate - 1.0, now)
            return True
        if now < b.banned_until:
            return False
        b.tokens = min(self.rate, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if b.tokens < 1.0:
            b.banned_until = now + self.ban_for
            return False
        b.tokens -= 1.0
        return True

    def ban(self, source: str, until: float) -> None:
        """A ban decided elsewhere (another SIP worker's bucket ran dry): ignore `source` until then."""
        b = self._buckets.get(source)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(until)
            b = self._buckets[source] = _Bucket(0.0, until)
        b.banned_until = max(b.banned_until, until)

    def is_banned(self, source: str, now: float) -> bool:
        b = self._buckets.get(source)
        return b is not None and now < b.banned_until

    def _evict(self, now: float) -> None:
        """Drop idle sources (full bucket, no ban); if that frees too little, the oldest tenth."""
        idle_after = 1.0      # a bucket refills completely within one second
        for key in [k for k, b in self._buckets.items()
                    if b.banned_until <= now and now - b.stamp >= idle_after]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            for key in list(self._buckets)[: max(1, self.max_keys // 10)]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def precheck(lockout: Lockout, flood: FloodGuard, request: Request, now: float) -> Decision | None:
    """What the adapter asks before Policy.decide(): a FLOOD/LOCKED_* denial, or None to go on.

    Unknown and known IDs are treated alike, so a lock does not reveal whether an ID exists.
    """
    if not flood.allow(request.source_ip, now):
        return Decision(False, Reason.FLOOD)
    locked = lockout.is_locked(request.device_id, request.source_ip, now)
    if locked is not None:
        return Decision(False, locked)
    return None
