"""Secrets on disk are private from the moment the file exists (issue 10 item 12).

gbgate.db holds HA1s and token hashes, nonce.secret signs every digest nonce: another local user
reading either can impersonate devices or forge nonces. The tests run under a permissive umask.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import node_secret as _secret
from gateway.store.db import make_engine
from gateway.store.migrate import upgrade


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_created_by_migrations_is_0600(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "data" / "gbgate.db"
    upgrade(f"sqlite:///{db}")
    assert _mode(db) == 0o600


async def test_database_and_wal_created_by_engine_are_0600(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "gbgate.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("create table t (x integer)")
            await conn.exec_driver_sql("insert into t values (1)")
        assert _mode(db) == 0o600
        wal = tmp_path / "gbgate.db-wal"
        assert wal.exists() and _mode(wal) == 0o600
    finally:
        await engine.dispose()


def test_nonce_secret_is_never_readable_even_if_interrupted(tmp_path: Path, open_umask: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Write-then-chmod leaves a window (and a 0644 file if the process dies in it): simulate the death."""
    def die(*_a: object, **_k: object) -> None:
        raise OSError("killed between write and chmod")

    monkeypatch.setattr(os, "chmod", die)
    try:
        secret = _secret(tmp_path)
    except OSError:
        secret = None
    path = tmp_path / "nonce.secret"
    assert path.exists() and _mode(path) == 0o600
    assert secret is not None and _secret(tmp_path) == secret

