"""Apply Alembic migrations (at start and by `gbgate db upgrade`).

Alembic's env.py runs its own event loop, so `upgrade` is synchronous; async callers use
`asyncio.to_thread(upgrade, url)`. A database already at `HEAD` is left alone without loading
Alembic: a CLI command (say `whitelist import` of 20,000 entries, issue 15) would otherwise spend
about half a second importing Alembic and replaying the revision graph only to learn there is
nothing to do. `HEAD` must name the newest revision; a test checks it against Alembic's own view.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

HERE = Path(__file__).parent
#: The newest revision under migrations/versions (tests/gateway/store/test_migrations.py keeps it true).
HEAD = "plat_0002"


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def sqlite_revision(url: str) -> str | None:
    """The revision an existing SQLite database is at (None: not SQLite, missing, or never migrated)."""
    from gateway.store.db import sqlite_path

    path = sqlite_path(url)
    if path is None or not path.exists() or path.stat().st_size == 0:
        return None
    try:
        with closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return rows[0][0] if len(rows) == 1 else None


def upgrade(url: str, revision: str = "head") -> None:
    from gateway.store.db import create_private_sqlite

    if revision in ("head", HEAD) and sqlite_revision(url) == HEAD:
        return
    from alembic import command

    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per start is enough: ours
    create_private_sqlite(url)
    command.upgrade(alembic_config(url), revision)


def autogenerate(url: str, message: str) -> None:
    """Developer helper: write a new revision from the difference between tables and database."""
    from alembic import command

    command.revision(alembic_config(url), message=message, autogenerate=True)
