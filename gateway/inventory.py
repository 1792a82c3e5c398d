"""The device adapter's view of the store (adapters.base.Inventory) over DeviceRepository."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from gateway.gb.items import CatalogItem
from gateway.store.devices import DeviceRepository, make_catalog_job


class StoreInventory:
    def __init__(self, repo: DeviceRepository) -> None:
        self.repo = repo

    def update_device(self, device_id: str, **values: Any) -> None:
        self.repo.update_device(device_id, **values)

    def add_event(self, device_id: str, kind: str, ts: float, **detail: Any) -> None:
        self.repo.add_event(device_id, kind, ts, **detail)

    async def known_channels(self, device_id: str) -> Mapping[str, CatalogItem]:
        # No flush needed: catalog writes go through the same batched writer, which writes
        # device rows before jobs in every batch.
        out: dict[str, CatalogItem] = {}
        for row in await self.repo.list_channels(device_id, include_hidden=True):
            try:
                out[row.channel_id] = CatalogItem(**row.extra)
            except TypeError:
                out[row.channel_id] = CatalogItem(device_id=row.channel_id, name=row.name)
        return out

    async def all_channels(self) -> Mapping[str, Mapping[str, CatalogItem]]:
        """Every device's channels (removed ones excluded), for the adapter's in-memory diff."""
        out: dict[str, dict[str, CatalogItem]] = {}
        for row in await self.repo.list_channels(None, include_hidden=True):
            try:
                item = CatalogItem(**row.extra)
            except TypeError:
                item = CatalogItem(device_id=row.channel_id, name=row.name)
            out.setdefault(row.device_id, {})[row.channel_id] = item
        return out

    def apply_catalog(
        self, device_id: str, added: Iterable[Any], updated: Iterable[Any], removed: Iterable[str], exposed: set[str]
    ) -> Awaitable[None]:
        """Queue the channel changes on the batched writer; the future resolves once committed."""
        return self.repo.submit(make_catalog_job(device_id, added, updated, removed, exposed))
