"""Errors raised by the whitelist package.

WhitelistError                  root (whitelist never imports gateway, so it has its own root)
├── ValidationError             a value is malformed; `field` names it, `line` the row of an import
│   └── ValidationErrors        several rows/fields bad at once; `.errors` lists every one
│       └── ConflictErrors      an import would overwrite decided (non-pending) entries it may not
├── BundleError                 a policy bundle is unusable: bad signature, wrong key, truncated/garbled
├── AuditChainError             the audit chain cannot be extended (e.g. its head is broken)
├── StoreError                  the database refused a write (nothing was applied)
└── NotFoundError               an admin action names a device ID / rule that does not exist

All of these are *local* judgements about input handed to us; the API maps ValidationError and
NotFoundError to 4xx (with `field` and `line`), the rest to 4xx/5xx as it sees fit.
"""

from __future__ import annotations


class WhitelistError(Exception):
    """Base of every error the whitelist package raises on purpose."""


class ValidationError(WhitelistError):
    """A value is malformed. `field` names it; `line` is the 1-based import row (None outside imports)."""

    def __init__(self, field: str, message: str, *, line: int | None = None) -> None:
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{field}: {message}")
        self.field = field
        self.line = line
        self.message = message


class ValidationErrors(ValidationError):
    """Several validation failures collected from one import; nothing was applied.

    It is itself a ValidationError (field/line of the first failure) so callers that only catch
    ValidationError still answer 4xx; `.errors` carries every failure for a full report.
    """

    def __init__(self, errors: list[ValidationError]) -> None:
        if not errors:
            raise ValueError("ValidationErrors needs at least one error")
        first = errors[0]
        super().__init__(first.field, first.message, line=first.line)
        self.errors = list(errors)
        lines = "; ".join(str(e) for e in errors[:20])
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        self.args = (f"{len(errors)} invalid value(s): {lines}{more}",)


class ConflictErrors(ValidationErrors):
    """An import would overwrite entries the security team already decided; nothing was applied."""


class BundleError(WhitelistError):
    """A policy bundle cannot be trusted or read: bad signature, wrong key, truncated or garbled."""


class AuditChainError(WhitelistError):
    """The audit chain cannot be extended or read consistently."""


class StoreError(WhitelistError):
    """The database refused a whitelist write; the transaction was rolled back, nothing applied."""


class NotFoundError(WhitelistError):
    """An admin action names a device ID or rule ID that is not in the whitelist."""

    def __init__(self, field: str, value: str) -> None:
        super().__init__(f"{field} {value!r} not found")
        self.field = field
        self.value = value
