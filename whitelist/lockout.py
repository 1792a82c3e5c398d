"""Failed-authentication lockout and per-source flood control — pure, `now` (seconds) passed in.

Lockout: K failures within T seconds lock the device ID, and by a separate counter the source
address, for `lock_for` seconds (defaults after Kamailio pike / fail2ban practice: 5 in 60 s →
15 min). A success clears the device ID's failure count but never the source's: otherwise anyone
holding one valid device could interleave its logins to guess other devices' passwords from the
same address. Existing locks are never lifted by a success.

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


class _Counter:
    """Sliding-window failure counter plus lock table for one kind of key."""

    __slots__ = ("_fails", "_locks", "lock_for", "max_failures", "max_keys", "window")

    def __init__(self, max_failures: int, window: float, lock_for: float, max_keys: int) -> None:
        self.max_failures, self.window = max_failures, window
        self.lock_for, self.max_keys = lock_for, max_keys
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

    def failure(self, key: str, now: float) -> bool:
        """Count one failure; True when this failure locks the key."""
        if self.locked(key, now):
            return False
        rec = self._fails.pop(key, None)       # pop + reinsert keeps dict order = least recently used
        if rec is None:
            rec = _Failures()
        horizon = now - self.window
        times = [t for t in rec.times if t > horizon]
        times.append(now)
        if len(times) >= self.max_failures:
            self._lock(key, now)
            return True
        rec.times = times
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
                 max_keys: int = 100_000) -> None:
        if max_failures < 1 or window <= 0 or lock_for <= 0 or max_keys < 1:
            raise ValueError("max_failures, window, lock_for and max_keys must be positive")
        self._ids = _Counter(max_failures, window, lock_for, max_keys)
        self._sources = _Counter(max_failures, window, lock_for, max_keys)

    def record_failure(self, device_id: str, source: str, now: float) -> Reason | None:
        """Count a failed authentication; returns the lock it caused (LOCKED_ID first) or None."""
        id_locked = self._ids.failure(device_id, now)
        source_locked = self._sources.failure(source, now)
        if id_locked:
            return Reason.LOCKED_ID
        return Reason.LOCKED_SOURCE if source_locked else None

    def record_success(self, device_id: str, source: str, now: float) -> None:
        """A verified login clears the device ID's failures (not the source's, not any lock)."""
        self._ids.clear(device_id)

    def is_locked(self, device_id: str, source: str, now: float) -> Reason | None:
        if self._ids.locked(device_id, now):
            return Reason.LOCKED_ID
        if self._sources.locked(source, now):
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
