"""Token authentication middleware and the `require(roles...)` decorator."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.api.auth import PLAY_PREFIX, Principal, Role
from gateway.api.errors import ApiError
from gateway.api.services import SERVICES

PRINCIPAL = web.RequestKey("principal", Principal)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


LIVE_PREFIX = "/live/"


def bearer(request: web.Request) -> str | None:
    """The Authorization bearer; `?token=` only on stream URLs (/live/…), which players open
    without headers. Elsewhere a query token would end up in shell history, logs and referrers."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    if request.path.startswith(LIVE_PREFIX):
        return request.query.get("token") or None
    return None


def _play_allows(path: str, channel: str) -> bool:
    return not channel or path.startswith((f"{LIVE_PREFIX}{channel}.", f"{LIVE_PREFIX}{channel}/"))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/") and "token" in request.query:
        raise ApiError(400, "token_in_query", "?token= is accepted only on /live/… stream URLs; send "
                       "Authorization: Bearer <token> (or get a play token: POST /api/v1/play-tokens)",
                       field="token")
    token = bearer(request)
    if token:
        tokens = request.app[SERVICES].tokens
        if token.startswith(PLAY_PREFIX):
            # play tokens open streams only, and only the channel they were issued for
            play = tokens.resolve_play(token) if request.path.startswith(LIVE_PREFIX) else None
            if play is not None and _play_allows(request.path, play[1]):
                request[PRINCIPAL] = play[0]
        else:
            principal = await tokens.resolve(token)
            if principal is not None:
                request[PRINCIPAL] = principal
    return await handler(request)


def principal_of(request: web.Request) -> Principal:
    p: Principal | None = request.get(PRINCIPAL)
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
