"""Worker processes: main reaps them together, and they leave group stop signals to main."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import processes

ROOT = Path(__file__).resolve().parents[2]


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
    """Two hung workers cost one grace period, not two in turn (the stop took 10 s)."""
    real_wait_for = asyncio.wait_for

    def short(aw: Any, timeout: float) -> Any:  # the 5 s grace, shortened for the test
        return real_wait_for(aw, min(timeout, 0.05))

    monkeypatch.setattr(processes.asyncio, "wait_for", short)
    log: list[str] = []
    procs = [HungProcess("1", log), HungProcess("2", log), None]
    await processes.reap_all(procs)  # type: ignore[arg-type]
    assert sorted(log[:2]) == ["wait 1", "wait 2"]  # both waited on before either is killed
    assert sorted(e for e in log if e.startswith("kill")) == ["kill 1", "kill 2"]


async def test_a_worker_that_exits_is_not_killed() -> None:
    class Exits(HungProcess):
        async def wait(self) -> int:
            self.log.append(f"wait {self.name}")
            self.returncode = 0
            return 0

    log: list[str] = []
    await processes.reap(Exits("1", log))  # type: ignore[arg-type]
    assert log == ["wait 1"]


async def test_a_worker_survives_the_groups_stop_signals_and_dies_of_sigkill() -> None:
    code = ("import sys, time; from gateway.processes import leave_stop_signals_to_main; "
            "leave_stop_signals_to_main(); print('ready', flush=True); time.sleep(30)")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc.send_signal(sig)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(proc.wait(), 0.5)  # still there
    proc.kill()
    assert await proc.wait() == -signal.SIGKILL
