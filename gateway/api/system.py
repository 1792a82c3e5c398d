"""/healthz (no auth) and /metrics (Prometheus text)."""

from __future__ import annotations

from aiohttp import web

from gateway import __version__
from gateway.services import SERVICES

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    components = dict(svc.components)
    ready = all(state == "ok" for state in components.values())
    body = {"status": "ok" if ready else "degraded", "version": __version__, "components": components}
    return web.json_response(body, status=200 if ready else 503)


@routes.get("/api/v1/whoami")
async def whoami(request: web.Request) -> web.Response:
    """The caller's role and token name (the console shows it; scripts check their token)."""
    from gateway.api.security import principal_of

    p = principal_of(request)
    return web.json_response({"role": p.role.value, "name": p.name, "scope": p.scope})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    text = svc.metrics.render() if svc.metrics is not None else b""
    return web.Response(body=text, content_type="text/plain", charset="utf-8")
