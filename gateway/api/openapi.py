"""GET /api/v1/openapi.json: the OpenAPI 3.1 document, built from the live router.

Built from the routes actually registered (so it cannot drift from them): every path with its
methods, path parameters, the handler's docstring as summary, the roles the `require()`
decorator enforces, bearer auth, and the common JSON error shape.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from aiohttp import web

from gateway import __version__

routes = web.RouteTableDef()
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the request field (or line) at fault"},
            },
        }
    },
}


def _summary(handler: Any) -> str:
    doc = inspect.getdoc(handler) or ""
    return doc.strip().split("\n")[0] if doc else handler.__name__.replace("_", " ")


def build_document(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if not path or not (path.startswith(("/api/", "/live/")) or path in ("/healthz", "/metrics")):
            continue
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(path)
        ]
        clean = _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)
        for route in resource:
            method = route.method.lower()
            if method in ("head", "options", "*"):
                continue
            handler = route.handler
            roles = getattr(handler, "__gbgate_roles__", None)
            op: dict[str, Any] = {
                "summary": _summary(handler),
                "operationId": f"{method}_{getattr(handler, '__name__', 'handler')}",
                "responses": {
                    "200": {"description": "OK"},
                    "4XX": {"description": "client error", "content": {"application/json": {"schema": ERROR_SCHEMA}}},
                },
            }
            if params:
                op["parameters"] = params
            if clean not in ("/healthz",):
                op["security"] = [{"bearer": []}, {"token_query": []}]
            if roles:
                op["x-roles"] = sorted(roles)
            paths.setdefault(clean, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "gbgate", "version": __version__,
                 "description": "GB/T 28181 gateway for social-resource cameras: devices, whitelist, live streams, "
                                "health ledger and reports."},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "token_query": {"type": "apiKey", "in": "query", "name": "token"},
            },
            "schemas": {"Error": ERROR_SCHEMA},
        },
        "paths": dict(sorted(paths.items())),
    }


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """This document (no token needed: it describes the API, it holds no data)."""
    return web.json_response(build_document(request.app))
