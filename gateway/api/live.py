"""Live streams: GET /live/{channel_id}.flv (HTTP-FLV, or WS-FLV on a WebSocket upgrade) and the
per-stream statistics under /api/v1/streams (issue 4 §4–5; contract.md "Live streams").

`services.streams` is the StreamHub. Failures carry the INVITE trace so the caller sees why
there is no stream: unknown channel 404, device offline/unregistered 409, not admitted 403,
device refused 502, nothing within media.invite_timeout 504.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.errors import ApiError
from gateway.api.security import require
from gateway.api.services import SERVICES
from gateway.media.errors import StreamError
from gateway.media.fanout import FLV
from gateway.outputs.flv_http import serve_http_flv, serve_ws_flv

routes = web.RouteTableDef()
VIEWERS = ("platform", "ops", "security", "integrator", "admin")


def _hub(request: web.Request) -> Any:
    hub = request.app[SERVICES].streams
    if hub is None:
        raise ApiError(503, "media_unavailable", "the media plane is not running")
    return hub


def _channel(request: web.Request) -> str:
    channel_id = request.match_info["channel_id"]
    if not (len(channel_id) == 20 and channel_id.isascii() and channel_id.isdigit()):
        raise ApiError(404, "channel_not_found", f"{channel_id!r} is not a 20-digit channel ID", field="channel_id")
    return channel_id


async def subscribe(request: web.Request, kind: str) -> Any:
    """A hub subscription or the ApiError saying why not (with the trace)."""
    hub = _hub(request)
    try:
        return await hub.subscribe(_channel(request), kind)
    except StreamError as exc:
        raise ApiError(exc.status, exc.code, str(exc), trace=exc.trace) from None


@routes.get(r"/live/{channel_id:[^{}/.]+}.flv")
@require(*VIEWERS)
async def live_flv(request: web.Request) -> web.StreamResponse:
    websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    sub = await subscribe(request, FLV)
    if websocket:
        return await serve_ws_flv(request, sub)
    return await serve_http_flv(request, sub)


@routes.get("/api/v1/streams")
@require(*VIEWERS)
async def list_streams(request: web.Request) -> web.Response:
    hub = _hub(request)
    streams = hub.snapshot()
    return web.json_response({"streams": streams, "count": len(streams), **hub.gauges()})


@routes.get("/api/v1/streams/{channel_id}")
@require(*VIEWERS)
async def get_stream(request: web.Request) -> web.Response:
    hub = _hub(request)
    channel_id = _channel(request)
    snap = hub.snapshot(channel_id)
    if snap is None:
        last = hub.last_failure(channel_id)
        raise ApiError(404, "stream_not_open", f"no open stream for {channel_id}", field="channel_id",
                       **({"last": last} if last else {}))
    return web.json_response(snap)
