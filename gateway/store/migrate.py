"""Apply Alembic migrations (at start and by `gbgate db upgrade`).

Alembic's env.py runs its own event loop, so `upgrade` is synchronous; async callers use
`asyncio.to_thread(upgrade, url)`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from gateway.store.db import create_private_sqlite

    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per start is enough: ours
    create_private_sqlite(url)
    command.upgrade(alembic_config(url), revision)


def autogenerate(url: str, message: str) -> None:
    """Developer helper: write a new revision from the difference between tables and database."""
    command.revision(alembic_config(url), message=message, autogenerate=True)
