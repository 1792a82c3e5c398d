"""Worker processes (SIP workers, media workers): the stop signals they leave to main, and how
main reaps them.

Main stops its workers in order — it closes their links (or says "stop") and waits — so a worker
must not die first of a signal meant for the whole process group: Ctrl-C in a terminal, `timeout`,
systemd stopping the service's cgroup. A worker killed that way made main log a crash and start
it again in the middle of shutting down.
"""

from __future__ import annotations

import asyncio
import signal

GRACE = 5.0  # seconds a worker gets to exit after its link closed, before it is killed


def leave_stop_signals_to_main() -> None:
    """In a worker: ignore SIGINT and SIGTERM (main stops us; SIGKILL still works)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


async def reap(proc: asyncio.subprocess.Process, grace: float = GRACE) -> None:
    """Wait for our child `proc` to exit, killing it (by its handle) after `grace` seconds."""
    if proc.returncode is not None:
        return
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def reap_all(procs: list[asyncio.subprocess.Process | None]) -> None:
    """`reap` them all at once: hung workers cost one grace period, not one each in turn."""
    await asyncio.gather(*(reap(p) for p in procs if p is not None))
