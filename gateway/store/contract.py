"""SQLModel tables for contract data, fault tickets, deduction policies and the health ledger.

Issue 5 §3-§6. Inventory (sites, links, devices, channels) lives in `gateway.store.models`; the
tables here refer to it by plain indexed strings rather than foreign keys so that contract data
can be imported before a camera has ever registered (the contract comes first, the camera later).

Conventions: money is `Decimal` (Numeric(12, 2), yuan); instants are unix seconds as float
(`*_ts`, millisecond-exact, the same clock as the health timeline); calendar dates are `date`.
"""

from __future__ import annotations

import time
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> float:
    return time.time()


def _money(**kw: Any) -> Any:
    return Field(default=Decimal("0"), max_digits=12, decimal_places=2, **kw)


class Vendor(SQLModel, table=True):
    """A company that rents cameras, maintains a self-built system, or provides fibre links."""

    __tablename__ = "vendor"
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    kind: str = Field(default="rental", max_length=32)  # rental | maintenance | fibre | other
    contact: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=64)
    webhook_url: str = Field(default="", max_length=400)  # DingTalk/WeCom robot for notices
    created_ts: float = Field(default_factory=_now)


class RentalBatch(SQLModel, table=True):
    """Cameras rented from a vendor in one tender, e.g. "Kehai 2016, 300 channels"."""

    __tablename__ = "rental_batch"
    id: str = Field(primary_key=True, max_length=64)
    vendor_id: str = Field(foreign_key="vendor.id", index=True, max_length=64)
    name: str = Field(default="", max_length=200)
    year: int
    channel_count: int
    monthly_rent_per_channel: Decimal = _money()
    policy_name: str = Field(default="default", max_length=64)
    start_date: date | None = None
    end_date: date | None = None


class MaintenanceContract(SQLModel, table=True):
    """A maintenance contract for a self-built (police-owned) system."""

    __tablename__ = "maintenance_contract"
    id: str = Field(primary_key=True, max_length=64)
    vendor_id: str = Field(foreign_key="vendor.id", index=True, max_length=64)
    name: str = Field(default="", max_length=200)
    system: str = Field(default="", max_length=200)
    channel_count: int = 0
    monthly_fee: Decimal = _money()
    policy_name: str = Field(default="default", max_length=64)
    start_date: date | None = None
    end_date: date | None = None


class FibreLink(SQLModel, table=True):
    """A leased fibre link: who provides it, what it costs a month, which site it serves."""

    __tablename__ = "fibre_link"
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=200)
    provider: str = Field(default="", max_length=200)
    vendor_id: str | None = Field(default=None, foreign_key="vendor.id", max_length=64)
    site_id: str = Field(default="", index=True, max_length=64)
    monthly_fee: Decimal = _money()
    bandwidth_mbps: int | None = None
    policy_name: str = Field(default="default", max_length=64)


class PoliceStation(SQLModel, table=True):
    """A police station (派出所): receives the daily fault notice for its jurisdiction."""

    __tablename__ = "police_station"
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    contact: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=64)
    webhook_url: str = Field(default="", max_length=400)


class StationChannel(SQLModel, table=True):
    """Jurisdiction history: which station a channel belonged to, from when until when.

    `channel_contract.station_id` is the current value; this table keeps the past so a notice or
    reconciliation for an earlier day goes to the station responsible then.
    """

    __tablename__ = "station_channel"
    id: int | None = Field(default=None, primary_key=True)
    station_id: str = Field(foreign_key="police_station.id", index=True, max_length=64)
    channel_id: str = Field(index=True, min_length=20, max_length=20)
    valid_from_ts: float = 0.0
    valid_to_ts: float | None = None


class ChannelContract(SQLModel, table=True):
    """What a channel is under contract: batch or maintenance contract, vendor, link, station, site."""

    __tablename__ = "channel_contract"
    channel_id: str = Field(primary_key=True, min_length=20, max_length=20)
    device_id: str = Field(default="", index=True, max_length=20)
    name: str = Field(default="", max_length=200)
    site_id: str = Field(default="", index=True, max_length=64)
    owner: str = Field(default="", max_length=200)
    vendor_id: str = Field(foreign_key="vendor.id", index=True, max_length=64)
    batch_id: str | None = Field(default=None, foreign_key="rental_batch.id", max_length=64)
    maintenance_contract_id: str | None = Field(default=None, foreign_key="maintenance_contract.id", max_length=64)
    link_id: str | None = Field(default=None, foreign_key="fibre_link.id", index=True, max_length=64)
    station_id: str | None = Field(default=None, foreign_key="police_station.id", index=True, max_length=64)
    admitted_ts: float | None = None  # expected time starts here (contract.md)
    retired_ts: float | None = None


class FaultTicket(SQLModel, table=True):
    """One fault of one channel, from the ledger's first fault instant to the station's confirmation."""

    __tablename__ = "fault_ticket"
    id: str = Field(primary_key=True, max_length=32)  # e.g. T20261127-0001
    channel_id: str = Field(index=True, max_length=20)
    station_id: str | None = Field(default=None, index=True, max_length=64)
    vendor_id: str = Field(index=True, max_length=64)
    fault: str = Field(max_length=32)  # offline | no_video | picture_fault
    cause: str = Field(default="", max_length=200)  # from the ledger (keepalive_lost, blur, ...)
    since_ts: float = Field(index=True)
    opened_ts: float = Field(default_factory=_now)
    status: str = Field(default="open", index=True, max_length=32)
    vendor_cause: str = Field(default="", max_length=400)
    expected_repair_ts: float | None = None
    repaired_ts: float | None = None
    recovered_ts: float | None = None  # when the ledger saw the channel healthy again
    confirmed_ts: float | None = None
    dispute_reason: str = Field(default="", max_length=400)
    updated_ts: float = Field(default_factory=_now)


class TicketHistory(SQLModel, table=True):
    """Every action taken on a ticket, never rewritten."""

    __tablename__ = "ticket_history"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: str = Field(foreign_key="fault_ticket.id", index=True, max_length=32)
    ts: float = Field(default_factory=_now)
    actor: str = Field(default="", max_length=200)
    action: str = Field(max_length=32)
    from_status: str = Field(max_length=32)
    to_status: str = Field(max_length=32)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class DeductionPolicyRecord(SQLModel, table=True):
    """A version of a named deduction policy; the body is `gateway.reports.deductions` JSON."""

    __tablename__ = "deduction_policy"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(default="default", max_length=64)
    version: int
    effective_from: date
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_ts: float = Field(default_factory=_now)

    __table_args__ = (UniqueConstraint("name", "version", name="uq_deduction_policy_version"),)


class MaintenanceWindow(SQLModel, table=True):
    """A declared maintenance window for a channel, device, site or link (never billed)."""

    __tablename__ = "maintenance_window"
    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(index=True, max_length=100)  # channel:<id> | device:<id> | site:<id> | link:<id>
    start_ts: float
    end_ts: float
    reason: str = Field(default="", max_length=400)
    declared_by: str = Field(default="", max_length=200)
    created_ts: float = Field(default_factory=_now)


class HealthEvent(SQLModel, table=True):
    """One ledger transition copied from the journal; `event_id` makes the copy idempotent."""

    __tablename__ = "health_event"
    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, max_length=100)
    subject: str = Field(max_length=100)
    ts: float
    state: str = Field(max_length=16)
    cause: str = Field(default="", max_length=200)
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))

    __table_args__ = (Index("ix_health_event_subject_ts", "subject", "ts"), Index("ix_health_event_ts", "ts"))


class IssuedReport(SQLModel, table=True):
    """A report of a closed period as issued (issue 11.9): frozen, re-issued only explicitly.

    `report` is the computed report (tables as JSON) every download renders from, so files are
    byte-identical; `policy_*` and `inputs` (counts and a SHA-256 of the events, contract,
    maintenance windows and policy used) record what it was computed from. A re-issue adds a row
    with the next `revision`, who asked for it and why: the rows are the audit trail.
    """

    __tablename__ = "issued_report"
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    period: str = Field(max_length=16)
    station: str = Field(default="", max_length=200)
    group_by: str = Field(default="channel", max_length=16)
    revision: int = 1
    issued_ts: float = Field(default_factory=_now)
    issued_by: str = Field(default="", max_length=200)
    reason: str = Field(default="", max_length=500)
    policy_name: str = Field(default="", max_length=64)
    policy_version: int = 0
    policy_body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    inputs: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))

    __table_args__ = (
        UniqueConstraint("kind", "period", "station", "group_by", "revision", name="uq_issued_report_revision"),
    )
