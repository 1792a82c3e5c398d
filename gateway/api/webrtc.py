"""WebRTC (WHEP) and JPEG snapshot routes (issue 4 §4; contract.md "Live streams").

    POST   /live/{channel_id}/whep                   SDP offer in → 201, SDP answer, Location
    DELETE /live/{channel_id}/whep/{session_id}      end the viewer's session (200)
    OPTIONS on both                                  CORS preflight for players on other origins
    GET    /live/{channel_id}/snapshot.jpg           latest keyframe as JPEG
    GET    /api/v1/webrtc/sessions                   open WHEP sessions (ops)

`services.streams` is the StreamHub. Hub failures map exactly as for HTTP-FLV (live.subscribe):
unknown channel 404, offline 409, not admitted 403, no video in time 504, with the INVITE trace.
Token as `Authorization: Bearer` or `?token=` (browsers' WHEP clients mostly can set headers,
<img> tags cannot). Per-app state (the session registry, the snapshot cache) lives under the
`WEBRTC` AppKey; `setup_webrtc(app)` adds it with a cleanup that closes every peer connection.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.api import live
from gateway.api.errors import ApiError
from gateway.api.security import require
from gateway.api.services import SERVICES
from gateway.media.errors import StreamError
from gateway.media.fanout import FRAMES
from gateway.outputs.snapshot import SnapshotCache, SnapshotError, snapshot_from
from gateway.outputs.whep import WhepError, WhepSessions, check_offer

routes = web.RouteTableDef()
VIEWERS = live.VIEWERS
MAX_OFFER_BYTES = 64 * 1024
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link",
}


@dataclass(slots=True)
class WebrtcState:
    sessions: WhepSessions = field(default_factory=WhepSessions)
    snapshots: SnapshotCache = field(default_factory=SnapshotCache)


WEBRTC = web.AppKey("webrtc", WebrtcState)
_FALLBACK: weakref.WeakKeyDictionary[web.Application, WebrtcState] = weakref.WeakKeyDictionary()


def setup_webrtc(app: web.Application, state: WebrtcState | None = None) -> WebrtcState:
    """Add the routes, the per-app state and a cleanup closing every peer connection."""
    st = state or WebrtcState()
    app[WEBRTC] = st
    app.add_routes(routes)

    async def ctx(_: web.Application) -> Any:
        yield
        await st.sessions.close_all("shutdown")

    app.cleanup_ctx.append(ctx)
    return st


def state_of(app: web.Application) -> WebrtcState:
    st = app.get(WEBRTC)
    if st is None:  # routes added without setup_webrtc: still work, just no shutdown cleanup
        st = _FALLBACK.get(app)
        if st is None:
            st = _FALLBACK[app] = WebrtcState()
    return st


def _api_error(exc: WhepError | SnapshotError | StreamError) -> ApiError:
    if isinstance(exc, StreamError):
        return ApiError(exc.status, exc.code, str(exc), trace=exc.trace)
    return ApiError(exc.status, exc.code, str(exc))


def _stream_codec(hub: Any, channel_id: str) -> tuple[str | None, Any]:
    """The open stream's codec and last parameter sets, when the hub knows them."""
    codec, ps = None, None
    info = getattr(hub, "stream_info", None)
    if info is not None:
        codec = (info(channel_id) or {}).get("codec")
    latest = getattr(hub, "latest_keyframe", None)
    if latest is not None and (lk := latest(channel_id)) is not None:
        ps = lk[1]
        codec = codec or lk[0].codec.value
    return codec, ps


@routes.post("/live/{channel_id}/whep")
@require(*VIEWERS)
async def whep_offer(request: web.Request) -> web.Response:
    if request.content_type != "application/sdp":
        raise ApiError(415, "unsupported_media_type", "the offer must be sent as Content-Type: application/sdp",
                       field="Content-Type")
    if (request.content_length or 0) > MAX_OFFER_BYTES:
        raise ApiError(413, "offer_too_large", f"an SDP offer is at most {MAX_OFFER_BYTES} bytes")
    offer = (await request.read())[:MAX_OFFER_BYTES].decode("utf-8", "replace")
    sessions = state_of(request.app).sessions
    try:
        check_offer(offer)
        sessions.check_capacity(None)
    except WhepError as exc:
        raise _api_error(exc) from None
    sub = await live.subscribe(request, FRAMES)  # ApiError with the trace when there is no stream
    channel_id = sub.channel_id
    codec, ps = _stream_codec(request.app[SERVICES].streams, channel_id)
    try:
        session, answer = await sessions.create(channel_id, sub, offer, codec=codec, initial_ps=ps)
    except WhepError as exc:
        raise _api_error(exc) from None
    location = f"/live/{channel_id}/whep/{session.id}"
    return web.Response(status=201, text=answer, content_type="application/sdp",
                        headers={"Location": location, **CORS})


@routes.delete("/live/{channel_id}/whep/{session_id}")
@require(*VIEWERS)
async def whep_delete(request: web.Request) -> web.Response:
    sessions = state_of(request.app).sessions
    s = sessions.get(request.match_info["session_id"])
    if s is None or s.channel_id != request.match_info["channel_id"]:
        raise ApiError(404, "session_not_found", "no such WHEP session", field="session_id")
    await sessions.close(s.id, "deleted")
    return web.Response(status=200, headers=CORS)


@routes.route("OPTIONS", "/live/{channel_id}/whep")
@routes.route("OPTIONS", "/live/{channel_id}/whep/{session_id}")
async def whep_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS)


@routes.get("/live/{channel_id}/snapshot.jpg")
@require(*VIEWERS)
async def snapshot_jpg(request: web.Request) -> web.Response:
    state = state_of(request.app)
    sub = await live.subscribe(request, FRAMES)
    hub = request.app[SERVICES].streams
    timeout = float(getattr(hub, "ready_timeout", 10.0))
    try:
        snap = await snapshot_from(hub, sub.channel_id, sub, timeout=timeout, cache=state.snapshots)
    except (SnapshotError, StreamError) as exc:
        raise _api_error(exc) from None
    return web.Response(body=snap.jpeg, content_type="image/jpeg", headers={
        "Cache-Control": "no-cache, no-store", "Access-Control-Allow-Origin": "*",
        "X-Frame-Width": str(snap.width), "X-Frame-Height": str(snap.height), "X-Frame-Codec": snap.codec})


@routes.get("/api/v1/webrtc/sessions")
@require("ops", "security", "platform")
async def list_sessions(request: web.Request) -> web.Response:
    sessions = state_of(request.app).sessions
    return web.json_response({"sessions": sessions.snapshot(), "count": len(sessions.sessions),
                              "transcodes": sessions.transcodes, "counters": dict(sessions.counters)})
