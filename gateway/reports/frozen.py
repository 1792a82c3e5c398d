"""Reports of closed periods are frozen once issued (issue 11.9).

A finished month's sheet is signed and paid on: it must not change because someone later
back-dates a policy, imports contract rows or a late event arrives. So the first time a report of
a *closed* period is asked for, the computed report (its tables, as plain JSON) is stored with
what it was computed from — the policy's name, version and body, and `inputs`: counts and a
SHA-256 over the events, contract data, maintenance windows and tickets used. Every later
download renders that stored report, so the files are byte-identical (XLSX included: the
renderer fixes its metadata). Changing it is an explicit re-issue (`reissue`): computed again
from today's data, stored as the next revision with who asked for it, when and why; the rows of
`issued_report` are the audit trail, and the re-issue is logged.

Closed: a monthly or yearly availability, deductions, link-fees or annual-offline report once
`CLOSE_AFTER_S` (one day) has passed after the period's end, so that journal copies and
late evidence of the last day are in before the sheet is fixed. Daily notices and the
reconciliation follow the live ticket workflow and are never frozen.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from gateway.health.timeline import Event
from gateway.reports.deductions import DeductionPolicy
from gateway.reports.ledger import MaintenanceDecl
from gateway.reports.model import ContractData
from gateway.reports.period import Period
from gateway.reports.render import Report
from gateway.reports.table import Column, Table

log = logging.getLogger(__name__)

FROZEN_KINDS = frozenset({"availability", "deductions", "link-fees", "annual-offline"})
CLOSE_AFTER_S = 86_400.0


def closed(kind: str, period: Period, now: float, after: float = CLOSE_AFTER_S) -> bool:
    """Is this report of a closed period (frozen once issued)? `after` = `report.freeze_after`."""
    return kind in FROZEN_KINDS and period.kind in ("month", "year") and now >= period.full_end + after


def _enc(v: Any) -> Any:
    if isinstance(v, Decimal):
        return {"$d": str(v)}
    if isinstance(v, tuple):
        return [_enc(x) for x in v]
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict) and len(v) == 1 and "$d" in v:
        return Decimal(v["$d"])
    return v


def _pairs(d: dict[str, Any] | None) -> list[list[Any]] | None:
    return None if d is None else [[k, _enc(v)] for k, v in d.items()]


def _unpairs(p: list[list[Any]] | None) -> dict[str, Any] | None:
    return None if p is None else {k: _dec(v) for k, v in p}


def report_to_json(report: Report) -> dict[str, Any]:
    """The report as JSON-able values; key order kept as lists of pairs (it is the column order)."""
    return {
        "kind": report.kind,
        "csv_index": report.csv_index,
        "meta": _pairs(report.meta),
        "tables": [
            {
                "kind": t.kind,
                "columns": [[c.key, c.kind] for c in t.columns],
                "rows": [_pairs(r) for r in t.rows],
                "total": _pairs(t.total),
                "meta": _pairs(t.meta),
                "chart": list(t.chart) if t.chart else None,
                "signatures": list(t.signatures),
            }
            for t in report.tables
        ],
    }


def report_from_json(data: dict[str, Any]) -> Report:
    tables = []
    for t in data["tables"]:
        table = Table(t["kind"], [Column(k, kind) for k, kind in t["columns"]])
        table.rows = [_unpairs(r) or {} for r in t["rows"]]
        table.total = _unpairs(t["total"])
        table.meta = _unpairs(t["meta"]) or {}
        table.chart = (t["chart"][0], t["chart"][1]) if t["chart"] else None
        table.signatures = list(t["signatures"])
        tables.append(table)
    return Report(data["kind"], tables, data["csv_index"], _unpairs(data["meta"]) or {})


def inputs_record(
    events: Iterable[Event],
    contract: ContractData,
    policy: DeductionPolicy,
    maintenance: Iterable[MaintenanceDecl] = (),
    tickets: Iterable[Any] = (),
) -> dict[str, Any]:
    """Counts and a SHA-256 of everything a report was computed from (canonical order)."""
    h = hashlib.sha256()
    n_events = 0
    for ev in sorted(events, key=lambda e: (e.ts, e.event_id)):
        n_events += 1
        h.update(f"e|{ev.event_id}|{ev.subject}|{ev.ts!r}|{ev.state}|{ev.cause}\n".encode())
    for ch in contract.channels:
        h.update(f"c|{ch!r}\n".encode())
    for table in (contract.batches, contract.links, contract.vendors, contract.stations, contract.sites):
        for key in sorted(table):
            h.update(f"t|{key}|{table[key]!r}\n".encode())
    windows = sorted(maintenance, key=lambda w: (w.subject, w.start, w.end))
    for w in windows:
        h.update(f"m|{w!r}\n".encode())
    ticket_list = sorted(tickets, key=lambda t: t.id)
    for t in ticket_list:
        h.update(f"k|{t!r}\n".encode())
    h.update(f"p|{policy.label}|{json.dumps(policy.to_body(), sort_keys=True)}\n".encode())
    return {
        "events": n_events,
        "channels": len(contract.channels),
        "maintenance_windows": len(windows),
        "tickets": len(ticket_list),
        "policy": policy.label,
        "sha256": h.hexdigest(),
    }


async def latest(sessions: Any, kind: str, period: str, station: str, group_by: str) -> Any:
    """The latest issued revision of this report, or None."""
    from gateway.store.contract import IssuedReport as R

    async with sessions() as s:
        q = (
            select(R)
            .where(col(R.kind) == kind, col(R.period) == period, col(R.station) == station, col(R.group_by) == group_by)
            .order_by(col(R.revision).desc())
            .limit(1)
        )
        return (await s.execute(q)).scalars().first()


async def issue(
    sessions: Any,
    report: Report,
    *,
    kind: str,
    period: str,
    station: str,
    group_by: str,
    policy: DeductionPolicy,
    inputs: dict[str, Any],
    actor: str,
    reason: str,
    now: float,
    revision: int,
) -> Any:
    """Store `report` as `revision`; if another request stored it first, return that one."""
    from gateway.store.contract import IssuedReport as R

    row = R(
        kind=kind,
        period=period,
        station=station,
        group_by=group_by,
        revision=revision,
        issued_ts=now,
        issued_by=actor,
        reason=reason,
        policy_name=policy.name,
        policy_version=policy.version,
        policy_body=policy.to_body() | {"effective_from": policy.effective_from.isoformat()},
        inputs=inputs,
        report=report_to_json(report),
    )
    try:
        async with sessions() as s, s.begin():
            s.add(row)
    except IntegrityError:
        if revision != 1:
            raise
        existing = await latest(sessions, kind, period, station, group_by)
        if existing is None:
            raise
        return existing
    if revision > 1:
        log.warning(
            "report %s %s (station %r) re-issued as revision %d by %s: %s",
            kind,
            period,
            station,
            revision,
            actor,
            reason,
        )
    return row
