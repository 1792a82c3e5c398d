"""A write cancelled mid-transaction must not leave SQLite locked for every other writer.

Cancelling a task while its statement runs makes SQLAlchemy invalidate and close the connection.
If a statement of that transaction is still open (a SELECT whose rows were not all read, kept
alive by the cancelled task's traceback), sqlite3's close leaves a zombie connection that keeps
the transaction — and its write lock — until the statement is freed. Every later writer then waits
out busy_timeout and fails with "database is locked". At shutdown that was 5 s per write (the
adapter cancels its alarm audit writes; the health recorder's and device writer's final writes
followed): the 10 s teardown of tests/interop/test_sipp_workers.py's one-process variants.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from gateway.store.db import make_engine, make_sessionmaker


def write_lock_free(path: Path) -> bool:
    """Whether another connection can take the write lock now, without waiting."""
    conn = sqlite3.connect(path, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


async def test_a_cancelled_transaction_releases_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "gbgate.db"
    engine = make_engine(f"sqlite:///{path}")
    entered, release = threading.Event(), threading.Event()

    def pause() -> int:  # runs on the connection's thread: holds the statement until released
        entered.set()
        release.wait(10)
        return 1

    @event.listens_for(engine.sync_engine, "connect")
    def _add_pause(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.create_function("pause", 0, pause)

    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1), (2), (3)"))
        sessions = make_sessionmaker(engine)

        async def write() -> None:
            async with sessions() as session, session.begin():
                rows = await session.stream(text("SELECT x FROM t"))
                await rows.fetchmany(1)  # an open SELECT in the transaction, as a cancelled fetch leaves it
                await session.execute(text("INSERT INTO t VALUES (4)"))
                await session.execute(text("SELECT pause()"))

        task = asyncio.create_task(write())
        assert await asyncio.to_thread(entered.wait, 5)
        task.cancel()
        release.set()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert write_lock_free(path), "the cancelled transaction still holds the write lock"
        with sqlite3.connect(path) as check:
            assert check.execute("SELECT count(*) FROM t").fetchone() == (3,)  # its insert rolled back
    finally:
        release.set()
        await engine.dispose()
