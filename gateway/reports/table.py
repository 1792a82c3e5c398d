"""A report as plain data: columns, rows, a total row, meta lines, an optional chart and signatures.

The arithmetic modules fill one of these; `render` turns it into CSV, XLSX or HTML. Column keys
are stable English identifiers (they are the CSV header in English); the displayed header comes
from `i18n`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("text", "int", "seconds", "ratio", "money", "datetime", "hours")


@dataclass(slots=True, frozen=True)
class Column:
    key: str
    kind: str = "text"  # one of KINDS: decides number formats and alignment


@dataclass(slots=True)
class Table:
    kind: str  # report kind: availability, deductions, link-fees, daily-faults, reconciliation, annual-offline
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # period, policy_version, generated_at, ...
    chart: tuple[str, str] | None = None  # (label column, value column) for the HTML bar chart
    signatures: list[str] = field(default_factory=list)  # i18n keys of signature fields

    def column_keys(self) -> list[str]:
        return [c.key for c in self.columns]
