"""Catalog assembly across packets and catalog reconciliation (our notes §4.4), sans-IO.

A Catalog answer arrives as several MESSAGEs sharing one SN; `SumNum` is the total.
Pages are buffered per (device_id, SN) and the result is complete when the distinct
DeviceIDs collected equal SumNum. Devices also send fewer items than announced, so a
buffer is committed incomplete after `idle_timeout` seconds without a page (WVP: 5 s;
2 minutes for the first page from slow lower platforms).

Time is a parameter: the shell calls `handle_timer(now)` at `next_timer()`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.gb.items import CatalogItem
from gateway.gb.manscdp import CatalogPage

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class CatalogResult:
    """An assembled catalog. `complete=False` means committed on timeout with `missing` items."""

    device_id: str
    sn: int
    items: list[CatalogItem]
    sum_num: int
    complete: bool
    missing: int = 0
    pages: int = 0
    skipped: int = 0


@dataclass(slots=True)
class _Pending:
    device_id: str
    sn: int
    deadline: float
    sum_num: int = 0
    pages: int = 0
    skipped: int = 0
    items: dict[str, CatalogItem] = field(default_factory=dict)

    def result(self, complete: bool) -> CatalogResult:
        missing = 0 if complete else max(self.sum_num - len(self.items), 0)
        return CatalogResult(
            device_id=self.device_id,
            sn=self.sn,
            items=list(self.items.values()),
            sum_num=self.sum_num,
            complete=complete,
            missing=missing,
            pages=self.pages,
            skipped=self.skipped,
        )


class CatalogAssembler:
    """Collects Catalog pages into results; one instance serves every device."""

    def __init__(
        self,
        *,
        idle_timeout: float = 5.0,
        first_timeout: float = 120.0,
        done_linger: float = 30.0,
        max_items: int = 100_000,
    ) -> None:
        self._idle = idle_timeout
        self._first = first_timeout
        self._linger = done_linger
        self._max_items = max_items
        self._pending: dict[Key, _Pending] = {}
        # Recently finished (device, SN) → until when late retransmissions are ignored.
        self._done: dict[Key, float] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, device_id: str, sn: int, now: float) -> None:
        """A Catalog query was sent: expect pages within `first_timeout`."""
        key = (device_id, sn)
        self._done.pop(key, None)
        if key not in self._pending:
            self._pending[key] = _Pending(device_id, sn, now + self._first)

    def cancel(self, device_id: str, sn: int) -> None:
        """Forget a pending assembly (device gone) without producing a result."""
        self._pending.pop((device_id, sn), None)

    def feed(self, page: CatalogPage, now: float) -> CatalogResult | None:
        """Add one page; return the result when the catalog is complete.

        Pages for an SN we did not start are accepted (devices push catalogs). A page
        for a catalog finished less than `done_linger` ago is a retransmission: ignored.
        """
        self._expire_done(now)
        key = (page.device_id, page.sn)
        if key in self._done:
            return None
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(page.device_id, page.sn, now + self._idle)
        pending.pages += 1
        pending.skipped += page.skipped
        pending.sum_num = max(pending.sum_num, page.sum_num)
        for item in page.items:
            if item.device_id in pending.items or len(pending.items) < self._max_items:
                pending.items[item.device_id] = item  # dedupe, last copy wins
        pending.deadline = now + self._idle
        if len(pending.items) >= pending.sum_num:
            del self._pending[key]
            self._done.pop(key, None)
            self._done[key] = now + self._linger  # at the end: expiry order is insertion order
            return pending.result(complete=True)
        return None

    def handle_timer(self, now: float) -> list[CatalogResult]:
        """Commit every buffer whose deadline passed, as incomplete results."""
        self._expire_done(now)
        due = [key for key, p in self._pending.items() if p.deadline <= now]
        results = []
        for key in due:
            pending = self._pending.pop(key)
            self._done.pop(key, None)
            self._done[key] = now + self._linger  # at the end: expiry order is insertion order
            results.append(pending.result(complete=False))
        return results

    def next_timer(self) -> float | None:
        """Earliest deadline among pending buffers, None if idle."""
        return min((p.deadline for p in self._pending.values()), default=None)

    def _expire_done(self, now: float) -> None:
        """Entries expire in insertion order (all linger the same time): pop from the front
        instead of scanning every finished catalog on every page (20,000 after a storm)."""
        done = self._done
        while done:
            key = next(iter(done))
            if done[key] > now:
                break
            del done[key]


@dataclass(frozen=True, slots=True)
class CatalogDiff:
    """What changed between the stored channel set and a newly assembled catalog."""

    added: list[CatalogItem]
    updated: list[CatalogItem]
    removed: list[str]
    unchanged: int


def diff_catalog(old: Mapping[str, CatalogItem], new: list[CatalogItem]) -> CatalogDiff:
    """Compare by DeviceID: the new set replaces the old one (WVP "reset channels", §4.4)."""
    latest: dict[str, CatalogItem] = {}
    for item in new:
        latest[item.device_id] = item
    added: list[CatalogItem] = []
    updated: list[CatalogItem] = []
    unchanged = 0
    for device_id, item in latest.items():
        before = old.get(device_id)
        if before is None:
            added.append(item)
        elif before != item:
            updated.append(item)
        else:
            unchanged += 1
    removed = [device_id for device_id in old if device_id not in latest]
    return CatalogDiff(added, updated, removed, unchanged)
