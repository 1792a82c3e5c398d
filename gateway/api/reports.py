"""/api/v1 for the ledger's users: reports, contract data, maintenance windows, policy, tickets.

    GET  /api/v1/reports                       report kinds (ops)
    GET  /api/v1/reports/{kind}?period=&format=csv|xlsx|html&lang=zh-CN|en&station=&group_by=
    GET  /api/v1/contract/checks               alarms: batch over contract, dates, missing policy (ops)
    GET  /api/v1/contract/{kind}               contract rows of one kind (ops)
    POST /api/v1/contract/import?kind=         CSV or XLSX body, all or nothing (ops)
    GET  /api/v1/maintenance?subject=          declared windows (ops)
    POST /api/v1/maintenance                   {subject, start, end, reason} (ops)
    GET  /api/v1/policy                        deduction policy versions (ops)
    POST /api/v1/policy                        {effective_from, body} → a new version (ops)
    GET  /api/v1/tickets?status=&station=&vendor=&channel=   (ops; a vendor token: its own only)
    GET  /api/v1/tickets/{id}                  one ticket with its history (ops, own vendor)
    POST /api/v1/tickets/{id}/feedback         {cause, expected_repair, actual_repair} (vendor)
    POST /api/v1/tickets/{id}/confirm          (ops)
    POST /api/v1/tickets/{id}/dispute          {reason} (ops)
    POST /api/v1/channels/{id}/probe           picture-quality probe now, opening the stream (ops)

Times in bodies are unix seconds or ISO 8601 text; without an offset they are local time
(`report.timezone`). A vendor token (`gbgate token create --role vendor --scope VENDOR_ID`) sees
and answers only its vendor's tickets: another vendor's ticket is "unknown" (404), never 403,
so ticket numbers cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway.api.errors import ApiError, json_body
from gateway.api.security import principal_of, require
from gateway.api.services import SERVICES

routes = web.RouteTableDef()

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "html": "text/html; charset=utf-8",
}
TICKET_STATUSES = ("open", "vendor_answered", "recovered", "repaired", "confirmed", "disputed")
GROUPS = ("channel", "site", "link", "vendor", "batch", "station")


@dataclass(slots=True)
class ReportsRuntime:
    """What these routes need beyond `Services`: set as `services.reports` by the app."""

    sessions: Any
    prober: Any = None  # gateway.health.probe_runner.ProbeRunner
    scheduler: Any = None  # gateway.reports.scheduler.Scheduler


def _now(request: web.Request) -> float:
    """The node's wall clock (injected in Services, so tests and replays choose "now")."""
    return request.app[SERVICES].clock()


def _runtime(request: web.Request) -> ReportsRuntime:
    svc = request.app[SERVICES]
    rt = svc.reports
    if isinstance(rt, ReportsRuntime):
        return rt
    sessions = getattr(svc.repo, "_sessions", None)  # the store the device repository writes to
    if sessions is None:
        raise ApiError(503, "unavailable", "reports are not configured on this node")
    return ReportsRuntime(sessions)


def _settings(request: web.Request) -> Any:
    return request.app[SERVICES].settings


def _tz(request: web.Request) -> tzinfo:
    from gateway.reports.service import report_timezone

    return report_timezone(_settings(request).report.timezone)


def _instant(value: Any, field: str, tz: tzinfo, *, required: bool = False) -> float | None:
    """Unix seconds from a number or ISO text (local time when it has no offset)."""
    if value is None or value == "":
        if required:
            raise ApiError(422, "invalid_value", "required", field=field)
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (dt if dt.tzinfo else dt.replace(tzinfo=tz)).timestamp()
    raise ApiError(422, "invalid_value", "expected unix seconds or a time like 2026-11-27T08:30", field=field)


def _text(data: dict[str, Any], name: str, limit: int = 400) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(422, "invalid_value", "must be a string", field=name)
    if len(value) > limit:
        raise ApiError(422, "invalid_value", f"must be at most {limit} characters", field=name)
    return value.strip()


# ---------------------------------------------------------------- reports


@routes.get("/api/v1/reports")
@require("ops")
async def report_kinds(request: web.Request) -> web.Response:
    from gateway.reports.builder import KINDS

    return web.json_response({"kinds": list(KINDS), "formats": list(CONTENT_TYPES), "group_by": list(GROUPS)})


@routes.get("/api/v1/reports/{kind}")
@require("ops")
async def get_report(request: web.Request) -> web.Response:
    from gateway.reports.builder import KINDS
    from gateway.reports.errors import PeriodError, ReportError
    from gateway.reports.service import build_report

    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise ApiError(400, "invalid_value", f"unknown report kind {kind!r}: one of {', '.join(KINDS)}", field="kind")
    q = request.query
    period = q.get("period", "").strip()
    if not period:
        raise ApiError(400, "invalid_value", "period is required: 2026-11-27, 2026-11 or 2026", field="period")
    fmt = q.get("format", "csv")
    if fmt not in CONTENT_TYPES:
        raise ApiError(400, "invalid_value", "format must be csv, xlsx or html", field="format")
    lang = q.get("lang") or None
    if lang is not None and lang not in ("zh-CN", "zh", "en"):
        raise ApiError(400, "invalid_value", "lang must be zh-CN or en", field="lang")
    group_by = q.get("group_by", "channel")
    if group_by not in GROUPS:
        raise ApiError(400, "invalid_value", f"group_by must be one of {', '.join(GROUPS)}", field="group_by")
    try:
        data = await build_report(
            _runtime(request).sessions,
            _settings(request),
            kind,
            period,
            fmt=fmt,
            lang=lang,
            station=q.get("station") or None,
            group_by=group_by,
            now=_now(request),
        )
    except PeriodError as exc:
        status = 422 if "future" in str(exc) else 400
        raise ApiError(status, "invalid_period", str(exc), field="period") from None
    except ReportError as exc:
        field = "station" if str(exc).startswith("station:") else None
        raise ApiError(400, "report_failed", str(exc), field=field) from None
    name = f"gbgate-{kind}-{period}.{fmt}"
    disposition = "inline" if fmt == "html" else "attachment"
    headers = {"Content-Disposition": f"{disposition}; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"}
    resp = web.Response(body=data, headers=headers)
    resp.headers["Content-Type"] = CONTENT_TYPES[fmt]
    return resp


# ---------------------------------------------------------------- contract data


def _import_error(exc: Any) -> ApiError:
    errors = [{"line": e.line, "field": e.field, "message": e.message} for e in exc.errors]
    first = exc.errors[0]
    if first.line == 0 and first.field == "kind":
        return ApiError(400, "invalid_value", first.message, field="kind")
    return ApiError(
        422,
        "invalid_rows",
        f"{len(errors)} error(s); nothing was written",
        field=first.field,
        line=first.line,
        errors=errors,
    )


@routes.get("/api/v1/contract/checks")
@require("ops")
async def contract_checks(request: web.Request) -> web.Response:
    """Alarms from checking the live system against the contract (before /contract/{kind})."""
    from gateway.reports.service import contract_checks as checks

    alarms = await checks(_runtime(request).sessions, _settings(request), now=_now(request))
    return web.json_response({"alarms": alarms, "count": len(alarms)})


@routes.get("/api/v1/contract/{kind}")
@require("ops")
async def list_contract(request: web.Request) -> web.Response:
    from gateway.reports import records
    from gateway.reports.errors import ImportValidationError

    try:
        rows = await records.list_contract(_runtime(request).sessions, request.match_info["kind"])
    except ImportValidationError as exc:
        raise _import_error(exc) from None
    return web.json_response({"kind": request.match_info["kind"], "rows": rows, "count": len(rows)})


@routes.post("/api/v1/contract/import")
@require("ops")
async def import_contract(request: web.Request) -> web.Response:
    """CSV (UTF-8) or XLSX as the body; XLSX recognised by its zip signature or Content-Type."""
    from gateway.reports import records
    from gateway.reports.errors import ImportValidationError

    kind = request.query.get("kind", "")
    if kind not in records.CONTRACT_KINDS:
        raise ApiError(400, "invalid_value", f"kind must be one of {', '.join(records.CONTRACT_KINDS)}", field="kind")
    data = await request.read()
    if not data:
        raise ApiError(400, "empty_body", "send the CSV or XLSX file as the request body", field="body")
    xlsx = data[:4] == b"PK\x03\x04" or "spreadsheetml" in request.content_type
    try:
        count = await records.import_contract(
            _runtime(request).sessions, kind, "upload.xlsx" if xlsx else "upload.csv", data, now=_now(request)
        )
    except ImportValidationError as exc:
        raise _import_error(exc) from None
    return web.json_response({"kind": kind, "imported": count})


# ---------------------------------------------------------------- maintenance windows


@routes.get("/api/v1/maintenance")
@require("ops")
async def list_maintenance(request: web.Request) -> web.Response:
    from gateway.reports import records

    tz = _tz(request)
    q = request.query
    rows = await records.list_maintenance(
        _runtime(request).sessions,
        subject=q.get("subject") or None,
        start=_instant(q.get("from"), "from", tz),
        end=_instant(q.get("to"), "to", tz),
    )
    return web.json_response({"windows": rows, "count": len(rows)})


@routes.post("/api/v1/maintenance")
@require("ops")
async def declare_maintenance(request: web.Request) -> web.Response:
    from gateway.reports.errors import ReportError
    from gateway.reports.service import declare_maintenance as declare

    p = principal_of(request)
    data = await json_body(request)
    tz = _tz(request)
    subject = _text(data, "subject", 100)
    if not subject:
        raise ApiError(
            422, "invalid_value", "required: channel:<id>, device:<id>, site:<id> or link:<id>", field="subject"
        )
    start = _instant(data.get("start"), "start", tz, required=True)
    end = _instant(data.get("end"), "end", tz, required=True)
    assert start is not None and end is not None
    try:
        wid = await declare(
            _runtime(request).sessions,
            subject,
            start,
            end,
            reason=_text(data, "reason"),
            actor=p.actor,
            now=_now(request),
        )
    except ReportError as exc:
        field, _, message = str(exc).partition(": ")
        status, code = (409, "overlap") if "overlaps" in message else (422, "invalid_value")
        raise ApiError(status, code, str(exc), field=field if message else None) from None
    return web.json_response(
        {"id": wid, "subject": subject, "start_ts": start, "end_ts": end, "reason": _text(data, "reason")}, status=201
    )


# ---------------------------------------------------------------- deduction policy


@routes.get("/api/v1/policy")
@require("ops")
async def list_policy(request: web.Request) -> web.Response:
    from gateway.reports import records

    name = request.query.get("name", "default")
    versions = await records.list_policies(_runtime(request).sessions, name)
    today = datetime.fromtimestamp(_now(request), _tz(request)).date().isoformat()
    in_force = [v for v in versions if v["effective_from"] <= today]
    current = max(in_force, key=lambda v: (v["effective_from"], v["version"])) if in_force else None
    return web.json_response(
        {"name": name, "versions": versions, "current_version": current["version"] if current else None}
    )


@routes.post("/api/v1/policy")
@require("ops")
async def set_policy(request: web.Request) -> web.Response:
    from gateway.reports.errors import PolicyError
    from gateway.reports.service import save_policy

    data = await json_body(request)
    raw = data.get("effective_from")
    try:
        effective = date.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        effective = None
    if effective is None:
        raise ApiError(422, "invalid_value", "expected a date YYYY-MM-DD", field="effective_from")
    body = data.get("body")
    if body is None:
        body = {k: v for k, v in data.items() if k not in ("effective_from", "name")}
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_value", "must be a JSON object", field="body")
    name = _text(data, "name", 64) or "default"
    try:
        version = await save_policy(_runtime(request).sessions, body, effective_from=effective, name=name)
    except PolicyError as exc:
        raise ApiError(422, "invalid_policy", str(exc), field=exc.field) from None
    return web.json_response({"name": name, "version": version, "effective_from": effective.isoformat()}, status=201)


@routes.post("/api/v1/reports/{kind}/reissue")
@require("ops")
async def reissue(request: web.Request) -> web.Response:
    """Re-issue a frozen report of a closed period from today's data (issue 11.9): explicit,
    with a reason, recorded as the next revision with the caller as its author."""
    from gateway.reports.builder import KINDS
    from gateway.reports.errors import PeriodError, ReportError
    from gateway.reports.service import reissue_report

    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise ApiError(400, "invalid_value", f"unknown report kind {kind!r}: one of {', '.join(KINDS)}", field="kind")
    data = await json_body(request)
    period = _text(data, "period", 16)
    if not period:
        raise ApiError(422, "invalid_value", "period is required: 2026-11 or 2026", field="period")
    reason = _text(data, "reason", 500)
    if not reason:
        raise ApiError(422, "invalid_value", "a re-issue needs a reason", field="reason")
    group_by = _text(data, "group_by", 16) or "channel"
    if group_by not in GROUPS:
        raise ApiError(422, "invalid_value", f"group_by must be one of {', '.join(GROUPS)}", field="group_by")
    try:
        out = await reissue_report(
            _runtime(request).sessions,
            _settings(request),
            kind,
            period,
            actor=principal_of(request).actor,
            reason=reason,
            station=_text(data, "station", 200) or None,
            group_by=group_by,
            now=_now(request),
        )
    except PeriodError as exc:
        raise ApiError(422, "invalid_period", str(exc), field="period") from None
    except ReportError as exc:
        field = str(exc).split(":", 1)[0] if ":" in str(exc) else None
        raise ApiError(422, "report_failed", str(exc), field=field) from None
    return web.json_response(out, status=201)


# ---------------------------------------------------------------- tickets


def _vendor_scope(request: web.Request) -> str | None:
    """None for ops/admin (every ticket); the vendor id for a vendor token."""
    p = principal_of(request)
    if p.role.value != "vendor":
        return None
    if not p.scope:
        raise ApiError(403, "forbidden", "this vendor token has no vendor scope")
    return p.scope


def _ticket_error(exc: Any) -> ApiError:
    reason = getattr(exc, "reason", "invalid")
    status, code = {"not_found": (404, "not_found"), "conflict": (409, "conflict")}.get(reason, (422, "invalid_value"))
    return ApiError(status, code, str(exc), field=getattr(exc, "field", None))


@routes.get("/api/v1/tickets")
@require("ops", "vendor")
async def list_tickets(request: web.Request) -> web.Response:
    from gateway.reports import records

    q = request.query
    status = q.get("status") or None
    if status is not None and status not in TICKET_STATUSES:
        raise ApiError(400, "invalid_value", f"status must be one of {', '.join(TICKET_STATUSES)}", field="status")
    scope = _vendor_scope(request)
    vendor = q.get("vendor") or None
    if scope is not None:
        if vendor not in (None, scope):
            raise ApiError(403, "forbidden", "a vendor token sees only its own vendor's tickets", field="vendor")
        vendor = scope
    rows = await records.list_tickets(
        _runtime(request).sessions,
        status=status,
        station=q.get("station") or None,
        vendor=vendor,
        channel=q.get("channel") or None,
    )
    return web.json_response({"tickets": rows, "count": len(rows)})


@routes.get("/api/v1/tickets/{ticket_id}")
@require("ops", "vendor")
async def get_ticket(request: web.Request) -> web.Response:
    from gateway.reports import records

    tid = request.match_info["ticket_id"]
    row = await records.ticket_detail(_runtime(request).sessions, tid, vendor=_vendor_scope(request))
    if row is None:
        raise ApiError(404, "not_found", f"unknown ticket {tid!r}", field="ticket")
    return web.json_response(row)


async def _ticket_reply(
    request: web.Request, steps: list[tuple[str, dict[str, Any]]], vendor: str | None
) -> web.Response:
    from gateway.reports import records
    from gateway.reports.errors import TicketError
    from gateway.reports.service import ticket_steps

    tid = request.match_info["ticket_id"]
    sessions = _runtime(request).sessions
    try:
        await ticket_steps(sessions, tid, steps, actor=principal_of(request).actor, now=_now(request), vendor=vendor)
    except TicketError as exc:
        raise _ticket_error(exc) from None
    return web.json_response(await records.ticket_detail(sessions, tid))


@routes.post("/api/v1/tickets/{ticket_id}/feedback")
@require("vendor")
async def ticket_feedback(request: web.Request) -> web.Response:
    """The vendor's answer: cause and expected repair time, and/or the actual repair time."""
    from gateway.reports import records

    vendor = _vendor_scope(request)
    data = await json_body(request)
    tz = _tz(request)
    cause = _text(data, "cause")
    expected = _instant(data.get("expected_repair"), "expected_repair", tz)
    actual = _instant(data.get("actual_repair"), "actual_repair", tz)
    if not cause and expected is None and actual is None:
        raise ApiError(422, "invalid_value", "give the cause, expected_repair or actual_repair", field="cause")
    tid = request.match_info["ticket_id"]
    current = await records.ticket_detail(_runtime(request).sessions, tid, vendor=vendor)
    if current is None:
        raise ApiError(404, "not_found", f"unknown ticket {tid!r}", field="ticket")
    steps = records.feedback_steps(current, cause, expected, actual)
    return await _ticket_reply(request, steps, vendor)


@routes.post("/api/v1/tickets/{ticket_id}/confirm")
@require("ops")
async def ticket_confirm(request: web.Request) -> web.Response:
    return await _ticket_reply(request, [("confirm", {})], None)


@routes.post("/api/v1/tickets/{ticket_id}/dispute")
@require("ops")
async def ticket_dispute(request: web.Request) -> web.Response:
    data = await json_body(request)
    return await _ticket_reply(request, [("dispute", {"reason": _text(data, "reason")})], None)


# ---------------------------------------------------------------- picture probe


@routes.post("/api/v1/channels/{channel_id}/probe")
@require("ops")
async def probe_channel(request: web.Request) -> web.Response:
    from gateway.health.errors import ProbeError
    from gateway.media.errors import StreamError

    channel_id = request.match_info["channel_id"]
    if not (len(channel_id) == 20 and channel_id.isdigit()):
        raise ApiError(400, "invalid_value", "expected a 20-digit channel ID", field="channel_id")
    prober = _runtime(request).prober
    if prober is None:
        raise ApiError(503, "unavailable", "the picture probe is not running on this node")
    try:
        result = await prober.probe_channel(channel_id, open_stream=True)
    except StreamError as exc:
        raise ApiError(exc.status, exc.code, str(exc), field="channel_id", trace=exc.trace) from None
    except ProbeError as exc:
        raise ApiError(502, "probe_failed", str(exc), field="channel_id") from None
    return web.json_response(result.as_dict())
