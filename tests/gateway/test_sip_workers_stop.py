"""SipWorkers.stop reaps its worker processes together: hung workers cost one timeout, not one
each in turn (with two hung workers the stop took 10 s)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.app import sip_workers
from gateway.app.sip_workers import SipWorkers
from gateway.tasks import TaskSet


class HungProcess:
    """A worker process that ignores its closed link until killed."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.returncode: int | None = None
        self._killed = asyncio.Event()

    async def wait(self) -> int:
        self.log.append(f"wait {self.name}")
        await self._killed.wait()
        return -9

    def kill(self) -> None:
        self.log.append(f"kill {self.name}")
        self.returncode = -9
        self._killed.set()


async def test_hung_workers_are_waited_for_together(monkeypatch: pytest.MonkeyPatch) -> None:
    real_wait_for = asyncio.wait_for

    def short(aw: Any, timeout: float) -> Any:  # the 5 s grace, shortened for the test
        return real_wait_for(aw, min(timeout, 0.05))

    monkeypatch.setattr(sip_workers.asyncio, "wait_for", short)
    log: list[str] = []
    workers = SipWorkers.__new__(SipWorkers)  # only what stop() touches
    workers.workers = [sip_workers._Worker(1), sip_workers._Worker(2)]
    for w in workers.workers:
        w.proc = HungProcess(str(w.index), log)  # type: ignore[assignment]
    workers._tasks = TaskSet("test")
    await workers.stop()
    assert sorted(log[:2]) == ["wait 1", "wait 2"]  # both waited on before either is killed
    assert sorted(e for e in log if e.startswith("kill")) == ["kill 1", "kill 2"]
    assert all(w.proc is not None and w.proc.returncode == -9 for w in workers.workers)


async def test_a_worker_that_exits_is_not_killed() -> None:
    class Exits(HungProcess):
        async def wait(self) -> int:
            self.log.append(f"wait {self.name}")
            self.returncode = 0
            return 0

    log: list[str] = []
    await SipWorkers._reap(Exits("1", log))  # type: ignore[arg-type]
    assert log == ["wait 1"]
