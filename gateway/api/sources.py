"""/api/v1/sources: pull sources (RTSP/RTMP/file) with an integrator-assigned GB channel ID.

`integrator` (and `security`, `admin`) may add, change and remove sources; `ops` may read. Every
change and every refusal is audited by the source admin (gateway/app/sources.py), which also
applies the pull admission: the URL's host must be whitelisted for the channel (403 otherwise).
Answers never carry a password: URLs come back as `rtsp://user:***@host/…`.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Protocol

from aiohttp import web

from gateway.api.errors import ApiError, json_body
from gateway.api.security import principal_of, require
from gateway.api.services import SERVICES
from gateway.store.sources import SourceError, SourceRecord

routes = web.RouteTableDef()
MAX_IMPORT_ROWS = 5000


class SourceAdmin(Protocol):
    async def list(self) -> list[SourceRecord]: ...

    async def get(self, channel_id: str) -> SourceRecord | None: ...

    async def add(self, channel_id: str, url: str, *, actor: str, mode: str = ..., name: str = ..., site: str = ...,
                  enabled: bool = ...) -> SourceRecord: ...

    async def remove(self, channel_id: str, *, actor: str) -> SourceRecord: ...


def _admin(request: web.Request) -> SourceAdmin:
    admin = request.app[SERVICES].extra.get("sources")
    if admin is None:
        raise ApiError(503, "sources_unavailable", "pull sources are not running on this node")
    return admin  # type: ignore[no-any-return]


def _error(exc: SourceError) -> ApiError:
    return ApiError(exc.status, exc.code, str(exc), field=exc.field)


def _str(data: dict[str, Any], name: str, default: str = "") -> str:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(422, "invalid_value", "must be a string", field=name)
    return value


@routes.get("/api/v1/sources")
@require("integrator", "security", "ops")
async def list_sources(request: web.Request) -> web.Response:
    """Pull sources (URLs redacted)."""
    sources = await _admin(request).list()
    return web.json_response({"sources": [s.public_dict() for s in sources], "count": len(sources)})


@routes.get("/api/v1/sources/{channel_id}")
@require("integrator", "security", "ops")
async def get_source(request: web.Request) -> web.Response:
    """One pull source (URL redacted)."""
    rec = await _admin(request).get(request.match_info["channel_id"])
    if rec is None:
        raise ApiError(404, "not_found", "no such pull source", field="channel_id")
    return web.json_response(rec.public_dict())


@routes.post("/api/v1/sources")
@require("integrator", "security")
async def add_source(request: web.Request) -> web.Response:
    """Add or change a pull source: {channel_id, url, mode (on_demand|always_on), name, site, enabled}."""
    p = principal_of(request)
    data = await json_body(request)
    admin = _admin(request)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ApiError(422, "invalid_value", "must be true or false", field="enabled")
    channel_id = _str(data, "channel_id")
    existed = await admin.get(channel_id) is not None
    try:
        rec = await admin.add(channel_id, _str(data, "url"), actor=p.actor, mode=_str(data, "mode", "on_demand"),
                              name=_str(data, "name"), site=_str(data, "site"), enabled=enabled)
    except SourceError as exc:
        raise _error(exc) from None
    return web.json_response(rec.public_dict(), status=200 if existed else 201)


@routes.delete("/api/v1/sources/{channel_id}")
@require("integrator", "security")
async def remove_source(request: web.Request) -> web.Response:
    """Remove a pull source (its stream ends)."""
    p = principal_of(request)
    try:
        rec = await _admin(request).remove(request.match_info["channel_id"], actor=p.actor)
    except SourceError as exc:
        raise _error(exc) from None
    return web.json_response(rec.public_dict())


@routes.post("/api/v1/sources/import")
@require("integrator", "security")
async def import_sources(request: web.Request) -> web.Response:
    """CSV import (channel_id,url,mode,name,site): each row admitted and audited alone; refusals listed."""
    p = principal_of(request)
    admin = _admin(request)
    text = (await request.read()).decode("utf-8-sig", errors="replace")
    rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) > MAX_IMPORT_ROWS:
        raise ApiError(413, "too_many_rows", f"at most {MAX_IMPORT_ROWS} rows per import")
    added: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for line, row in enumerate(rows, start=2):
        try:
            rec = await admin.add((row.get("channel_id") or "").strip(), (row.get("url") or "").strip(),
                                  actor=p.actor, mode=(row.get("mode") or "on_demand").strip(),
                                  name=(row.get("name") or "").strip(), site=(row.get("site") or "").strip())
            added.append(rec.public_dict())
        except SourceError as exc:
            errors.append({"line": line, "field": exc.field, "code": exc.code, "message": str(exc)})
    return web.json_response({"added": added, "errors": errors, "count": len(added)},
                             status=200 if not errors else 207)
