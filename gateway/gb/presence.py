"""Device presence: who is registered and who is online, as a pure state machine.

Online = registered and keepalives arriving (gb28181.md §3.1). After each REGISTER or keepalive
the deadline is ``min(registration expiry, last activity + interval × count)`` (WVP's rule).
A keepalive after a missed deadline brings a still-registered device back online (§4.3).
Time is a parameter; the asyncio shell arms one timer at `next_deadline()`.

A keepalive only moves a deadline later, so it leaves the device's heap entry where it is: the
entry is moved on when it surfaces (`expire`, `next_deadline`) and the device turns out to have
been active meanwhile — one heap push per deadline window instead of one per keepalive, and one
live entry per device. `_armed` holds each device's live entry; any other entry is stale.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


class PresenceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class OfflineCause(StrEnum):
    UNREGISTERED = "unregistered"
    EXPIRED = "registration_expired"
    KEEPALIVE_LOST = "keepalive_lost"
    CONNECTION_CLOSED = "connection_closed"
    REVOKED = "revoked"
    SHUTDOWN = "gateway_stopped"


#: The cause a lower platform's channels go offline with when the platform itself does (issue 14
#: #2): one device-level event says why; the channels' states all point at it.
PLATFORM_OFFLINE = "platform_offline"
#: Device causes that are the platform's (its link, its registration), not ours.
_PLATFORM_FAULTS = frozenset({OfflineCause.UNREGISTERED, OfflineCause.EXPIRED, OfflineCause.KEEPALIVE_LOST,
                              OfflineCause.CONNECTION_CLOSED})


def channel_offline_cause(device_id: str, device_cause: str) -> str:
    """The cause recorded on a channel whose device went offline with `device_cause`: a lower
    platform's (type 200) channels say `platform_offline`; the gateway stopping or a revocation
    keep their own cause, and a camera's or NVR's channels keep the device's."""
    from gateway.gb.ids import IdKind, kind_of

    if kind_of(device_id) is IdKind.PLATFORM and device_cause in _PLATFORM_FAULTS:
        return PLATFORM_OFFLINE
    return device_cause


@dataclass(frozen=True, slots=True)
class Transition:
    device_id: str
    state: PresenceState
    ts: float
    cause: str


@dataclass(slots=True)
class DeviceRecord:
    """What we know live about one device; never written to the database per keepalive."""

    device_id: str
    transport: str
    host: str
    port: int
    conn_id: int | None
    call_id: str
    contact: str
    expires_at: float
    registered_at: float
    last_seen: float
    keepalive_interval: float
    keepalive_count: int
    online: bool = True
    user_agent: str = ""
    last_keepalive: float | None = None
    deadline: float = 0.0

    def compute_deadline(self) -> float:
        return min(self.expires_at, self.last_seen + self.keepalive_interval * self.keepalive_count)


class Presence:
    """Registry of live devices and their deadlines (sans-IO)."""

    #: False: records are kept but never expire here (a SIP worker's replica of main's bindings).
    watch_deadlines: ClassVar[bool] = True

    def __init__(self, *, keepalive_interval: float = 60.0, keepalive_count: int = 3) -> None:
        self.keepalive_interval = keepalive_interval
        self.keepalive_count = keepalive_count
        self._devices: dict[str, DeviceRecord] = {}
        self._heap: list[tuple[float, str]] = []
        self._armed: dict[str, float] = {}  # device -> its live heap entry's time (≤ its deadline)
        self._dropped: list[str] = []  # registrations that ran out while offline (no transition)

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def get(self, device_id: str) -> DeviceRecord | None:
        return self._devices.get(device_id)

    def records(self) -> Iterator[DeviceRecord]:
        return iter(self._devices.values())

    def online_count(self) -> int:
        return sum(1 for r in self._devices.values() if r.online)

    def _arm(self, rec: DeviceRecord) -> None:
        rec.deadline = rec.compute_deadline()
        self._push(rec)

    def _push(self, rec: DeviceRecord) -> None:
        """A heap entry at `rec.deadline` becomes the device's live one."""
        self._armed[rec.device_id] = rec.deadline
        heapq.heappush(self._heap, (rec.deadline, rec.device_id))

    def register(
        self,
        device_id: str,
        *,
        transport: str,
        host: str,
        port: int,
        conn_id: int | None,
        call_id: str,
        contact: str,
        expires: float,
        now: float,
        user_agent: str = "",
    ) -> tuple[DeviceRecord, Transition | None, bool]:
        """Record a successful REGISTER. Returns (record, transition if it came online, is_new_login).

        A new Call-ID, or a device that was offline, is a new login (re-sync the catalog, §3.4).
        """
        rec = self._devices.get(device_id)
        was_online = rec is not None and rec.online
        new_login = rec is None or not rec.online or rec.call_id != call_id
        if rec is None:
            rec = DeviceRecord(
                device_id=device_id,
                transport=transport,
                host=host,
                port=port,
                conn_id=conn_id,
                call_id=call_id,
                contact=contact,
                expires_at=now + expires,
                registered_at=now,
                last_seen=now,
                keepalive_interval=self.keepalive_interval,
                keepalive_count=self.keepalive_count,
                user_agent=user_agent,
            )
            self._devices[device_id] = rec
        else:
            rec.transport, rec.host, rec.port, rec.conn_id = transport, host, port, conn_id
            rec.call_id, rec.contact, rec.user_agent = call_id, contact, user_agent
            rec.expires_at = now + expires
            rec.last_seen = now
            if new_login:
                rec.registered_at = now
            rec.online = True
        self._arm(rec)
        transition = None if was_online else Transition(device_id, PresenceState.ONLINE, now, "registered")
        return rec, transition, new_login

    def restore(
        self,
        device_id: str,
        *,
        transport: str,
        host: str,
        port: int,
        call_id: str,
        contact: str,
        expires_at: float,
        registered_at: float,
        now: float,
        user_agent: str = "",
    ) -> DeviceRecord:
        """A registration persisted before a restart (issue 16 #1): registered, not yet online.
        The device's next keepalive from this binding brings it online (`activity`); without
        one the record is dropped at `expires_at`."""
        rec = DeviceRecord(
            device_id=device_id, transport=transport, host=host, port=port, conn_id=None, call_id=call_id,
            contact=contact, expires_at=expires_at, registered_at=registered_at, last_seen=now,
            keepalive_interval=self.keepalive_interval, keepalive_count=self.keepalive_count,
            online=False, user_agent=user_agent,
        )
        self._devices[device_id] = rec
        rec.deadline = expires_at
        self._push(rec)
        return rec

    def activity(self, device_id: str, now: float, *, keepalive: bool = False) -> Transition | None:
        """A keepalive (or any request) from a registered device: push its deadline."""
        rec = self._devices.get(device_id)
        if rec is None:
            return None
        rec.last_seen = now
        if keepalive:
            rec.last_keepalive = now
        old = rec.deadline
        rec.deadline = rec.compute_deadline()
        armed = self._armed.get(device_id)
        if armed is None:  # not watched (see expire): watched again once its deadline moves
            if rec.deadline != old and self.watch_deadlines:
                self._push(rec)
        elif rec.deadline < armed:
            self._push(rec)  # earlier, not later (the clock stepped back): watch the new time
        if not rec.online and now < rec.expires_at:
            rec.online = True
            return Transition(device_id, PresenceState.ONLINE, now, "keepalive_resumed")
        return None

    def unregister(self, device_id: str, now: float, cause: OfflineCause) -> Transition | None:
        rec = self._devices.pop(device_id, None)
        self._armed.pop(device_id, None)
        if rec is None or not rec.online:
            return None
        return Transition(device_id, PresenceState.OFFLINE, now, cause.value)

    def set_keepalive_interval(self, device_id: str, interval: float, count: int | None = None) -> None:
        rec = self._devices.get(device_id)
        if rec is not None:
            rec.keepalive_interval = interval
            if count is not None:
                rec.keepalive_count = count
            self._arm(rec)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, device_id = heap[0]
            rec = self._devices.get(device_id)
            if rec is None or self._armed.get(device_id) != deadline:
                heapq.heappop(heap)  # stale
                continue
            if rec.deadline > deadline:  # active since: move its entry on
                self._armed[device_id] = rec.deadline
                heapq.heapreplace(heap, (rec.deadline, device_id))
                continue
            return deadline
        return None

    def expire(self, now: float) -> list[Transition]:
        """Apply every deadline that passed: keepalive lost (still registered) or registration expired."""
        out: list[Transition] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, device_id = heapq.heappop(self._heap)
            rec = self._devices.get(device_id)
            if rec is None or self._armed.get(device_id) != deadline:
                continue  # stale
            if rec.deadline > deadline:  # active since: watch its current deadline (in turn, if also due)
                self._push(rec)
                continue
            if now >= rec.expires_at:
                del self._devices[device_id]
                del self._armed[device_id]
                if rec.online:
                    out.append(Transition(device_id, PresenceState.OFFLINE, now, OfflineCause.EXPIRED.value))
                else:
                    self._dropped.append(device_id)
            elif rec.online:
                rec.online = False
                out.append(Transition(device_id, PresenceState.OFFLINE, now, OfflineCause.KEEPALIVE_LOST.value))
                # keep watching for the registration to expire
                rec.deadline = rec.expires_at
                self._push(rec)
            else:
                del self._armed[device_id]  # offline already, still registered: unwatched until it moves
        return out

    def drain_dropped(self) -> list[str]:
        """Devices whose registration ran out while already offline since the last call."""
        out, self._dropped = self._dropped, []
        return out

    def drop_connection(self, conn_id: int, now: float) -> list[Transition]:
        """A TCP connection closed: devices registered over it go offline (§3.4, 2022 NAT rule)."""
        gone = [r.device_id for r in self._devices.values() if r.conn_id == conn_id]
        out = []
        for device_id in gone:
            t = self.unregister(device_id, now, OfflineCause.CONNECTION_CLOSED)
            if t is not None:
                out.append(t)
        return out
