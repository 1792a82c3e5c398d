"""The aiohttp application: every route table behind the error and auth middlewares."""

from __future__ import annotations

from aiohttp import web

from gateway import console
from gateway.api import devices, openapi, ptz, reports, sources, system, whitelist
from gateway.api.errors import error_middleware
from gateway.api.security import auth_middleware
from gateway.api.services import SERVICES, Services

ROUTE_TABLES: list[web.RouteTableDef] = [
    system.routes, devices.routes, ptz.routes, whitelist.routes, reports.routes, openapi.routes, console.routes,
    sources.routes,
]


def build_web_app(services: Services, extra_routes: list[web.RouteTableDef] | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=16 * 1024 * 1024)
    app[SERVICES] = services
    for table in ROUTE_TABLES + list(extra_routes or []):
        app.add_routes(table)
    return app
