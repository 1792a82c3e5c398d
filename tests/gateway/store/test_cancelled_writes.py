"""A write cancelled mid-transaction must not leave SQLite locked for every other writer.

Cancelling a task while its statement runs makes SQLAlchemy invalidate and close the connection.
If a statement of that transaction is still open (a SELECT whose rows were not all read, kept
alive by the cancelled task's traceback), sqlite3's close leaves a zombie connection that keeps
the transaction — and its write lock — until the statement is freed. Every later writer then waits
out busy_timeout and fails with "database is locked". At shutdown that was 5 s per write (the
adapter cancelled its alarm audit writes then; the health recorder's and device writer's final writes
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


async def test_stopping_the_device_writer_mid_batch_loses_nothing(tmp_path: Path) -> None:
    """`DeviceRepository.stop` while the background writer is inside a batch (here: waiting for
    another process's write lock) lets that batch finish instead of cancelling it: a cancelled
    batch was neither written nor queued again, so the final flush had nothing left to write."""
    from gateway.store.devices import DeviceRepository
    from gateway.store.migrate import upgrade
    from gateway.store.models import Device

    url = f"sqlite:///{tmp_path / 'gbgate.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    repo = DeviceRepository(make_sessionmaker(engine), interval=0)
    holder = sqlite3.connect(tmp_path / "gbgate.db", isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process writing: the batch waits on busy_timeout
        repo.start()
        repo.update_device("34020000001320000101", online=False)
        async with asyncio.timeout(5):  # the writer took the batch and waits for the lock
            while not (repo._flush_lock.locked() and not repo._pending_devices):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        stopping = asyncio.create_task(repo.stop())
        await asyncio.sleep(0.1)
        holder.rollback()  # the other process is done
        await asyncio.wait_for(stopping, 10)
        async with make_sessionmaker(engine)() as session:
            device = await session.get(Device, "34020000001320000101")
        assert device is not None and device.online is False
    finally:
        holder.close()
        await engine.dispose()
