"""SQLModel tables for the gateway's own inventory: sites, devices, channels, device events, API tokens.

Fibre links and contract data (vendors, batches, fees, stations, tickets, health events) live in
`gateway.store.contract`; whitelist tables live in `whitelist.store`. All share SQLModel.metadata,
so one Alembic history covers them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Site(SQLModel, table=True):
    """The owner-side location of social-resource cameras (a station operator, a mall, a school)."""

    __tablename__ = "site"
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=200)
    owner: str = Field(default="", max_length=200)
    kind: str = Field(default="rental", max_length=32)  # rental | self_built | company
    address: str = Field(default="", max_length=400)
    created_at: datetime = Field(default_factory=utcnow)


class Device(SQLModel, table=True):
    """A GB/T 28181 device (IPC, NVR, lower platform) as last registered.

    `last_keepalive` is written on state changes and at shutdown only: keepalives never write
    to the database (architecture.md §5); live values come from the registry in memory.
    """

    __tablename__ = "device"
    id: str = Field(primary_key=True, min_length=20, max_length=20)
    name: str = Field(default="", max_length=200)
    site_id: str | None = Field(default=None, max_length=64)
    link_id: str | None = Field(default=None, max_length=64)
    online: bool = False
    transport: str = Field(default="udp", max_length=8)
    remote_host: str = Field(default="", max_length=64)
    remote_port: int = 0
    contact: str = Field(default="", max_length=400)
    expires: int = 0
    user_agent: str = Field(default="", max_length=200)
    manufacturer: str = Field(default="", max_length=200)
    model: str = Field(default="", max_length=200)
    firmware: str = Field(default="", max_length=200)
    charset: str = Field(default="GB2312", max_length=16)
    stream_mode: str | None = Field(default=None, max_length=16)
    channel_count: int = 0
    registered_at: datetime | None = None
    last_keepalive: datetime | None = None
    first_admitted_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Channel(SQLModel, table=True):
    """A video channel of a device; keyed by (device_id, channel_id) since channel IDs repeat (§1.6)."""

    __tablename__ = "channel"
    device_id: str = Field(primary_key=True, foreign_key="device.id", max_length=20)
    channel_id: str = Field(primary_key=True, max_length=20)
    name: str = Field(default="", max_length=200)
    manufacturer: str = Field(default="", max_length=200)
    model: str = Field(default="", max_length=200)
    owner: str = Field(default="", max_length=200)
    civil_code: str = Field(default="", max_length=20)
    address: str = Field(default="", max_length=400)
    parent_id: str = Field(default="", max_length=64)
    status: str = Field(default="", max_length=16)
    ptz_type: int | None = None
    longitude: float | None = None
    latitude: float | None = None
    exposed: bool = True  # False when beyond the whitelist entry's max_channels
    extra: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    first_seen: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    removed_at: datetime | None = None

    __table_args__ = (Index("ix_channel_channel_id", "channel_id"),)


class CatalogNode(SQLModel, table=True):
    """An organisation node of a device's catalog (region, business group 215, virtual organisation
    216, a device or sub-platform): kept apart from channels, never playable, never counted against
    max_channels; only the catalog tree (GET /api/v1/devices/{id}/tree) reads it."""

    __tablename__ = "catalog_node"
    device_id: str = Field(primary_key=True, foreign_key="device.id", max_length=20)
    node_id: str = Field(primary_key=True, max_length=20)
    kind: str = Field(default="", max_length=20)
    name: str = Field(default="", max_length=200)
    parent_id: str = Field(default="", max_length=200)
    business_group_id: str = Field(default="", max_length=64)
    civil_code: str = Field(default="", max_length=20)
    extra: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class DeviceEvent(SQLModel, table=True):
    """A state change of a device: registered, unregistered, keepalive lost, catalog changed, refused."""

    __tablename__ = "device_event"
    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(index=True, max_length=20)
    ts: datetime = Field(default_factory=utcnow, index=True)
    kind: str = Field(max_length=32)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class DeviceBinding(SQLModel, table=True):
    """A device's live registration binding (issue 16 #1): written on every accepted REGISTER,
    deleted when the registration ends, so a restarted gateway accepts the device's keepalives
    from exactly this address until `expires_at` without waiting for it to register again."""

    __tablename__ = "device_binding"
    device_id: str = Field(primary_key=True, min_length=20, max_length=20)
    transport: str = Field(max_length=8)
    host: str = Field(max_length=64)
    port: int
    contact: str = Field(default="", max_length=400)
    call_id: str = Field(default="", max_length=200)
    realm: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=200)
    registered_at: datetime
    expires_at: datetime = Field(index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A bearer token for the HTTP API; only its SHA-256 is stored. Refused once revoked or expired."""

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, max_length=64)
    role: str = Field(max_length=16)
    name: str = Field(default="", max_length=200)
    scope: str = Field(default="", max_length=200)  # e.g. a vendor id for vendor-scoped tokens
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    expires_at: datetime | None = None  # None: never (tokens made before expiry existed)
