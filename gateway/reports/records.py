"""Listings and bulk writes behind the ops API and CLI: contract data, windows, policies, tickets.

Everything takes an `async_sessionmaker`; rows come back as JSON-ready dicts (money as strings,
dates ISO, instants as unix seconds) so the HTTP layer and the CLI print the same values. The
workflow and the arithmetic stay in `faults`, `deductions` and `service`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from gateway.reports.contract_import import KEY_FIELD, SCHEMAS, apply_import, parse_rows
from gateway.reports.errors import ImportValidationError, RowError
from gateway.reports.faults import Ticket
from gateway.store import contract as T

CONTRACT_KINDS = tuple(SCHEMAS)
_MODELS: dict[str, Any] = {
    "vendors": T.Vendor,
    "batches": T.RentalBatch,
    "maintenance_contracts": T.MaintenanceContract,
    "links": T.FibreLink,
    "stations": T.PoliceStation,
    "channels": T.ChannelContract,
    "jurisdiction": T.StationChannel,
}
# which kinds' IDs a file of each kind may refer to (contract_import's `known`)
_REFS = {
    "vendors": T.Vendor,
    "batches": T.RentalBatch,
    "maintenance_contracts": T.MaintenanceContract,
    "links": T.FibreLink,
    "stations": T.PoliceStation,
    "channels": T.ChannelContract,
}


def plain(value: Any) -> Any:
    """A JSON-ready copy: Decimal → str, date/datetime → ISO text, containers walked."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def row_dict(row: Any) -> dict[str, Any]:
    return {k: plain(v) for k, v in row.model_dump().items()}


async def list_contract(sessions: Any, kind: str) -> list[dict[str, Any]]:
    """Every row of one kind of contract data, ordered by key."""
    if kind not in _MODELS:
        raise ImportValidationError([RowError(0, "kind", f"unknown kind {kind!r}: one of {', '.join(_MODELS)}")])
    model = _MODELS[kind]
    order = model.id if kind == "jurisdiction" else getattr(model, KEY_FIELD[kind])
    async with sessions() as s:
        rows = (await s.execute(select(model).order_by(order))).scalars().all()
    return [row_dict(r) for r in rows]


async def known_ids(sessions: Any) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    async with sessions() as s:
        for kind, model in _REFS.items():
            key = getattr(model, KEY_FIELD[kind])
            out[kind] = set((await s.execute(select(key))).scalars().all())
    return out


async def import_contract(sessions: Any, kind: str, filename: str, data: bytes, *, now: float) -> int:
    """Validate a CSV/XLSX file of `kind` against the stored IDs and write it in one transaction.

    Raises ImportValidationError listing every bad line and field; nothing is written then.
    """
    rows = parse_rows(kind, filename, data, known=await known_ids(sessions))
    async with sessions() as s, s.begin():
        return await apply_import(s, kind, rows, now=now)


async def list_maintenance(
    sessions: Any, *, subject: str | None = None, start: float | None = None, end: float | None = None
) -> list[dict[str, Any]]:
    W = T.MaintenanceWindow
    q = select(W)
    if subject:
        q = q.where(col(W.subject) == subject)
    if start is not None:
        q = q.where(col(W.end_ts) > start)
    if end is not None:
        q = q.where(col(W.start_ts) < end)
    async with sessions() as s:
        rows = (await s.execute(q.order_by(col(W.start_ts), col(W.id)))).scalars().all()
    return [row_dict(r) for r in rows]


async def list_policies(sessions: Any, name: str = "default") -> list[dict[str, Any]]:
    P = T.DeductionPolicyRecord
    async with sessions() as s:
        rows = (await s.execute(select(P).where(col(P.name) == name).order_by(col(P.version)))).scalars().all()
    return [row_dict(r) for r in rows]


def ticket_dict(t: Ticket) -> dict[str, Any]:
    d = asdict(t)
    d["status"] = str(t.status)
    return d


async def list_tickets(
    sessions: Any,
    *,
    status: str | None = None,
    station: str | None = None,
    vendor: str | None = None,
    channel: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Tickets newest first, filtered; `station`/`vendor` match the ID."""
    F = T.FaultTicket
    q = select(F)
    if status:
        q = q.where(col(F.status) == status)
    if station:
        q = q.where(col(F.station_id) == station)
    if vendor:
        q = q.where(col(F.vendor_id) == vendor)
    if channel:
        q = q.where(col(F.channel_id) == channel)
    async with sessions() as s:
        rows = (await s.execute(q.order_by(col(F.since_ts).desc(), F.id).limit(limit))).scalars().all()
    return [row_dict(r) for r in rows]


async def ticket_detail(sessions: Any, ticket: str, *, vendor: str | None = None) -> dict[str, Any] | None:
    """One ticket with its full history, or None (also for another vendor's ticket)."""
    async with sessions() as s:
        row = await s.get(T.FaultTicket, ticket)
        if row is None or (vendor is not None and row.vendor_id != vendor):
            return None
        H = T.TicketHistory
        hist = (
            (await s.execute(select(H).where(col(H.ticket_id) == ticket).order_by(col(H.ts), col(H.id))))
            .scalars()
            .all()
        )
    out = row_dict(row)
    out["history"] = [row_dict(h) for h in hist]
    return out


async def stations(sessions: Any) -> list[dict[str, Any]]:
    async with sessions() as s:
        rows = (await s.execute(select(T.PoliceStation).order_by(T.PoliceStation.id))).scalars().all()
    return [row_dict(r) for r in rows]


def feedback_steps(
    current: dict[str, Any], cause: str, expected: float | None, actual: float | None
) -> list[tuple[str, dict[str, Any]]]:
    """The workflow actions a vendor's feedback means for a ticket in its current state.

    An answer (cause, expected repair) is possible until the repair; after it, or with an actual
    repair time, the cause travels with the repair step. Applied with `service.ticket_steps`
    (one transaction: all or nothing).
    """
    steps: list[tuple[str, dict[str, Any]]] = []
    if (cause or expected is not None) and current["status"] != "repaired":
        steps.append(("answer", {"cause": cause or current["vendor_cause"], "expected_repair_ts": expected}))
    if actual is not None:
        steps.append(("repair", {"repaired_ts": actual, "cause": cause or None}))
    elif current["status"] == "repaired" and cause:
        steps.append(("repair", {"repaired_ts": current["repaired_ts"] or current["recovered_ts"], "cause": cause}))
    return steps
