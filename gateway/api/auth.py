"""Bearer tokens and roles for the HTTP API.

Only the SHA-256 of a token is stored; lookups compare hashes, which are not secret-dependent
in timing the way a stored plain token compared byte by byte would be.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.store.models import ApiToken


class Role(StrEnum):
    INTEGRATOR = "integrator"
    SECURITY = "security"
    OPS = "ops"
    PLATFORM = "platform"
    VENDOR = "vendor"
    ADMIN = "admin"


ALL_ROLES = frozenset(Role)


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    name: str
    scope: str = ""

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.name or 'token'}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "gbg_" + secrets.token_urlsafe(32)


class TokenStore:
    """Creates tokens and resolves them to principals (cached in memory)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: dict[str, Principal | None] = {}

    async def create(self, role: Role, name: str = "", scope: str = "") -> str:
        token = new_token()
        async with self._sessions() as session, session.begin():
            session.add(ApiToken(token_hash=hash_token(token), role=role.value, name=name, scope=scope))
        return token

    async def resolve(self, token: str) -> Principal | None:
        digest = hash_token(token)
        if digest in self._cache:
            return self._cache[digest]
        async with self._sessions() as session:
            row = (await session.execute(select(ApiToken).where(ApiToken.token_hash == digest))).scalars().first()
        principal = None
        if row is not None and row.revoked_at is None:
            principal = Principal(Role(row.role), row.name, row.scope)
        if len(self._cache) > 10_000:
            self._cache.clear()
        if principal is not None:
            self._cache[digest] = principal
        return principal
