"""The admission state the SIP processes share (see docs/architecture.md "SIP workers: who owns what").

Each process keeps its own copy of the sans-IO guards and hears of the others' events:

- `SharedLockout`: a Lockout that reports every failure and success it counts (`on_event`) and
  applies the ones counted elsewhere (`apply_*`, no report). Lockout is a pure function of the
  failure/success sequence, so every copy that has seen the same events holds the same counters
  and locks: a device spraying source ports over several workers spends one budget, not N.
- `SharedFlood`: a FloodGuard whose bans are reported and applied likewise.
- `ObservedPresence` (main): the presence registry that tells a listener whenever an ID's
  binding (transport, host, port, online) changed or the ID was forgotten.
- `ReplicaPresence` (worker): main's bindings as the registrar and the keepalive path read them.
  It keeps no deadlines: main owns expiry and offline transitions and says so (BIND/DROP).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gateway.gb.presence import DeviceRecord, OfflineCause, Presence, Transition
from whitelist.decide import Reason
from whitelist.lockout import FloodGuard, Lockout

LockoutListener = Callable[[str, str, str, float], None]  # (kind "failure"/"success", device_id, host, now)
BanListener = Callable[[str, float], None]  # (host, until)
BindingListener = Callable[[str, DeviceRecord | None], None]


class SharedLockout(Lockout):
    __slots__ = ("on_event",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_event: LockoutListener | None = None

    def record_failure(self, device_id: str, source: str, now: float) -> Reason | None:
        if self.on_event is not None:
            self.on_event("failure", device_id, source, now)
        return super().record_failure(device_id, source, now)

    def record_success(self, device_id: str, source: str, now: float) -> None:
        if self.on_event is not None and self.has_failures(device_id):  # else a no-op everywhere
            self.on_event("success", device_id, source, now)
        super().record_success(device_id, source, now)

    def apply_failure(self, device_id: str, source: str, now: float) -> None:
        super().record_failure(device_id, source, now)

    def apply_success(self, device_id: str, source: str, now: float) -> None:
        super().record_success(device_id, source, now)


class SharedFlood(FloodGuard):
    __slots__ = ("on_ban",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_ban: BanListener | None = None

    def allow(self, source: str, now: float) -> bool:
        was_banned = self.is_banned(source, now)
        if super().allow(source, now):
            return True
        if self.on_ban is not None and not was_banned:  # this packet emptied the bucket: a new ban
            self.on_ban(source, now + self.ban_for)
        return False


def _key(rec: DeviceRecord | None) -> tuple[str, str, int, bool, str] | None:
    return None if rec is None else (rec.transport, rec.host, rec.port, rec.online, rec.call_id)


class ObservedPresence(Presence):
    """Main's presence: `listener(device_id, record or None)` after a binding changed
    (`drop_connection` goes through `unregister`)."""

    def __init__(self, *, keepalive_interval: float = 60.0, keepalive_count: int = 3) -> None:
        super().__init__(keepalive_interval=keepalive_interval, keepalive_count=keepalive_count)
        self.listener: BindingListener | None = None

    def _tell(self, device_id: str, before: tuple[str, str, int, bool, str] | None) -> None:
        rec = self.get(device_id)
        if self.listener is not None and _key(rec) != before:
            self.listener(device_id, rec)

    def register(self, device_id: str, **kw: Any) -> tuple[DeviceRecord, Transition | None, bool]:
        before = _key(self.get(device_id))
        out = super().register(device_id, **kw)
        self._tell(device_id, before)
        return out

    def restore(self, device_id: str, **kw: Any) -> DeviceRecord:
        before = _key(self.get(device_id))
        rec = super().restore(device_id, **kw)
        self._tell(device_id, before)
        return rec

    def activity(self, device_id: str, now: float, *, keepalive: bool = False) -> Transition | None:
        t = super().activity(device_id, now, keepalive=keepalive)
        if t is not None and self.listener is not None:
            self.listener(device_id, self.get(device_id))
        return t

    def unregister(self, device_id: str, now: float, cause: OfflineCause) -> Transition | None:
        had = device_id in self
        t = super().unregister(device_id, now, cause)
        if had and self.listener is not None:
            self.listener(device_id, None)
        return t

    def expire(self, now: float) -> list[Transition]:
        out = super().expire(now)
        if self.listener is not None:
            for t in out:
                self.listener(t.device_id, self.get(t.device_id))
        return out

    def drain_dropped(self) -> list[str]:
        out = super().drain_dropped()
        if self.listener is not None:
            for device_id in out:
                self.listener(device_id, None)
        return out


class ReplicaPresence(Presence):
    """A worker's copy of main's bindings: no deadlines, no heap (main expires, then says DROP)."""

    watch_deadlines = False  # (keepalives here pushed a heap entry each that nothing ever popped)

    def _arm(self, rec: DeviceRecord) -> None:
        rec.deadline = math.inf

    def put(self, device_id: str, *, transport: str, host: str, port: int, call_id: str, online: bool,
            now: float) -> None:
        """Main's binding for `device_id` (BIND)."""
        rec, _, _ = self.register(device_id, transport=transport, host=host, port=port, conn_id=None,
                                  call_id=call_id, contact="", expires=math.inf, now=now)
        rec.online = online

    def drop(self, device_id: str) -> None:
        """Main forgot `device_id` (DROP)."""
        self.unregister(device_id, 0.0, OfflineCause.UNREGISTERED)
