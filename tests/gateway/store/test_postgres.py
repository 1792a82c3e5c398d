"""The store on a real PostgreSQL (the multi-node configuration): migrations, and a device registering."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from gateway.app import Gateway
from gateway.store.db import make_engine
from gateway.store.migrate import upgrade
from tests.adapters.test_gb_device import PW, UdpPhone
from tests.interop.conftest import gateway_settings, whitelist

DEV = "34020000001320000701"


async def test_migrations_and_registration_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(upgrade, postgres_url)
    gw = Gateway(gateway_settings(tmp_path, GBGATE_DATABASE__URL=postgres_url))
    await gw.start()
    phone = UdpPhone(gw)
    try:
        await whitelist(gw, DEV, PW, name="PG camera")
        assert (await phone.register(device_id=DEV)).status == 200
        await gw.services.repo.flush()  # type: ignore[union-attr]
    finally:
        phone.close()
        await gw.stop()
    engine = make_engine(postgres_url)
    async with engine.connect() as conn:
        online = (await conn.execute(text("select online, name from device where id = :i"), {"i": DEV})).one()
        audit = (await conn.execute(text("select count(*) from whitelist_audit"))).scalar_one()
        events = (await conn.execute(text("select count(*) from health_event where subject = :s"),
                                     {"s": f"device:{DEV}"})).scalar_one()
    await engine.dispose()
    assert online.name == "PG camera"
    assert online.online is False  # the orderly stop marked it offline again
    assert audit >= 1
    assert events >= 1  # the ledger reached the shared database
