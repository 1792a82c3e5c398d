"""A one-line progress report for long CLI operations (issue 15), on standard error only.

Shown when the stream is a terminal or when asked (`--progress`), so scripts that read standard
output see exactly what contract.md promises and logs get no carriage-return noise by default.
The line overwrites itself (CR) at most every `interval` seconds and ends with a newline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


class ProgressLine:
    """Callable as `progress(phase, done, total)`; a disabled one does nothing."""

    __slots__ = ("_clock", "_last", "_shown", "_width", "enabled", "interval", "label", "stream")

    def __init__(self, stream: TextIO, label: str, *, enabled: bool, interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.label, self.enabled, self.interval = stream, label, enabled, interval
        self._clock = clock
        self._last: float | None = None
        self._shown = False
        self._width = 0

    @classmethod
    def for_stream(cls, stream: TextIO, label: str, *, force: bool = False) -> ProgressLine:
        """Enabled when `force` or when `stream` is a terminal."""
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return cls(stream, label, enabled=force or tty)

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = self._clock()
        final = total > 0 and done >= total
        if not final and self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        pct = f" ({100 * done // total}%)" if total > 0 else ""
        text = f"{self.label}: {phase} {done}/{total}{pct}" if total > 0 else f"{self.label}: {phase}"
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = max(self._width, len(text))
        self._shown = True

    def finish(self) -> None:
        """End the line (only if something was shown)."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
