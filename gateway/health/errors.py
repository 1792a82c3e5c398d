"""Errors of the health package (timeline, journal, probe).

GbgateError
└── HealthError
    ├── TimelineError      inconsistent input to the pure interval arithmetic (local: a caller bug)
    ├── JournalError       the event journal cannot be written or read (local I/O)
    │   └── JournalCorrupt a line in the middle of the journal is not a valid record
    └── ProbeError         a frame handed to the quality probe is not a BGR image
"""

from __future__ import annotations

from gateway.errors import GbgateError


class HealthError(GbgateError):
    """Root of the health package's errors."""


class TimelineError(HealthError):
    """Bad input to the timeline arithmetic (period reversed, mixed subjects, non-fixed timezone)."""


class JournalError(HealthError):
    """The journal file could not be written, flushed or read."""


class JournalCorrupt(JournalError):
    """A complete (newline-terminated) journal line is not a valid record; `line` is 1-based."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line


class ProbeError(HealthError):
    """The probe was given something that is not an HxWx3 uint8 image."""
