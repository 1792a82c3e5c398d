"""The shared objects HTTP handlers reach, stored on the aiohttp app under one AppKey.

Typed by protocols so interfaces (api, console) never import adapters (architecture.md §2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from gateway.api.auth import TokenStore
from gateway.config import Settings
from gateway.health.metrics import Metrics
from gateway.health.recorder import HealthRecorder
from gateway.media.hub import StreamHub
from gateway.store.devices import DeviceRepository
from whitelist.admission import Admission

if TYPE_CHECKING:
    from gateway.api.reports import ReportsRuntime


class LiveDevices(Protocol):
    """What the device adapter tells the API about live devices."""

    def live_view(self, device_id: str) -> dict[str, Any] | None: ...

    async def sync_catalog(self, device_id: str) -> Any: ...

    async def refresh_device_info(self, device_id: str) -> Any: ...

    async def device_status(self, device_id: str) -> Any: ...

    def drop_device(self, device_id: str, cause: Any = ...) -> bool: ...

    async def device_control(self, channel_id: str, fields: dict[str, str]) -> int: ...


@dataclass(slots=True)
class Services:
    settings: Settings
    repo: DeviceRepository
    tokens: TokenStore
    live: LiveDevices | None = None
    admission: Admission | None = None
    metrics: Metrics | None = None
    streams: StreamHub | None = None
    health: HealthRecorder | None = None
    reports: ReportsRuntime | None = None
    components: Mapping[str, str] = field(default_factory=dict)  # name → "ok" or what is wrong, read per request
    clock: Callable[[], float] = time.time  # wall clock (unix seconds): "today", ticket and import times
    extra: Mapping[str, Any] = field(default_factory=dict)


SERVICES = web.AppKey("services", Services)
