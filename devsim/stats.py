"""Latency samples for the swarm: append-only, bounded, percentiles on demand."""

from __future__ import annotations

import math

MAX_SAMPLES = 2_000_000


class LatencyLog:
    """Seconds in, milliseconds out; `mark()`/`since()` give the samples of one run."""

    __slots__ = ("_base", "_v")

    def __init__(self) -> None:
        self._v: list[float] = []
        self._base = 0  # samples dropped from the front to stay bounded

    def add(self, seconds: float) -> None:
        v = self._v
        v.append(seconds)
        if len(v) > MAX_SAMPLES:
            half = len(v) // 2
            del v[:half]
            self._base += half

    def mark(self) -> int:
        return self._base + len(self._v)

    def since(self, mark: int) -> list[float]:
        return [x * 1000.0 for x in self._v[max(0, mark - self._base):]]

    def values(self) -> list[float]:
        return [x * 1000.0 for x in self._v]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (ms, 3 decimals); None without samples."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return round(s[k], 3)
