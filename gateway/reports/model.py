"""Plain values the report arithmetic works on (no database types: the store is read elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal


@dataclass(slots=True, frozen=True)
class ChannelInfo:
    """A channel with everything a report row needs about its contract."""

    channel_id: str
    name: str = ""
    site: str = ""
    owner: str = ""
    link: str = ""
    vendor: str = ""
    batch: str = ""
    station: str = ""
    device_id: str = ""
    maintenance_contract: str = ""
    admitted_ts: float | None = None  # expected time starts here
    retired_ts: float | None = None
    #: under a contract row: expected to register, so never hearing from it is a fault (issue 11.2)
    contracted: bool = False


@dataclass(slots=True, frozen=True)
class BatchInfo:
    id: str
    vendor: str
    year: int
    channel_count: int
    monthly_rent_per_channel: Decimal
    name: str = ""
    policy_name: str = "default"
    start_date: date | None = None  # contract dates of the batch
    end_date: date | None = None


@dataclass(slots=True, frozen=True)
class LinkInfo:
    id: str
    name: str = ""
    provider: str = ""
    site: str = ""
    monthly_fee: Decimal = Decimal("0")
    policy_name: str = "default"


@dataclass(slots=True, frozen=True)
class ContractData:
    """Names and money for a report: channels plus the lookup tables their IDs point into."""

    channels: tuple[ChannelInfo, ...]
    batches: dict[str, BatchInfo] = field(default_factory=dict)
    links: dict[str, LinkInfo] = field(default_factory=dict)
    vendors: dict[str, str] = field(default_factory=dict)  # id → name
    stations: dict[str, str] = field(default_factory=dict)  # id → name
    sites: dict[str, str] = field(default_factory=dict)  # id → name
    maintenance_fees: dict[str, Decimal] = field(default_factory=dict)  # contract id → monthly fee/channel
    #: channel id → its jurisdiction history, (valid_from, valid_to or None, station id) rows
    jurisdiction: dict[str, tuple[tuple[float, float | None, str], ...]] = field(default_factory=dict)

    def as_of(self, ts: float) -> ContractData:
        """The contract with each channel's station as it was at `ts` (issue 11.9: a sheet for an
        earlier date goes to the station responsible then). A channel whose history does not
        cover `ts` keeps its current station."""
        if not self.jurisdiction:
            return self
        channels = []
        for ch in self.channels:
            station = ch.station
            for a, b, sid in self.jurisdiction.get(ch.channel_id, ()):
                if a <= ts and (b is None or ts < b):
                    station = sid
                    break
            channels.append(ch if station == ch.station else replace(ch, station=station))
        return replace(self, channels=tuple(channels))

    def rent_of(self, ch: ChannelInfo) -> Decimal:
        """Monthly rent (or maintenance fee) of one channel, 0 when not known."""
        if ch.batch and ch.batch in self.batches:
            return self.batches[ch.batch].monthly_rent_per_channel
        return self.maintenance_fees.get(ch.maintenance_contract, Decimal("0"))
