"""The device adapter's view of the store (adapters.base.Inventory) over DeviceRepository."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.gb.items import CatalogItem
from gateway.store.devices import DeviceRepository, NodesWrite, StatusWrite, make_catalog_job


class StoreInventory:
    def __init__(self, repo: DeviceRepository) -> None:
        self.repo = repo

    def update_device(self, device_id: str, **values: Any) -> None:
        self.repo.update_device(device_id, **values)

    def add_event(self, device_id: str, kind: str, ts: float, **detail: Any) -> None:
        self.repo.add_event(device_id, kind, ts, **detail)

    def update_alarm(self, device_id: str, kind: str, first_ts: float, **detail: Any) -> None:
        self.repo.update_event(device_id, kind, first_ts, **detail)

    def save_binding(self, device_id: str, **values: Any) -> None:
        for key in ("registered_at", "expires_at"):
            values[key] = datetime.fromtimestamp(values[key], UTC)
        self.repo.save_binding(device_id, **values)

    def delete_binding(self, device_id: str) -> None:
        self.repo.delete_binding(device_id)

    async def bindings(self) -> list[dict[str, Any]]:
        """Every persisted registration binding, as plain values (times as epoch seconds)."""
        out = []
        for b in await self.repo.bindings():
            out.append({
                "device_id": b.device_id, "transport": b.transport, "host": b.host, "port": b.port,
                "contact": b.contact, "call_id": b.call_id, "realm": b.realm, "user_agent": b.user_agent,
                "registered_at": _ts(b.registered_at), "expires_at": _ts(b.expires_at),
            })
        return out

    async def all_channels(self) -> Mapping[str, Mapping[str, CatalogItem]]:
        """Every device's channels (removed ones excluded), for the adapter's in-memory diff."""
        out: dict[str, dict[str, CatalogItem]] = {}
        for row in await self.repo.list_channels(None, include_hidden=True):
            out.setdefault(row.device_id, {})[row.channel_id] = _item(row)
        return out

    async def exposed_channels(self) -> list[tuple[str, CatalogItem]]:
        """(device ID, item) of every exposed, not removed channel: what a cascade may share."""
        return [(row.device_id, _item(row)) for row in await self.repo.list_channels(None)]

    async def channel_vendors(self) -> dict[str, str]:
        """Channel ID → vendor ID (channel contracts)."""
        return await self.repo.channel_vendors()

    def apply_catalog(
        self, device_id: str, added: Iterable[Any], updated: Iterable[Any], removed: Iterable[str], exposed: set[str]
    ) -> Awaitable[None]:
        """Queue the channel changes on the batched writer; the future resolves once committed."""
        return self.repo.submit(make_catalog_job(device_id, added, updated, removed, exposed))

    def apply_nodes(self, device_id: str, items: Iterable[Any], complete: bool) -> Awaitable[None]:
        """Queue the device's org nodes (replacing them all when the catalog was complete)."""
        return self.repo.submit(NodesWrite(device_id, list(items), complete))

    def set_channel_status(self, device_id: str, statuses: Mapping[str, str]) -> Awaitable[None]:
        return self.repo.submit(StatusWrite(device_id, dict(statuses)))


def _ts(value: datetime) -> float:
    """Epoch seconds; a naive datetime (SQLite may return one) is UTC."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


def _item(row: Any) -> CatalogItem:
    """The catalog item a channel row was written from (whole item kept as JSON in `extra`)."""
    try:
        return CatalogItem(**row.extra)
    except TypeError:  # a row from before items were stored whole
        return CatalogItem(device_id=row.channel_id, name=row.name)
