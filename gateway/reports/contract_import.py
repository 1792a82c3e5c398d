"""Import contract data from CSV or XLSX, validated row by row, all or nothing (issue 5 §3).

`parse_rows(kind, filename, data, known=...)` is pure: it reads the file, checks every row and
either returns clean values or raises ImportValidationError listing every bad (line, field) —
line 1 is the header, so the numbers match what the user sees in Excel. `apply_import` then
writes the clean rows in one transaction (upsert by primary key); nothing is written when any row
is bad.

Headers may be the English keys or the Chinese labels ops use in their spreadsheets (通道编码,
厂商编号, ...). Kinds: vendors, batches, maintenance_contracts, links, stations, channels, and
jurisdiction (channel_id → station_id from a time: moves a contracted channel to a station).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.reports.errors import ImportValidationError, RowError

GB_ID = re.compile(r"^\d{20}$")
SHORT_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_ROWS = 200_000


def _text(v: str) -> str:
    return v


def _short_id(v: str) -> str:
    if not SHORT_ID.match(v):
        raise ValueError("expected 1-64 letters, digits, '_', '-' or '.'")
    return v


def _gb_id(v: str) -> str:
    if not GB_ID.match(v):
        raise ValueError("expected a 20-digit GB/T 28181 ID")
    return v


def _int(v: str) -> int:
    if not re.fullmatch(r"\d{1,9}", v):
        raise ValueError("expected a whole number ≥ 0")
    return int(v)


def _year(v: str) -> int:
    n = _int(v)
    if not 1990 <= n <= 2100:
        raise ValueError("expected a year between 1990 and 2100")
    return n


def _money(v: str) -> Decimal:
    try:
        d = Decimal(v.replace(",", ""))
    except InvalidOperation:
        raise ValueError("expected an amount such as 1200.50") from None
    if not d.is_finite() or d < 0 or d.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("expected an amount ≥ 0 with at most 2 decimals")
    return d


def _date(v: str) -> date:
    try:
        return date.fromisoformat(v)
    except ValueError:
        raise ValueError("expected a date YYYY-MM-DD") from None


def _ts(v: str) -> float:
    """Local date-time `YYYY-MM-DD HH:MM[:SS]` (UTC+8) or unix seconds."""
    from gateway.health.timeline import UTC8

    if re.fullmatch(r"\d{9,11}(\.\d+)?", v):
        return float(v)
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError("expected a time YYYY-MM-DD HH:MM") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC8)).timestamp()


@dataclass(slots=True, frozen=True)
class FieldSpec:
    name: str
    parse: Callable[[str], Any] = _text
    required: bool = False
    ref: str | None = None  # kind whose IDs this field must name
    aliases: tuple[str, ...] = ()


F = FieldSpec
SCHEMAS: dict[str, tuple[FieldSpec, ...]] = {
    "vendors": (
        F("id", _short_id, True, aliases=("厂商编号",)),
        F("name", required=True, aliases=("厂商名称", "名称")),
        F("kind", aliases=("类型",)),
        F("contact", aliases=("联系人",)),
        F("phone", aliases=("电话",)),
        F("webhook_url"),
    ),
    "batches": (
        F("id", _short_id, True, aliases=("批次编号",)),
        F("vendor_id", _short_id, True, "vendors", ("厂商编号",)),
        F("name", aliases=("批次名称",)),
        F("year", _year, True, aliases=("年份",)),
        F("channel_count", _int, True, aliases=("路数",)),
        F("monthly_rent_per_channel", _money, True, aliases=("每路月租",)),
        F("policy_name"),
        F("start_date", _date),
        F("end_date", _date),
    ),
    "maintenance_contracts": (
        F("id", _short_id, True),
        F("vendor_id", _short_id, True, "vendors", ("厂商编号",)),
        F("name"),
        F("system", aliases=("系统",)),
        F("channel_count", _int),
        F("monthly_fee", _money, True, aliases=("月费",)),
        F("policy_name"),
        F("start_date", _date),
        F("end_date", _date),
    ),
    "links": (
        F("id", _short_id, True, aliases=("链路编号",)),
        F("name", aliases=("链路名称",)),
        F("provider", aliases=("运营商",)),
        F("vendor_id", _short_id, ref="vendors"),
        F("site_id", _short_id, aliases=("场所编号",)),
        F("monthly_fee", _money, True, aliases=("月租",)),
        F("bandwidth_mbps", _int),
        F("policy_name"),
    ),
    "stations": (
        F("id", _short_id, True, aliases=("派出所编号",)),
        F("name", required=True, aliases=("派出所", "名称")),
        F("contact", aliases=("联系人",)),
        F("phone", aliases=("电话",)),
        F("webhook_url"),
    ),
    "channels": (
        F("channel_id", _gb_id, True, aliases=("通道编码",)),
        F("device_id", _gb_id, aliases=("设备编码",)),
        F("name", aliases=("名称",)),
        F("site_id", _short_id, aliases=("场所编号",)),
        F("owner", aliases=("产权单位",)),
        F("vendor_id", _short_id, True, "vendors", ("厂商编号",)),
        F("batch_id", _short_id, ref="batches", aliases=("批次编号",)),
        F("maintenance_contract_id", _short_id, ref="maintenance_contracts"),
        F("link_id", _short_id, ref="links", aliases=("链路编号",)),
        F("station_id", _short_id, ref="stations", aliases=("派出所编号",)),
        F("admitted_ts", _ts, aliases=("接入时间",)),
        F("retired_ts", _ts),
    ),
    # a channel moving to another station's jurisdiction (the history is kept in station_channel)
    "jurisdiction": (
        F("channel_id", _gb_id, True, "channels", ("通道编码",)),
        F("station_id", _short_id, True, "stations", ("派出所编号",)),
        F("valid_from_ts", _ts, aliases=("valid_from", "生效时间")),
    ),
}
KEY_FIELD = {kind: spec[0].name for kind, spec in SCHEMAS.items()}


def read_table(filename: str, data: bytes) -> list[tuple[int, list[str]]]:
    """(line number, cells) for every row of a CSV (UTF-8, BOM optional) or the first XLSX sheet."""
    if filename.lower().endswith(".xlsx"):
        from openpyxl import load_workbook

        try:
            ws = load_workbook(io.BytesIO(data), read_only=True, data_only=True).worksheets[0]
        except Exception as exc:  # openpyxl raises many kinds on a damaged file
            raise ImportValidationError([RowError(0, "file", f"not a readable XLSX workbook: {exc}")]) from None
        out = []
        for i, row in enumerate(ws.iter_rows(values_only=True), start=1):
            out.append((i, ["" if v is None else _cell_text(v) for v in row]))
        return out
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportValidationError([RowError(0, "file", f"not UTF-8 text (save as CSV UTF-8): {exc}")]) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, start = [], 1
    for cells in reader:
        rows.append((start, cells))
        start = reader.line_num + 1
    return rows


def _cell_text(v: Any) -> str:
    if isinstance(v, datetime):
        if v.hour == v.minute == v.second == v.microsecond == 0:
            return v.date().isoformat()  # Excel stores dates as midnight datetimes
        return v.isoformat(sep=" ")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def parse_rows(
    kind: str, filename: str, data: bytes, *, known: Mapping[str, set[str]] | None = None
) -> list[dict[str, Any]]:
    """Validated rows of `kind`; raises ImportValidationError naming every bad line and field.

    `known` holds the IDs already in the database per kind (for references such as vendor_id).
    """
    if kind not in SCHEMAS:
        raise ImportValidationError([RowError(0, "kind", f"unknown kind {kind!r}: one of {', '.join(SCHEMAS)}")])
    spec = SCHEMAS[kind]
    rows = [(n, cells) for n, cells in read_table(filename, data) if any(c.strip() for c in cells)]
    if not rows:
        raise ImportValidationError([RowError(1, "header", "the file is empty")])
    if len(rows) > MAX_ROWS + 1:
        raise ImportValidationError([RowError(MAX_ROWS + 2, "file", f"more than {MAX_ROWS} rows")])
    header_line, header = rows[0]
    names = {f.name: f for f in spec}
    for f in spec:
        for alias in f.aliases:
            names[alias] = f
    columns: list[FieldSpec | None] = []
    errors: list[RowError] = []
    for cell in header:
        col = names.get(cell.strip())
        if cell.strip() and col is None:
            errors.append(RowError(header_line, cell.strip(), "unknown column"))
        columns.append(col)
    present = {f.name for f in columns if f}
    for f in spec:
        if f.required and f.name not in present:
            errors.append(RowError(header_line, f.name, "required column missing"))
    if errors:
        raise ImportValidationError(errors)
    known = known or {}
    key = KEY_FIELD[kind]
    seen: dict[str, int] = {}
    out = []
    for line, cells in rows[1:]:
        record: dict[str, Any] = {}
        for col, raw in zip(columns, cells, strict=False):
            if col is None:
                continue
            value = raw.strip()
            if not value:
                if col.required:
                    errors.append(RowError(line, col.name, "required"))
                record[col.name] = None
                continue
            try:
                record[col.name] = col.parse(value)
            except ValueError as exc:
                errors.append(RowError(line, col.name, f"{exc}: {value!r}"))
        for f in spec:
            if f.required and f.name not in record and not any(e.line == line and e.field == f.name for e in errors):
                errors.append(RowError(line, f.name, "required"))
        k = record.get(key)
        if isinstance(k, str):
            if k in seen:
                errors.append(RowError(line, key, f"duplicate of line {seen[k]}"))
            seen[k] = line
        out.append((line, record))
    own_ids = set(seen)
    for line, record in out:
        for f in spec:
            ref_value = record.get(f.name)
            if f.ref and isinstance(ref_value, str):
                pool = known.get(f.ref, set()) | (own_ids if f.ref == kind else set())
                if ref_value not in pool:
                    errors.append(RowError(line, f.name, f"unknown {f.ref[:-1]} {ref_value!r}"))
        if kind == "channels" and record.get("batch_id") and record.get("maintenance_contract_id"):
            errors.append(RowError(line, "maintenance_contract_id", "a channel is rented or maintained, not both"))
        for lo, hi in (("start_date", "end_date"), ("admitted_ts", "retired_ts")):
            a, b = record.get(lo), record.get(hi)
            if a is not None and b is not None and b < a:
                errors.append(RowError(line, hi, f"before {lo}"))
    if errors:
        errors.sort(key=lambda e: (e.line, e.field))
        raise ImportValidationError(errors)
    return [{k: v for k, v in record.items()} for _, record in out]


async def apply_import(session: Any, kind: str, rows: list[dict[str, Any]], *, now: float) -> int:
    """Upsert validated rows in the caller's transaction (commit or roll back as one).

    For channels, a change of station closes the previous jurisdiction row and opens a new one.
    Returns the number of rows written.
    """

    from gateway.store import contract as tables

    if kind == "jurisdiction":
        for row in rows:
            await _move_channel(session, row["channel_id"], row["station_id"], row.get("valid_from_ts") or now)
        await session.flush()
        return len(rows)
    model = {
        "vendors": tables.Vendor,
        "batches": tables.RentalBatch,
        "maintenance_contracts": tables.MaintenanceContract,
        "links": tables.FibreLink,
        "stations": tables.PoliceStation,
        "channels": tables.ChannelContract,
    }[kind]
    key = KEY_FIELD[kind]
    for row in rows:
        values = {k: v for k, v in row.items() if v is not None}
        existing = await session.get(model, row[key])
        if kind == "channels":
            old_station = existing.station_id if existing else None
            new_station = row.get("station_id")
            if new_station != old_station:
                await _set_jurisdiction(session, row[key], new_station or None, now)
        if existing is None:
            session.add(model(**values))
        else:
            for k, v in values.items():
                setattr(existing, k, v)
    await session.flush()
    return len(rows)


async def _move_channel(session: Any, channel_id: str, station_id: str, since: float) -> None:
    """Set a contracted channel's station from `since`, closing its previous jurisdiction row."""
    from gateway.store import contract as tables

    existing = await session.get(tables.ChannelContract, channel_id)
    if existing is None or existing.station_id == station_id:
        return
    await _set_jurisdiction(session, channel_id, station_id, since)
    existing.station_id = station_id


async def _set_jurisdiction(session: Any, channel_id: str, station_id: str | None, since: float) -> None:
    """From `since` the channel belongs to `station_id` (None: to no station).

    The history stays a sequence of non-overlapping rows with valid_from ≤ valid_to (issue 11.9:
    the old code closed the open row at `since` even when it began later, giving valid_to <
    valid_from): rows that begin at or after `since` are superseded and removed, a row running
    past `since` is closed there, and the new row opens at `since`.
    """
    from sqlmodel import select

    from gateway.store import contract as tables

    res = await session.execute(select(tables.StationChannel).where(tables.StationChannel.channel_id == channel_id))
    for hist in res.scalars():
        if hist.valid_from_ts >= since:
            await session.delete(hist)
        elif hist.valid_to_ts is None or hist.valid_to_ts > since:
            hist.valid_to_ts = since
    if station_id:
        session.add(tables.StationChannel(station_id=station_id, channel_id=channel_id, valid_from_ts=since))
