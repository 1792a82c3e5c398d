"""/api/v1/devices: the device and channel inventory, with live presence from memory."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.api.errors import ApiError
from gateway.api.security import require
from gateway.api.services import SERVICES
from gateway.gb.ids import is_valid_id
from gateway.gb.tree import TreeItem, build_tree, count_channels

routes = web.RouteTableDef()
READERS = ("integrator", "security", "ops", "platform", "admin")


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat()
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def device_json(row: Any, live: dict[str, Any] | None, channels: int) -> dict[str, Any]:
    online = bool(live and live["online"])
    return {
        "id": row.id,
        "name": row.name,
        "online": online,
        "registered": live is not None,
        "transport": live["transport"] if live else row.transport,
        "remote": live["remote"] if live else (f"{row.remote_host}:{row.remote_port}" if row.remote_host else None),
        "last_keepalive": _iso(live["last_keepalive"] if live and live["last_keepalive"] else row.last_keepalive),
        "registered_at": _iso(live["registered_at"] if live else row.registered_at),
        "manufacturer": row.manufacturer,
        "model": row.model,
        "firmware": row.firmware,
        "user_agent": row.user_agent,
        "site": row.site_id,
        "link": row.link_id,
        "channels": channels,
    }


def channel_json(c: Any) -> dict[str, Any]:
    return {
        "device_id": c.device_id,
        "channel_id": c.channel_id,
        "name": c.name,
        "manufacturer": c.manufacturer,
        "model": c.model,
        "status": c.status,
        "address": c.address,
        "civil_code": c.civil_code,
        "parent_id": c.parent_id,
        "ptz_type": c.ptz_type,
        "longitude": c.longitude,
        "latitude": c.latitude,
        "first_seen": _iso(c.first_seen),
        "updated_at": _iso(c.updated_at),
    }


def _device_id(request: web.Request) -> str:
    device_id = request.match_info["device_id"]
    if not is_valid_id(device_id):
        raise ApiError(400, "invalid_id", "device ID must be exactly 20 digits", field="device_id")
    return device_id


@routes.get("/api/v1/devices")
@require(*READERS)
async def list_devices(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    rows = await svc.repo.list_devices()
    counts = await svc.repo.channel_counts()
    online = request.query.get("online")
    out = []
    for row in rows:
        live = svc.live.live_view(row.id) if svc.live else None
        item = device_json(row, live, counts.get(row.id, 0))
        if online is not None and item["online"] != (online.lower() in ("1", "true", "yes")):
            continue
        out.append(item)
    return web.json_response({"devices": out, "count": len(out)})


@routes.get("/api/v1/devices/{device_id}")
@require(*READERS)
async def get_device(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    device_id = _device_id(request)
    row = await svc.repo.get_device(device_id)
    if row is None:
        raise ApiError(404, "not_found", f"device {device_id} is not known", field="device_id")
    counts = await svc.repo.channel_counts()
    live = svc.live.live_view(device_id) if svc.live else None
    body = device_json(row, live, counts.get(device_id, 0))
    body["events"] = [
        {"ts": _iso(e.ts), "kind": e.kind, "detail": e.detail} for e in await svc.repo.events(device_id, 50)
    ]
    return web.json_response(body)


@routes.get("/api/v1/devices/{device_id}/channels")
@require(*READERS)
async def device_channels(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    device_id = _device_id(request)
    if await svc.repo.get_device(device_id) is None:
        raise ApiError(404, "not_found", f"device {device_id} is not known", field="device_id")
    channels = await svc.repo.list_channels(device_id)
    return web.json_response({"device_id": device_id, "channels": [channel_json(c) for c in channels]})


@routes.get("/api/v1/devices/{device_id}/tree")
@require(*READERS)
async def device_tree(request: web.Request) -> web.Response:
    """The catalog tree of a device (a lower platform's groups and organisations, channels as
    leaves with status; channels over max_channels appear with `exposed: false`)."""
    svc = request.app[SERVICES]
    device_id = _device_id(request)
    row = await svc.repo.get_device(device_id)
    if row is None:
        raise ApiError(404, "not_found", f"device {device_id} is not known", field="device_id")
    nodes = [
        TreeItem(id=n.node_id, kind=n.kind, name=n.name, parent_id=n.parent_id or None,
                 business_group_id=n.business_group_id or None, civil_code=n.civil_code or None)
        for n in await svc.repo.list_nodes(device_id)
    ]
    channels = [
        TreeItem(id=c.channel_id, kind="channel", name=c.name, parent_id=c.parent_id or None,
                 business_group_id=(c.extra or {}).get("business_group_id") or None,
                 civil_code=c.civil_code or None, status=c.status or None, exposed=c.exposed)
        for c in await svc.repo.list_channels(device_id, include_hidden=True)
    ]
    root = build_tree(device_id, row.name, nodes, channels)
    return web.json_response({"device_id": device_id, "nodes": len(nodes), "channels": count_channels(root),
                              "tree": root.as_dict()})


@routes.post("/api/v1/devices/{device_id}/catalog")
@require("integrator", "ops", "admin")
async def refresh_catalog(request: web.Request) -> web.Response:
    """Query the catalog now (on demand) and return the resulting channel list."""
    svc = request.app[SERVICES]
    device_id = _device_id(request)
    if svc.live is None or svc.live.live_view(device_id) is None:
        raise ApiError(409, "offline", f"device {device_id} is not registered", field="device_id")
    try:
        result = await svc.live.sync_catalog(device_id)
    except Exception as exc:
        raise ApiError(504, "device_timeout", str(exc)) from None
    channels = await svc.repo.list_channels(device_id)
    return web.json_response(
        {
            "device_id": device_id,
            "complete": result.complete,
            "sum_num": result.sum_num,
            "channels": [channel_json(c) for c in channels],
        }
    )


@routes.get("/api/v1/devices/{device_id}/status")
@require(*READERS)
async def device_status(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    device_id = _device_id(request)
    if svc.live is None or svc.live.live_view(device_id) is None:
        raise ApiError(409, "offline", f"device {device_id} is not registered", field="device_id")
    try:
        st = await svc.live.device_status(device_id)
    except Exception as exc:
        raise ApiError(504, "device_timeout", str(exc)) from None
    return web.json_response(
        {
            "device_id": device_id,
            "online": st.online,
            "status": st.status,
            "encode": st.encode,
            "record": st.record,
            "device_time": st.device_time,
        }
    )


@routes.get("/api/v1/alarms")
@require("security", "ops")
async def alarms(request: web.Request) -> web.Response:
    """Security alarms, newest first: cloned/swapped cameras, binding mismatches, lockouts."""
    svc = request.app[SERVICES]
    try:
        limit = min(max(int(request.query.get("limit", "200")), 1), 5000)
    except ValueError:
        raise ApiError(400, "invalid_value", "limit must be an integer", field="limit") from None
    rows = await svc.repo.alarms(limit)
    return web.json_response(
        {"alarms": [{"ts": _iso(e.ts), "device_id": e.device_id, "kind": e.kind, "detail": e.detail} for e in rows]}
    )
