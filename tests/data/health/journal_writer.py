"""Crash-test helper: append events under load, print each event_id once append_durable returned.

Usage: python journal_writer.py JOURNAL [--commit-log FILE]

Runs until killed. With --commit-log it also plays the database: every so often it copies the
committable events into FILE (one ID a line, fsynced) and calls mark_committed, so compaction
(rename over the journal) happens under the kill too.
"""

from __future__ import annotations

import asyncio
import os
import sys

from gateway.health.journal import Journal
from gateway.health.timeline import Event, State


async def producer(journal: Journal, worker: int) -> None:
    n = 0
    out = sys.stdout
    while True:
        n += 1
        eid = f"w{worker}-{n}"
        state = State.online if n % 2 else State.offline
        event = Event(eid, f"channel:3402000000132{worker:07d}", 1_790_000_000 + n, state, "load", {"n": n})
        await journal.append_durable(event)
        out.write(eid + "\n")
        out.flush()
        if n % 7 == 0:  # re-appending an acknowledged event must be a no-op
            await journal.append_durable(event)
            journal.append(event)


async def committer(journal: Journal, log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    while True:
        await asyncio.sleep(0.02)
        events, upto = journal.committable()
        if events:
            os.write(fd, "".join(ev.event_id + "\n" for ev in events).encode())
            os.fsync(fd)
            await journal.mark_committed(upto)


async def main() -> None:
    path = sys.argv[1]
    journal = Journal(path, fsync_interval=0.01, compact_min_bytes=0)
    await journal.open()
    tasks = [asyncio.create_task(journal.run())]
    tasks += [asyncio.create_task(producer(journal, w)) for w in range(20)]
    if len(sys.argv) > 3 and sys.argv[2] == "--commit-log":
        tasks.append(asyncio.create_task(committer(journal, sys.argv[3])))
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
