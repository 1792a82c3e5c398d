"""Bearer tokens and roles for the HTTP API.

Only the SHA-256 of a token is stored; lookups compare hashes, which are not secret-dependent
in timing the way a stored plain token compared byte by byte would be. Tokens expire (90 days
unless created otherwise) and can be revoked; both take effect within a second.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

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


DEFAULT_TTL = timedelta(days=90)
PLAY_PREFIX = "gbp_"
PLAY_TTL = 300.0          # seconds a play token lives by default
PLAY_TTL_MAX = 900.0       # bounds how long a play token outlives a revocation of its API token
CACHE_SECONDS = 1.0      # a revocation (even by another process: the CLI) is honoured within this


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as `gbgate token list` shows it: never the token, never its hash."""

    id: int
    role: str
    name: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


def _aware(dt: datetime | None) -> datetime | None:
    return None if dt is None else (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt)


@dataclass(slots=True)
class _Cached:
    principal: Principal | None
    expires_at: datetime | None
    checked: float                     # monotonic time of the database read


class TokenStore:
    """Creates, lists and revokes tokens and resolves them to principals.

    Resolutions are cached for CACHE_SECONDS (monotonic `clock`), so a revocation or expiry takes
    effect within a second without a database read per request; `wall` gives the time expiry is
    judged against. Both are injectable for tests.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._sessions = sessions
        self._cache: dict[str, _Cached] = {}
        self._clock, self._wall = clock, wall
        self._play_key = secrets.token_bytes(32)   # per process: play tokens are short-lived anyway

    # -- play tokens ---------------------------------------------------------------------------

    def issue_play(self, principal: Principal, *, channel_id: str = "", ttl: float = PLAY_TTL) -> tuple[str, datetime]:
        """A short-lived token for a player's URL (`?token=` on /live/… only), optionally for one channel.

        Stateless: HMAC-SHA256 over (expiry, role, name, scope, channel) with a per-process key,
        so it cannot be widened, extended or moved to another channel, and dies with the process."""
        expires = self._wall() + timedelta(seconds=max(1.0, min(ttl, PLAY_TTL_MAX)))
        fields = [str(int(expires.timestamp())), principal.role.value, principal.name, principal.scope, channel_id]
        payload = "\x1f".join(fields).encode("utf-8")
        mac = hmac.new(self._play_key, payload, hashlib.sha256).digest()[:20]
        token = PLAY_PREFIX + _b64(payload) + "." + _b64(mac)
        return token, expires.replace(microsecond=0)

    def resolve_play(self, token: str) -> tuple[Principal, str] | None:
        """(principal, channel restriction or "") for a valid, unexpired play token; else None."""
        try:
            body, _, sig = token[len(PLAY_PREFIX):].partition(".")
            payload, mac = _unb64(body), _unb64(sig)
        except ValueError:
            return None
        good = hmac.new(self._play_key, payload, hashlib.sha256).digest()[:20]
        if not hmac.compare_digest(good, mac):
            return None
        parts = payload.decode("utf-8", "replace").split("\x1f")
        if len(parts) != 5 or not parts[0].isdigit() or parts[1] not in ALL_ROLES:
            return None                      # signed by us, so only a name containing \x1f gets here
        exp, role, name, scope, channel = parts
        if self._wall().timestamp() >= int(exp):
            return None
        return Principal(Role(role), name, scope), channel

    async def create(self, role: Role, name: str = "", scope: str = "",
                     expires_in: timedelta | None = DEFAULT_TTL) -> str:
        """A new token valid for `expires_in` (None: no expiry; say so deliberately)."""
        return (await self.create_with_id(role, name, scope, expires_in))[0]

    async def create_with_id(self, role: Role, name: str = "", scope: str = "",
                             expires_in: timedelta | None = DEFAULT_TTL) -> tuple[str, TokenInfo]:
        token = new_token()
        now = self._wall()
        expires = None if expires_in is None else now + expires_in
        row = ApiToken(token_hash=hash_token(token), role=role.value, name=name, scope=scope,
                       created_at=now, expires_at=expires)
        async with self._sessions() as session, session.begin():
            session.add(row)
            await session.flush()
            info = _info(row)
        return token, info

    async def list_tokens(self) -> list[TokenInfo]:
        async with self._sessions() as session:
            rows = (await session.execute(select(ApiToken).order_by(ApiToken.id))).scalars().all()  # type: ignore[arg-type]
        return [_info(r) for r in rows]

    async def revoke(self, token_id: int) -> TokenInfo | None:
        """Mark the token revoked (kept for the record); None when there is no such id."""
        async with self._sessions() as session, session.begin():
            row = await session.get(ApiToken, token_id)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = self._wall()
            info = _info(row)
        self._cache.clear()            # this process: at once; other processes: within CACHE_SECONDS
        return info

    async def resolve(self, token: str) -> Principal | None:
        digest = hash_token(token)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is None or now - hit.checked >= CACHE_SECONDS:
            async with self._sessions() as session:
                query = select(ApiToken).where(col(ApiToken.token_hash) == digest)
                row = (await session.execute(query)).scalars().first()
            principal = None
            if row is not None and row.revoked_at is None:
                principal = Principal(Role(row.role), row.name, row.scope)
            if len(self._cache) > 10_000:
                self._cache.clear()
            hit = self._cache[digest] = _Cached(principal, _aware(row.expires_at) if row else None, now)
        if hit.principal is None:
            return None
        if hit.expires_at is not None and self._wall() >= hit.expires_at:
            return None
        return hit.principal


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None


def _info(row: ApiToken) -> TokenInfo:
    assert row.id is not None
    return TokenInfo(row.id, row.role, row.name, row.scope, _aware(row.created_at) or row.created_at,
                     _aware(row.expires_at), _aware(row.revoked_at))
