"""Report periods: a local day `2026-11-27`, month `2026-11` or year `2026` (contract.md).

Local time is a fixed offset (report.timezone, Asia/Shanghai = UTC+8; no daylight saving). A
period that has not started yet is refused; a period that is under way ends at `now` (the rest
of it is not expected time yet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from gateway.health.timeline import UTC8
from gateway.reports.errors import PeriodError

_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_YEAR = re.compile(r"^(\d{4})$")


@dataclass(slots=True, frozen=True)
class Period:
    """[start, end) in unix seconds; `end` is clipped to now for a period under way."""

    kind: str  # day | month | year
    label: str
    first: date
    last: date  # inclusive, the last local day of the full period
    start: float
    end: float
    full_end: float
    tz: tzinfo = UTC8

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    @property
    def complete(self) -> bool:
        return self.end >= self.full_end


def local_ts(d: date, tz: tzinfo = UTC8) -> float:
    """Unix seconds of local midnight starting day `d`."""
    return datetime.combine(d, time(0), tzinfo=tz).timestamp()


def parse_period(text: str, *, now: float, tz: tzinfo = UTC8) -> Period:
    """Parse a period; raises PeriodError naming what is wrong."""
    if tz.utcoffset(None) is None:
        raise PeriodError("report.timezone must be a fixed offset")
    text = text.strip()
    try:
        if m := _DAY.match(text):
            first = last = date(int(m[1]), int(m[2]), int(m[3]))
            kind = "day"
        elif m := _MONTH.match(text):
            first = date(int(m[1]), int(m[2]), 1)
            nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
            last, kind = nxt - timedelta(days=1), "month"
        elif m := _YEAR.match(text):
            first, last, kind = date(int(m[1]), 1, 1), date(int(m[1]), 12, 31), "year"
        else:
            raise PeriodError(f"period {text!r}: expected YYYY-MM-DD, YYYY-MM or YYYY")
    except ValueError as exc:
        raise PeriodError(f"period {text!r}: {exc}") from None
    start = local_ts(first, tz)
    full_end = local_ts(last + timedelta(days=1), tz)
    if start >= now:
        raise PeriodError(f"period {text!r} is in the future")
    return Period(kind, text, first, last, start, min(full_end, now), full_end, tz)


def fixed_tz(hours: float) -> timezone:
    return timezone(timedelta(hours=hours))
