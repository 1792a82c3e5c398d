"""The shared durability barrier resolves only after the fsync that covers every earlier append."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.health.journal import Journal, replay_file
from gateway.health.timeline import Event, State


def ev(i: int) -> Event:
    return Event(f"e{i}", f"channel:3402000000131000{i:04d}", 1_800_000_000.0 + i, State.online, "t", {})


async def test_barrier_covers_everything_appended_before_it(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.log", fsync_interval=0.05)
    await j.open()
    runner = asyncio.create_task(j.run())
    try:
        assert j.barrier().done()  # nothing pending: already durable
        for i in range(100):
            j.append(ev(i))
        first = j.barrier()
        assert j.barrier() is first  # one shared future per batch
        assert not first.done()
        await asyncio.wait_for(first, 2)
        assert {e.event_id for e in replay_file(tmp_path / "j.log")} == {f"e{i}" for i in range(100)}
        # an event appended while a flush may be in flight gets a barrier of its own that covers it
        j.append(ev(100))
        second = j.barrier()
        assert second is not first
        await asyncio.wait_for(second, 2)
        assert "e100" in {e.event_id for e in replay_file(tmp_path / "j.log")}
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await j.close()
