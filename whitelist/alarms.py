"""Security alarm de-duplication, sans-IO (issue 10 #7): a flood makes one record with a count.

Unauthenticated traffic is cheap to send, and every alarm used to cost a device event and an
audit record, so 100 spoofed MESSAGEs grew the audit chain by 100. Here an alarm is keyed by
(device, kind, source): the first occurrence opens it (the caller writes one event and one audit
record), later occurrences only count. An alarm closes after `quiet` seconds without a hit or
`max_open` seconds after it opened; the next hit opens a new one. Memory is bounded: beyond
`max_keys` open alarms, new sources of the same (device, kind) share the source "*" (spoofed
UDP sources must not grow the table).
"""

from __future__ import annotations

from dataclasses import dataclass

OVERFLOW_SOURCE = "*"


@dataclass(slots=True)
class OpenAlarm:
    device_id: str
    kind: str
    source: str
    first: float
    last: float
    count: int = 1
    reported: int = 1  # the count the store last saw (the caller updates it when it writes)


@dataclass(frozen=True, slots=True)
class Hit:
    alarm: OpenAlarm
    new: bool  # True: this hit opened the alarm, write the record; False: only counted


class AlarmDeduper:
    __slots__ = ("_open", "max_keys", "max_open", "quiet")

    def __init__(self, *, quiet: float = 300.0, max_open: float = 3600.0, max_keys: int = 10_000) -> None:
        if quiet <= 0 or max_open <= 0 or max_keys < 1:
            raise ValueError("quiet, max_open and max_keys must be positive")
        self.quiet, self.max_open, self.max_keys = quiet, max_open, max_keys
        self._open: dict[tuple[str, str, str], OpenAlarm] = {}

    def __len__(self) -> int:
        return len(self._open)

    def hit(self, device_id: str, kind: str, source: str, now: float) -> Hit:
        key = (device_id, kind, source)
        alarm = self._open.get(key)
        if alarm is not None and self._closed(alarm, now):
            del self._open[key]
            alarm = None
        if alarm is None and len(self._open) >= self.max_keys:
            self.expire(now)
            if len(self._open) >= self.max_keys:
                key = (device_id, kind, OVERFLOW_SOURCE)
                alarm = self._open.get(key)
        if alarm is None:
            alarm = self._open[key] = OpenAlarm(device_id, kind, key[2], now, now)
            return Hit(alarm, True)
        alarm.count += 1
        alarm.last = now
        return Hit(alarm, False)

    def changed(self) -> list[OpenAlarm]:
        """Open alarms whose count moved since the caller last wrote it (then marked written)."""
        out = [a for a in self._open.values() if a.count != a.reported]
        for a in out:
            a.reported = a.count
        return out

    def expire(self, now: float) -> list[OpenAlarm]:
        """Close and return the alarms that went quiet or stayed open too long."""
        gone = [k for k, a in self._open.items() if self._closed(a, now)]
        return [self._open.pop(k) for k in gone]

    def _closed(self, alarm: OpenAlarm, now: float) -> bool:
        return now - alarm.last >= self.quiet or now - alarm.first >= self.max_open
