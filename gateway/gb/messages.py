"""MANSCDP message types (our notes §4): the root enum and the typed, decoded messages.

Plain frozen values shared by the decoder (`manscdp`) and the encoders (`builders`).
"""

from dataclasses import dataclass
from enum import StrEnum

from gateway.gb.items import CatalogItem


class Root(StrEnum):
    """MANSCDP root elements (§4.1); anything else is answered 415/400."""

    QUERY = "Query"
    CONTROL = "Control"
    NOTIFY = "Notify"
    RESPONSE = "Response"


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Notify/Keepalive (§4.3); `info_device_ids` lists faulty sub-devices from `<Info>`."""

    device_id: str
    sn: int
    status: str | None
    info_device_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CatalogPage:
    """One Response/Catalog (or Notify/Catalog) packet; `skipped` counts items without DeviceID."""

    device_id: str
    sn: int
    sum_num: int
    items: list[CatalogItem]
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Response/DeviceInfo (§4.5); everything but the envelope is optional."""

    device_id: str
    sn: int
    result: str | None
    name: str | None
    device_type: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    channel_count: int | None


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """One `Alarmstatus/Item` of a DeviceStatus response: ONDUTY / OFFDUTY / ALARM."""

    device_id: str
    duty_status: str | None


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """Response/DeviceStatus (§4.6). `online` is True for ONLINE, False for OFFLINE."""

    device_id: str
    sn: int
    result: str | None
    online: bool | None
    status: str | None
    encode: str | None
    record: str | None
    device_time: str | None
    alarms: tuple[AlarmStatus, ...] = ()
    reason: str | None = None
