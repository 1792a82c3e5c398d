"""Alembic migrations create exactly the tables the models declare (no forgotten revision)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

from gateway.store import all_tables  # noqa: F401
from gateway.store.migrate import upgrade


def test_upgrade_creates_every_table_and_matches_models(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    upgrade(f"sqlite:///{db}")
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert set(SQLModel.metadata.tables) <= tables
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    # type/nullable noise is not expected either: the revision is generated from these models
    assert diff == [], f"models changed without a migration: {diff}"


def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade(url)  # a second start must not fail


def test_head_constant_names_alembic_head() -> None:
    """The fast path trusts `HEAD`; a new revision without updating it would skip a migration."""
    from alembic.script import ScriptDirectory

    from gateway.store.migrate import HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads() == [HEAD]


def test_database_at_head_skips_alembic_and_an_older_one_is_migrated(tmp_path: Path, monkeypatch) -> None:
    from alembic import command

    from gateway.store import migrate

    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    assert migrate.sqlite_revision(url) == migrate.HEAD
    calls: list[str] = []
    real = command.upgrade
    monkeypatch.setattr(command, "upgrade", lambda cfg, rev: calls.append(rev) or real(cfg, rev))
    upgrade(url)
    assert calls == []  # at head: Alembic is not consulted
    command.downgrade(migrate.alembic_config(url), "-1")
    assert migrate.sqlite_revision(url) != migrate.HEAD
    upgrade(url)
    assert calls == ["head"] and migrate.sqlite_revision(url) == migrate.HEAD


def test_sqlite_revision_of_missing_empty_or_foreign_files(tmp_path: Path) -> None:
    import sqlite3

    from gateway.store.migrate import sqlite_revision

    assert sqlite_revision(f"sqlite:///{tmp_path / 'none.db'}") is None
    (tmp_path / "empty.db").touch()
    assert sqlite_revision(f"sqlite:///{tmp_path / 'empty.db'}") is None
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 10)
    assert sqlite_revision(f"sqlite:///{tmp_path / 'junk.db'}") is None
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    assert sqlite_revision(f"sqlite:///{tmp_path / 'other.db'}") is None
    assert sqlite_revision("postgresql+asyncpg://u@h/db") is None
