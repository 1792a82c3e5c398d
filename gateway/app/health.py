"""The health planes: the recorder every other plane reports to (entered before SIP, left after
it, so devices going offline at shutdown are still journalled), and the watchers that run on top
of the live node (picture probes, the ledger scheduler, heap housekeeping), entered last."""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.app.status import alive
from gateway.config import Settings
from gateway.health.journal import Journal
from gateway.health.probe_runner import ProbeRunner
from gateway.health.recorder import HealthRecorder
from gateway.media.hub import StreamHub
from gateway.reports.notice import make_scheduler
from gateway.reports.scheduler import Scheduler
from gateway.store.health_events import SqlHealthEvents
from gateway.tasks import TaskSet


@asynccontextmanager
async def health_plane(settings: Settings, sessions: Any) -> AsyncIterator[HealthRecorder]:
    """The journal and the ledger recorder; on exit every subject becomes `unknown` and is flushed."""
    s = settings
    journal = Journal(s.health.journal_path, fsync_interval=min(s.health.fsync_interval, 1.0))
    health = HealthRecorder(
        journal,
        SqlHealthEvents(sessions),
        heartbeat_path=Path(s.health.journal_path).with_name("heartbeat"),
        silent_after=s.sip.keepalive_interval * s.sip.keepalive_timeout_count,  # issue 11.1
    )
    await health.start()
    try:
        yield health
    finally:
        await health.stop()


def journal_status(health: HealthRecorder) -> str:
    return alive(health.running)


@dataclass(slots=True)
class MonitorPlane:
    prober: ProbeRunner
    scheduler: Scheduler

    def scheduler_status(self) -> str:
        return alive(self.scheduler.running)


@asynccontextmanager
async def monitor_plane(settings: Settings, sessions: Any, hub: StreamHub, health: HealthRecorder,
                        clock: Callable[[], float]) -> AsyncIterator[MonitorPlane]:
    """Picture probes over the live streams, the ledger scheduler, and heap housekeeping."""
    prober = ProbeRunner(hub, health, interval=settings.health.probe_interval, clock=clock)
    scheduler = make_scheduler(sessions, settings, clock=clock)
    housekeeping = TaskSet("housekeeping")
    await prober.start()
    try:
        await scheduler.start()
        try:
            housekeeping.spawn(_trim_heap(), name="memory")
            try:
                yield MonitorPlane(prober, scheduler)
            finally:
                await housekeeping.close()
        finally:
            await scheduler.stop()
    finally:
        await prober.stop()


async def _trim_heap(interval: float = 120.0) -> None:
    """Give freed heap back to the OS now and then: a registration storm of thousands of devices
    leaves glibc arenas full of free chunks that would otherwise stay in RSS for good."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to do
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(libc.malloc_trim, 0)
