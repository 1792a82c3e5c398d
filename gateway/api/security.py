"""Token authentication middleware and the `require(roles...)` decorator."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.api.auth import Principal, Role
from gateway.api.errors import ApiError
from gateway.services import SERVICES

PRINCIPAL = web.RequestKey("principal", Principal)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.query.get("token") or None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = bearer(request)
    if token:
        principal = await request.app[SERVICES].tokens.resolve(token)
        if principal is not None:
            request[PRINCIPAL] = principal
    return await handler(request)


def principal_of(request: web.Request) -> Principal:
    p = request.get(PRINCIPAL)
    if p is None:
        raise ApiError(401, "unauthorized", "a valid bearer token is required")
    return p


def require(*roles: str) -> Callable[[Handler], Handler]:
    """Allow the handler only for tokens with one of `roles` (admin always allowed)."""
    allowed = {Role(r) for r in roles} | {Role.ADMIN}

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def inner(request: web.Request, *args: Any) -> web.StreamResponse:
            p = principal_of(request)
            if p.role not in allowed:
                raise ApiError(403, "forbidden", f"role {p.role.value} may not do this")
            return await handler(request, *args)

        inner.__gbgate_roles__ = frozenset(r.value for r in allowed)  # type: ignore[attr-defined]  # for OpenAPI
        return inner

    return wrap
