"""The store plane: schema, engine, the device writer, tokens and the whitelist policy."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs.files import write_private
from gateway.api.auth import TokenStore
from gateway.app.status import OK, STOPPED
from gateway.config import Settings
from gateway.store import migrate
from gateway.store.db import make_engine, make_sessionmaker
from gateway.store.devices import DeviceRepository
from whitelist.decide import Policy
from whitelist.store import WhitelistStore


@dataclass(slots=True)
class StorePlane:
    sessions: Any  # async_sessionmaker
    repo: DeviceRepository
    tokens: TokenStore
    whitelist: WhitelistStore
    policy: Policy

    def status(self) -> str:
        """`ok` while the device writer runs and its last flush went through."""
        if not self.repo.running:
            return STOPPED
        return OK if self.repo.last_error is None else f"error: {self.repo.last_error}"


@asynccontextmanager
async def store_plane(settings: Settings) -> AsyncIterator[StorePlane]:
    """Migrate, open the engine, start the device writer; on exit flush it and dispose the engine."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(migrate.upgrade, settings.database.url)
    engine = make_engine(settings.database.url)
    try:
        sessions = make_sessionmaker(engine)
        repo = DeviceRepository(sessions)
        repo.start()
        try:
            await repo.mark_all_offline()
            wl_store = WhitelistStore(sessions)
            policy = await wl_store.load_policy()
            yield StorePlane(sessions, repo, TokenStore(sessions), wl_store, policy)
        finally:
            await repo.stop()
    finally:
        await engine.dispose()


def node_secret(data_dir: Path) -> bytes:
    """The node's nonce secret: random, kept in the data directory (0600) across restarts."""
    path = data_dir / "nonce.secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        value = secrets.token_bytes(32)
        write_private(path, value.hex().encode("ascii"), overwrite=True)   # 0600 from creation on
        return value
