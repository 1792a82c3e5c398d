from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.api import build_web_app
from gateway.api.auth import TokenStore
from gateway.api.services import Services
from gateway.config import load_settings
from gateway.health.metrics import Metrics
from gateway.store.db import make_engine, make_sessionmaker
from gateway.store.devices import DeviceRepository
from gateway.store.migrate import upgrade
from whitelist.admission import Admission
from whitelist.store import WhitelistStore


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    repo = DeviceRepository(sessions, interval=0.01)
    repo.start()
    svc = Services(
        settings=load_settings(env={}),
        repo=repo,
        tokens=TokenStore(sessions),
        metrics=Metrics(),
        components={"database": "ok"},
    )
    store = WhitelistStore(sessions)
    svc.admission = Admission(store, await store.load_policy(), realm=svc.settings.sip.domain)
    svc.admission.dropped = []  # type: ignore[attr-defined]
    svc.admission.on_drop.append(svc.admission.dropped.append)  # type: ignore[attr-defined]
    yield svc
    await repo.stop()
    await engine.dispose()


@pytest.fixture
async def client(aiohttp_client: Any, services: Services) -> Any:
    return await aiohttp_client(build_web_app(services))
