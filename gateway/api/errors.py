"""JSON errors for the HTTP API: {"error": {"code", "message", "field"}} with a 4xx/5xx status."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web


class ApiError(Exception):
    """Raised by handlers; rendered by the error middleware."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        err.update(self.extra)
        return {"error": err}


def error_response(status: int, code: str, message: str, field: str | None = None, **extra: Any) -> web.Response:
    return web.json_response(ApiError(status, code, message, field, **extra).body(), status=status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, code, exc.reason)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 naming the problem."""
    try:
        data = await request.json()
    except Exception:
        raise ApiError(400, "invalid_json", "request body is not valid JSON", field="body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object", field="body")
    return data
