"""Errors of the reports package; each names what the user must fix (a 4xx or a CLI error).

GbgateError
└── ReportError
    ├── PeriodError            a period that does not parse, or lies in the future
    ├── PolicyError            a deduction policy body with a bad field (names it)
    ├── TicketError            an unknown ticket, or an action its status does not allow
    └── ImportValidationError  contract CSV/XLSX rows that failed validation (all of them listed)
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import GbgateError


class ReportError(GbgateError):
    """Root of the reports package's errors."""


class PeriodError(ReportError):
    """The report period is malformed or in the future."""


class PolicyError(ReportError):
    """A deduction policy field is invalid; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class TicketError(ReportError):
    """Unknown ticket, or an action not allowed from the ticket's status.

    `field` names the input at fault (ticket, status, cause, ...); `reason` is "not_found",
    "conflict" (the status does not allow the action) or "invalid" (a bad value), so the API can
    answer 404, 409 or 422 without parsing the message.
    """

    def __init__(self, message: str, *, field: str | None = None, reason: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


@dataclass(slots=True, frozen=True)
class RowError:
    """One problem in an imported file: 1-based line (header is line 1), column name, message."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, field {self.field}: {self.message}"


class ImportValidationError(ReportError):
    """The file was refused as a whole; `errors` lists every bad row and field."""

    def __init__(self, errors: list[RowError]) -> None:
        head = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} error(s): {head}{more}")
        self.errors = errors
