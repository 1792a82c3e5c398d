"""Live streams: GET /live/{channel_id}.flv (HTTP-FLV, or WS-FLV on a WebSocket upgrade) and the
per-stream statistics under /api/v1/streams (issue 4 §4–5; contract.md "Live streams").

`services.streams` is the StreamHub. With media workers (`services.extra["media_workers"]`,
issue 15) a GB channel's viewer is checked here (token, role, channel ID) and its connection is
then handed to the worker owning the stream, which writes the response: no byte of video passes
through this process. Failures carry the INVITE trace so the caller sees why
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


def _workers(request: web.Request) -> Any:
    return request.app[SERVICES].extra.get("media_workers")


class HandedOver(web.StreamResponse):
    """The viewer's connection now belongs to a media worker: aiohttp writes nothing more on it."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


async def hand_over(request: web.Request, workers: Any, channel_id: str, websocket: bool) -> web.StreamResponse:
    """Send the accepted socket to the owning worker (SCM_RIGHTS) and forget it here."""
    facts: dict[str, Any] = {"peer": request.remote}
    if websocket:
        key = request.headers.get("Sec-WebSocket-Key", "")
        if request.headers.get("Sec-WebSocket-Version") != "13" or not key:
            raise ApiError(400, "bad_websocket_request", "expected a WebSocket version 13 upgrade")
        facts["ws_key"] = key
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if transport is None or sock is None or transport.is_closing():
        raise ApiError(400, "viewer_gone", "the viewer closed the connection")
    transport.pause_reading()  # from now on the worker reads this connection
    try:
        await workers.hand_off(channel_id, sock.fileno(), facts)
    except (StreamError, OSError) as exc:
        transport.resume_reading()
        raise ApiError(503, "media_worker_unavailable", str(exc)) from None
    request.protocol.force_close()  # closes only this process's descriptor of the connection
    return HandedOver()


@routes.get(r"/live/{channel_id:[^{}/.]+}.flv")
@require(*VIEWERS)
async def live_flv(request: web.Request) -> web.StreamResponse:
    websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    workers = _workers(request)
    if workers is not None:
        channel_id = _channel(request)
        if workers.serves(channel_id):
            return await hand_over(request, workers, channel_id, websocket)
    sub = await subscribe(request, FLV)
    if websocket:
        return await serve_ws_flv(request, sub)
    return await serve_http_flv(request, sub)


@routes.get("/api/v1/streams")
@require(*VIEWERS)
async def list_streams(request: web.Request) -> web.Response:
    hub = _hub(request)
    streams = hub.snapshot()
    gauges = hub.gauges()
    workers = _workers(request)
    if workers is not None:  # the workers' streams; the main hub's feed of the same channel is left out
        theirs = await workers.snapshot()
        keys = {s["channel_id"] for s in theirs}
        streams = [s for s in streams if s["channel_id"] not in keys] + theirs
        gauges = {"streams": len(streams), "viewers": sum(s["viewers"] for s in streams)}
    # the gauges first: their "streams" (a count) must not replace the list (it did before issue 15)
    return web.json_response({**gauges, "streams": streams, "count": len(streams)})


@routes.get("/api/v1/streams/{channel_id}")
@require(*VIEWERS)
async def get_stream(request: web.Request) -> web.Response:
    hub = _hub(request)
    channel_id = _channel(request)
    workers = _workers(request)
    if workers is not None and workers.serves(channel_id):
        snap, last = await workers.snapshot(channel_id)
    else:
        snap, last = hub.snapshot(channel_id), None
    if snap is None:
        last = last or hub.last_failure(channel_id)
        raise ApiError(404, "stream_not_open", f"no open stream for {channel_id}", field="channel_id",
                       **({"last": last} if last else {}))
    return web.json_response(snap)
