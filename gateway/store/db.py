"""Async engine and sessions: SQLite (WAL) by default, PostgreSQL by URL.

The database is reached only through the async session, so no query blocks the event loop
(architecture.md §4).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from gateway.errors import ConfigError


def async_url(url: str) -> str:
    """Map a plain database URL to its asyncio driver (aiosqlite, asyncpg)."""
    try:
        u = make_url(url)
    except Exception as exc:
        raise ConfigError("database.url", f"not a database URL: {exc}") from None
    backend = u.get_backend_name()
    if backend == "sqlite":
        return str(u.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        return u.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ConfigError("database.url", f"expected sqlite:/// or postgresql://, got {backend!r}")


def sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        return Path(u.database)
    return None


def create_private_sqlite(url: str) -> None:
    """Create a missing SQLite file 0600 before SQLite or Alembic opens it.

    The database holds HA1s and token hashes; SQLite would create it with the umask (often 0644)
    and its -wal/-shm files take the database file's mode, so making the empty file ourselves
    (os.open with the mode, then fchmod against the umask) keeps all three private from the start.
    """
    path = sqlite_path(url)
    if path is None or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class _SqliteConnection(sqlite3.Connection):
    """Closing ends the open transaction first. A task cancelled mid-statement makes SQLAlchemy
    invalidate and close its connection; if a statement of the transaction is still open (a SELECT
    not read to the end, kept alive by the cancelled task's traceback), a bare close leaves a
    zombie connection holding the write lock, and every other writer waits out busy_timeout and
    fails with "database is locked" until the garbage collector frees that statement."""

    def close(self) -> None:
        if self.in_transaction:
            try:
                self.rollback()
            except sqlite3.Error:
                pass  # closing anyway; SQLite rolls back when the connection is finally freed
        super().close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # We issue BEGIN ourselves (below): a deferred transaction that reads and then writes cannot
    # wait for another writer in SQLite (it fails at once with "database is locked").
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    """Take the write lock up front (waiting up to busy_timeout), as PostgreSQL would queue."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> AsyncEngine:
    create_private_sqlite(url)
    path = sqlite_path(url)
    if make_url(url).get_backend_name() == "sqlite":
        # One connection: SQLite has one writer anyway, and a single connection means no
        # "database is locked" between our own coroutines (other processes wait on busy_timeout).
        engine = create_async_engine(async_url(url), pool_size=1, max_overflow=0, pool_timeout=60,
                                     connect_args={"factory": _SqliteConnection})
    else:
        engine = create_async_engine(async_url(url), pool_pre_ping=True)
    if path is not None or make_url(url).get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
