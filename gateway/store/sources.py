"""Pull sources (RTSP/RTMP/file, issue 14 #3): the integrator's channel ID → URL table.

The URL is stored without credentials (whitelist.pull.parse_source_url splits them off); the
username is stored as is, the password only sealed with the node secret (gateway.store.sealed), so
neither a database dump nor any listing shows it. `SourceRecord` is the plain value the rest of
the gateway sees; `public_dict()` is what API/CLI/audit may show (URL redacted: user:***@).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel

from gateway.errors import GbgateError
from gateway.store.models import utcnow
from gateway.store.sealed import Sealer
from whitelist.pull import redact_parts


class SourceError(GbgateError):
    """A source change refused: `status`/`code` for the API, `field` names the culprit."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field


class PullMode(StrEnum):
    ON_DEMAND = "on_demand"   # opened by the first viewer, closed after the hub's linger
    ALWAYS_ON = "always_on"   # held open by the source supervisor


class PullSourceRow(SQLModel, table=True):
    """One pull source; `secret` is the sealed password ("" when the URL had none)."""

    __tablename__ = "pull_source"
    channel_id: str = Field(primary_key=True, min_length=20, max_length=20)
    url: str = Field(max_length=1000)
    username: str = Field(default="", max_length=200)
    secret: str = Field(default="", max_length=1000)
    mode: str = Field(default=PullMode.ON_DEMAND.value, max_length=16)
    name: str = Field(default="", max_length=200)
    site: str = Field(default="", max_length=64)
    enabled: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRecord:
    channel_id: str
    url: str                      # bare: no credentials
    username: str = ""
    password: str = field(default="", repr=False)
    mode: PullMode = PullMode.ON_DEMAND
    name: str = ""
    site: str = ""
    enabled: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def always_on(self) -> bool:
        return self.mode is PullMode.ALWAYS_ON

    def redacted_url(self) -> str:
        return redact_parts(self.url, self.username, bool(self.password))

    def public_dict(self) -> dict[str, Any]:
        """Everything but the password (the URL shows user:***@ when it has one)."""
        return {"channel_id": self.channel_id, "url": self.redacted_url(), "mode": self.mode.value,
                "name": self.name, "site": self.site, "enabled": self.enabled,
                "has_password": bool(self.password),
                "created_at": self.created_at.isoformat() if self.created_at else None,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}


class SourceRepository:
    """CRUD on pull_source; seals on write, opens on read."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], sealer: Sealer) -> None:
        self.sessions = sessions
        self.sealer = sealer

    def _record(self, row: PullSourceRow) -> SourceRecord:
        return SourceRecord(channel_id=row.channel_id, url=row.url, username=row.username,
                            password=self.sealer.open(row.secret, row.channel_id), mode=PullMode(row.mode),
                            name=row.name, site=row.site, enabled=row.enabled,
                            created_at=row.created_at, updated_at=row.updated_at)

    async def list(self) -> list[SourceRecord]:
        async with self.sessions() as s:
            rows = (await s.execute(select(PullSourceRow).order_by(PullSourceRow.channel_id))).scalars()
            return [self._record(r) for r in rows]

    async def get(self, channel_id: str) -> SourceRecord | None:
        async with self.sessions() as s:
            row = await s.get(PullSourceRow, channel_id)
            return None if row is None else self._record(row)

    async def put(self, rec: SourceRecord) -> tuple[SourceRecord | None, SourceRecord]:
        """Insert or replace; returns (before, after)."""
        async with self.sessions() as s:
            row = await s.get(PullSourceRow, rec.channel_id)
            before = None if row is None else self._record(row)
            now = utcnow()
            if row is None:
                row = PullSourceRow(channel_id=rec.channel_id, url=rec.url, created_at=now)
            row.url, row.username, row.mode = rec.url, rec.username, rec.mode.value
            row.secret = self.sealer.seal(rec.password, rec.channel_id)
            row.name, row.site, row.enabled, row.updated_at = rec.name, rec.site, rec.enabled, now
            s.add(row)
            await s.commit()
            await s.refresh(row)
            return before, self._record(row)

    async def delete(self, channel_id: str) -> SourceRecord | None:
        async with self.sessions() as s:
            row = await s.get(PullSourceRow, channel_id)
            if row is None:
                return None
            before = self._record(row)
            await s.delete(row)
            await s.commit()
            return before
