"""What adapters need from the rest of the gateway, as protocols (architecture.md rule 9).

Adapters import cores (sip, gb, media) and the whitelist; everything with I/O beyond the
network (store, health ledger) reaches them through these protocols, wired in gateway/app/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Protocol


class Inventory(Protocol):
    """Device and channel records (batched writes; never per keepalive)."""

    def update_device(self, device_id: str, **values: Any) -> None: ...

    def add_event(self, device_id: str, kind: str, ts: float, **detail: Any) -> None: ...

    def update_alarm(self, device_id: str, kind: str, first_ts: float, **detail: Any) -> None:
        """Merge `detail` (count, last) into the alarm event written at `first_ts`."""
        ...

    def all_channels(self) -> Awaitable[Mapping[str, Mapping[str, Any]]]: ...

    def save_binding(self, device_id: str, **values: Any) -> None:
        """Persist a registration binding (issue 16 #1); times as epoch seconds."""
        ...

    def delete_binding(self, device_id: str) -> None: ...

    def bindings(self) -> Awaitable[list[dict[str, Any]]]: ...

    def apply_catalog(
        self, device_id: str, added: Iterable[Any], updated: Iterable[Any], removed: Iterable[str], exposed: set[str]
    ) -> Awaitable[None]: ...

    def apply_nodes(self, device_id: str, items: Iterable[Any], complete: bool) -> Awaitable[None]:
        """Store the catalog's org nodes (regions, 215 groups, 216 organisations) apart from channels."""
        ...

    def set_channel_status(self, device_id: str, statuses: Mapping[str, str]) -> Awaitable[None]:
        """Set stored channels' catalog status ("ON"/"OFF") from a Catalog NOTIFY."""
        ...


class HealthSink(Protocol):
    """The durable health ledger: one event per state change of a subject."""

    def set_state(
        self, subject: str, state: str, cause: str, ts: float, evidence: Mapping[str, Any] | None = None
    ) -> Awaitable[None] | None:
        """Record a state; returns an awaitable that resolves once durable, or None if unchanged."""
        ...


class Source(Protocol):
    """A kind of outside system that provides channels (GB device, GB platform, RTSP)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
