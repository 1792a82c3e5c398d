"""/healthz (no auth), /metrics (Prometheus text), whoami and play tokens."""

from __future__ import annotations

from aiohttp import web

from gateway import __version__, native
from gateway.api.services import SERVICES

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    components = dict(svc.components)
    ready = all(state == "ok" for state in components.values())
    body = {"status": "ok" if ready else "degraded", "version": __version__, "components": components,
            "native": native.summary().as_json()}
    return web.json_response(body, status=200 if ready else 503)


@routes.get("/api/v1/whoami")
async def whoami(request: web.Request) -> web.Response:
    """The caller's role and token name (the console shows it; scripts check their token)."""
    from gateway.api.security import principal_of

    p = principal_of(request)
    return web.json_response({"role": p.role.value, "name": p.name, "scope": p.scope})


@routes.post("/api/v1/play-tokens")
async def play_token(request: web.Request) -> web.Response:
    """A short-lived token for a player URL (`/live/…?token=`), so the API token stays out of URLs.

    Body (optional JSON): `channel_id` (20 digits: the token opens only that channel) and `ttl`
    (seconds, 1…900, default 300). The token carries the caller's role; it works only as
    `?token=` on /live/… and dies with the gateway process."""
    from gateway.api.auth import PLAY_TTL, PLAY_TTL_MAX
    from gateway.api.errors import ApiError, json_body
    from gateway.api.security import principal_of

    p = principal_of(request)
    data = await json_body(request) if request.can_read_body else {}
    channel = data.get("channel_id") or ""
    if not isinstance(channel, str) or (channel and not (len(channel) == 20 and channel.isascii()
                                                         and channel.isdigit())):
        raise ApiError(422, "invalid_value", "must be a 20-digit channel ID", field="channel_id")
    ttl = data.get("ttl", PLAY_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= PLAY_TTL_MAX:
        raise ApiError(422, "invalid_value", f"must be a number of seconds from 1 to {int(PLAY_TTL_MAX)}",
                       field="ttl")
    token, expires = request.app[SERVICES].tokens.issue_play(p, channel_id=channel, ttl=float(ttl))
    body = {"token": token, "expires_at": expires.isoformat(), "channel_id": channel or None}
    if channel:
        body["flv_url"] = f"/live/{channel}.flv?token={token}"
        body["snapshot_url"] = f"/live/{channel}/snapshot.jpg?token={token}"
    return web.json_response(body, status=201)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    text = svc.metrics.render() if svc.metrics is not None else b""
    return web.Response(body=text, content_type="text/plain", charset="utf-8")
