"""/api/v1/whitelist: the security team's admission controls (and integrators' proposals).

`security` (and `admin`) may add, approve, suspend, revoke and import; an `integrator` token
may only propose entries, which are stored as `pending` whatever status it asks for. Every
change goes through whitelist.store (row + audit record in one transaction) and then through
whitelist.admission so a suspended or revoked device is dropped at once.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.auth import Role
from gateway.api.errors import ApiError, json_body
from gateway.api.security import principal_of, require
from gateway.api.services import SERVICES
from whitelist.admission import Admission
from whitelist.bundle import FORMULA_PREFIXES
from whitelist.errors import BundleError, ConflictErrors, NotFoundError, ValidationError, ValidationErrors
from whitelist.model import (
    Credential,
    Entry,
    EntryStatus,
    parse_networks,
    parse_timestamp,
    validate_device_id,
)
from whitelist.ranges import parse_channel_ranges
from whitelist.store import WhitelistStore

routes = web.RouteTableDef()
_REPLY_ENTRIES = 1000        # an import reply lists at most this many stored entries (counts cover all)


def _validation(exc: ValidationError) -> ApiError:
    if isinstance(exc, ValidationErrors):
        errors = [
            {"field": e.field, "line": e.line, "message": e.message} for e in exc.errors
        ]
        first = exc.errors[0] if exc.errors else exc
        return ApiError(422, "invalid_rows", f"{len(errors)} invalid row(s); nothing was applied",
                        field=first.field, line=first.line, errors=errors)
    extra = {"line": exc.line} if exc.line is not None else {}
    return ApiError(422, "invalid_value", exc.message, field=exc.field, **extra)


def _admission(request: web.Request) -> Admission:
    """The node's admission service; a node without one (an API-only test app) answers 503."""
    admission = request.app[SERVICES].admission
    if admission is None:
        raise ApiError(503, "unavailable", "the whitelist is not configured on this node")
    return admission


def _store(request: web.Request) -> WhitelistStore:
    return _admission(request).store


def _text(data: dict[str, Any], name: str, limit: int = 200) -> str:
    value = data.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(422, "invalid_value", "must be a string", field=name)
    if len(value) > limit:
        raise ApiError(422, "invalid_value", f"must be at most {limit} characters", field=name)
    if name != "reason" and value.startswith(FORMULA_PREFIXES):
        raise ApiError(422, "invalid_value", "must not start with = + - @ TAB or CR (spreadsheet formula)",
                       field=name)
    return value


def _entry_from_request(data: dict[str, Any], realm: str, status: EntryStatus, current: Entry | None) -> Entry:
    device_id = validate_device_id(data.get("device_id"))
    password = data.get("password")
    credential = current.credential if current else None
    if password is not None:
        if not isinstance(password, str) or not password:
            raise ApiError(422, "invalid_value", "must be a non-empty string", field="password")
        credential = Credential.from_password(data.get("username") or device_id, realm, password)
    max_channels = data.get("max_channels")
    if max_channels is not None and (isinstance(max_channels, bool) or not isinstance(max_channels, int)):
        raise ApiError(422, "invalid_value", "must be an integer", field="max_channels")
    return Entry(
        device_id=device_id,
        status=status,
        credential=credential,
        allowed_sources=parse_networks(data.get("ip") or data.get("allowed_sources") or [], field="ip"),
        cert_fingerprint=data.get("cert_fingerprint"),
        expected_manufacturer=_text(data, "manufacturer") or None,
        expected_model=_text(data, "model") or None,
        expected_firmware_prefix=_text(data, "firmware_prefix") or None,
        site=_text(data, "site", 64),
        link=_text(data, "link", 64),
        owner=_text(data, "owner"),
        contract_ref=_text(data, "contract_ref"),
        name=_text(data, "name"),
        not_before=parse_timestamp(data.get("not_before"), field="not_before"),
        not_after=parse_timestamp(data.get("not_after"), field="not_after"),
        max_channels=max_channels,
        channel_ranges=parse_channel_ranges(data.get("channel_ranges")),
        evidence=dict(current.evidence) if current else {},
    )


@routes.get("/api/v1/whitelist")
@require("security", "integrator", "ops")
async def list_entries(request: web.Request) -> web.Response:
    status = request.query.get("status")
    try:
        st = EntryStatus(status) if status else None
    except ValueError:
        raise ApiError(400, "invalid_value", "status must be pending, approved, suspended or revoked",
                       field="status") from None
    entries = await _store(request).list_entries(st)
    return web.json_response({"entries": [e.public_dict() for e in entries], "count": len(entries)})


@routes.get("/api/v1/whitelist/{device_id}")
@require("security", "integrator", "ops")
async def get_entry(request: web.Request) -> web.Response:
    try:
        device_id = validate_device_id(request.match_info["device_id"])
    except ValidationError as exc:
        raise _validation(exc) from None
    entry = await _store(request).get(device_id)
    if entry is None:
        raise ApiError(404, "not_found", f"no whitelist entry for {device_id}", field="device_id")
    return web.json_response(entry.public_dict())


@routes.post("/api/v1/whitelist")
@require("security", "integrator")
async def add_entry(request: web.Request) -> web.Response:
    """Security: add/update an approved entry. Integrator: propose (stored as pending)."""
    p = principal_of(request)
    data = await json_body(request)
    svc = request.app[SERVICES]
    store = _admission(request).store
    try:
        device_id = validate_device_id(data.get("device_id"))
        current = await store.get(device_id)
        if p.role.value == "integrator":
            if current is not None and current.status is not EntryStatus.PENDING:
                raise ApiError(409, "exists", f"{device_id} is already {current.status.value}", field="device_id")
            status = EntryStatus.PENDING
        else:
            status = EntryStatus(data.get("status") or "approved")
        entry = _entry_from_request(data, svc.settings.sip.domain, status, current)
        saved = await store.save_entry(
            entry, actor=p.actor, action="propose" if status is EntryStatus.PENDING else "add",
            reason=_text(data, "reason"),
        )
    except ValidationError as exc:
        raise _validation(exc) from None
    except ValueError:
        raise ApiError(422, "invalid_value", "status must be pending, approved, suspended or revoked",
                       field="status") from None
    await _admission(request).sync()
    return web.json_response(saved.public_dict(), status=201 if current is None else 200)


async def _set_status(request: web.Request, status: EntryStatus) -> web.Response:
    p = principal_of(request)
    try:
        device_id = validate_device_id(request.match_info["device_id"])
    except ValidationError as exc:
        raise _validation(exc) from None
    reason = ""
    if request.can_read_body:
        reason = _text(await json_body(request), "reason", 400)
    try:
        entry = await _admission(request).set_status(device_id, status, actor=p.actor, reason=reason)
    except NotFoundError:
        raise ApiError(404, "not_found", f"no whitelist entry for {device_id}", field="device_id") from None
    return web.json_response(entry.public_dict())


@routes.post("/api/v1/whitelist/{device_id}/approve")
@require("security")
async def approve(request: web.Request) -> web.Response:
    return await _set_status(request, EntryStatus.APPROVED)


@routes.post("/api/v1/whitelist/{device_id}/suspend")
@require("security")
async def suspend(request: web.Request) -> web.Response:
    return await _set_status(request, EntryStatus.SUSPENDED)


@routes.post("/api/v1/whitelist/{device_id}/revoke")
@require("security")
async def revoke(request: web.Request) -> web.Response:
    return await _set_status(request, EntryStatus.REVOKED)


async def _trusted_key(request: web.Request) -> Any:
    """The policy public key from settings (whitelist.signing_pub): the only key we trust."""
    import asyncio

    from certs.errors import CertError
    from certs.signing import load_public

    path = request.app[SERVICES].settings.whitelist.signing_pub
    try:
        return await asyncio.to_thread(load_public, path)
    except CertError:
        raise ApiError(422, "no_trusted_key", "no trusted policy key is configured (whitelist.signing_pub); "
                       "signed bundles cannot be verified", field="body") from None


@routes.post("/api/v1/whitelist/import")
@require("security", "integrator")
async def import_entries(request: web.Request) -> web.Response:
    """Bulk CSV/JSON lists, or (security only) a signed policy bundle; all or nothing.

    An integrator's list only ever creates or refreshes `pending` proposals: a row naming an entry
    that is already decided refuses the whole import (409, naming the line), and policy bundles —
    which carry statuses and HA1s — are refused (403). The security role may import a bundle only
    when it is signed by the trusted policy key. The reply counts what was actually stored.
    """
    from whitelist import bundle

    p = principal_of(request)
    svc = request.app[SERVICES]
    data = await request.read()
    if not data:
        raise ApiError(400, "empty_body", "send the CSV or JSON file as the request body", field="body")
    integrator = p.role is Role.INTEGRATOR
    fmt = bundle.bundle_format(data)
    if fmt is not None and integrator:
        raise ApiError(403, "forbidden", "only the security role may import policy bundles; "
                       "send a CSV or JSON list of proposals", field="body")
    try:
        status = EntryStatus.PENDING if integrator else EntryStatus(request.query.get("status", "approved"))
    except ValueError:
        raise ApiError(400, "invalid_value", "status must be pending, approved, suspended or revoked",
                       field="status") from None
    try:
        if fmt == bundle.SIGNED_FORMAT:
            loaded = bundle.verify_signed(data, await _trusted_key(request))
        else:
            loaded = bundle.load_any(data, realm=svc.settings.sip.domain, status=status)
        if loaded.rules and integrator:
            raise ApiError(403, "forbidden", "integrators may not import range rules")
        saved = await _admission(request).store.import_entries(
            loaded.entries, p.actor, rules=loaded.rules, lines=loaded.lines,
            proposals_only=integrator or (fmt is None and status is EntryStatus.PENDING))
    except ConflictErrors as exc:
        errors = [{"field": e.field, "line": e.line, "message": e.message} for e in exc.errors]
        raise ApiError(409, "exists", f"{len(errors)} row(s) name entries already decided, first line {exc.line}: "
                       f"{exc.message}; nothing was applied",
                       field=exc.field, line=exc.line, errors=errors) from None
    except ValidationError as exc:
        raise _validation(exc) from None
    except BundleError as exc:
        raise ApiError(422, "invalid_bundle", str(exc), field="body") from None
    await _admission(request).sync()
    by_status: dict[str, int] = {}
    for e in saved:
        by_status[e.status.value] = by_status.get(e.status.value, 0) + 1
    stored = sorted(by_status)
    return web.json_response({
        "imported": len(saved), "rules": len(loaded.rules),
        "status": stored[0] if len(stored) == 1 else ("mixed" if stored else status.value),
        "by_status": by_status, "signed_by": loaded.key_id,
        "entries": [{"device_id": e.device_id, "status": e.status.value, "version": e.version}
                    for e in saved[:_REPLY_ENTRIES]],
    })


AUDIT_LIMIT_DEFAULT = 200
AUDIT_LIMIT_MAX = 1000


def _int_query(request: web.Request, name: str, default: int, low: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_value", f"{name} must be an integer", field=name) from None
    if value < low:
        raise ApiError(400, "invalid_value", f"{name} must be at least {low}", field=name)
    return value


@routes.get("/api/v1/audit")
@require("security")
async def audit(request: web.Request) -> web.Response:
    """Records after `after`, at most `limit` (1…1000; larger values are clamped to 1000).

    The chain is verified incrementally (only records appended since the last good check are
    hashed); `?verify=full` re-hashes the whole chain from seq 1."""
    store = _store(request)
    after = _int_query(request, "after", 0, 0)
    limit = min(_int_query(request, "limit", AUDIT_LIMIT_DEFAULT, 1), AUDIT_LIMIT_MAX)
    mode = request.query.get("verify", "incremental")
    if mode not in ("incremental", "full"):
        raise ApiError(400, "invalid_value", "verify must be incremental or full", field="verify")
    records = await store.audit_records(after_seq=after, limit=limit)
    verdict = await (store.verify_audit() if mode == "full" else store.verify_audit_incremental())
    return web.json_response(
        {
            "ok": verdict.ok,
            "first_bad_seq": verdict.first_bad_seq,
            "problem": verdict.problem,
            "verify": mode,
            "limit": limit,
            "records": [
                {"seq": r.seq, "ts": r.ts.isoformat(), "actor": r.actor, "action": r.action, "target": r.target,
                 "before": r.before, "after": r.after, "reason": r.reason, "hash": r.hash}
                for r in records
            ],
        }
    )


@routes.get("/api/v1/audit/{seq}/items")
@require("security")
async def audit_batch_items(request: web.Request) -> web.Response:
    """The items of one bulk record (`import_batch`): what one record per entry would have said.

    The digest is recomputed over every stored item line and compared with the one the chained
    record carries, so a page of items is never shown as trustworthy when the set was altered."""
    import json

    from whitelist.audit import BATCH_ACTION, batch_digest

    store = _store(request)
    try:
        seq = int(request.match_info["seq"])
    except ValueError:
        raise ApiError(400, "invalid_value", "seq must be an integer", field="seq") from None
    offset = _int_query(request, "offset", 0, 0)
    limit = min(_int_query(request, "limit", AUDIT_LIMIT_DEFAULT, 1), AUDIT_LIMIT_MAX)
    found = await store.audit_records(after_seq=seq - 1, limit=1) if seq >= 1 else []
    if not found or found[0].seq != seq:
        raise ApiError(404, "not_found", f"no audit record {seq}", field="seq")
    record = found[0]
    if record.action != BATCH_ACTION:
        raise ApiError(404, "not_found", f"audit record {seq} is a single change, not a batch", field="seq")
    lines = await store.batch_lines(seq)
    recorded = (record.after or {}).get("digest")
    computed = batch_digest(lines)
    return web.json_response({
        "seq": seq, "digest": recorded, "computed_digest": computed, "ok": recorded == computed,
        "total": len(lines), "offset": offset, "limit": limit,
        "items": [json.loads(line) for line in lines[offset:offset + limit]],
    })
