"""Catalog diffs written in batches (gateway.store.devices.CatalogWrite), on SQLite and PostgreSQL.

Thousands of devices log in per second in a registration storm; their catalogs are applied with a
few executemany statements per writer batch. The table must end exactly as if each diff had been
applied alone, in order: new channels inserted, changed ones updated (and revived if removed),
removed ones marked, and the exposure of unchanged live channels following max_channels.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.gb.items import CatalogItem
from gateway.store.db import make_engine, make_sessionmaker
from gateway.store.devices import DeviceRepository, make_catalog_job
from gateway.store.migrate import upgrade
from gateway.store.models import Channel

DEV_A, DEV_B = "34020000001320000801", "34020000001320000802"


def ch(n: int, name: str = "") -> CatalogItem:
    return CatalogItem(device_id=f"3402000000131{n:07d}", name=name or f"cam{n}", status="ON")


@pytest.fixture(params=["sqlite", "postgresql"])
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DeviceRepository]:
    url = f"sqlite:///{tmp_path}/c.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    r = DeviceRepository(make_sessionmaker(engine), interval=0.01)
    async with r._sessions() as s, s.begin():  # a clean slate on the shared PostgreSQL
        await s.execute(Channel.__table__.delete())  # type: ignore[attr-defined]
    r.start()
    for dev in (DEV_A, DEV_B):
        r.update_device(dev, online=True)
    await r.flush()
    yield r
    await r.stop()
    await engine.dispose()


async def table(r: DeviceRepository) -> dict[tuple[str, str], tuple[str, bool, bool]]:
    async with r._sessions() as s:
        rows = (await s.execute(select(Channel))).scalars()
        return {(c.device_id, c.channel_id): (c.name, c.exposed, c.removed_at is not None) for c in rows}


async def test_one_batch_equals_diffs_applied_one_by_one(repo: DeviceRepository) -> None:
    # first logins: A has 3 channels, 2 exposed (max_channels=2); B has 1
    first = [repo.submit(make_catalog_job(DEV_A, [ch(1), ch(2), ch(3)], [], [], {ch(1).device_id, ch(2).device_id})),
             repo.submit(make_catalog_job(DEV_B, [ch(9)], [], [], {ch(9).device_id}))]
    await asyncio.gather(*first)
    t = await table(repo)
    assert t[(DEV_A, ch(3).device_id)] == ("cam3", False, False) and t[(DEV_B, ch(9).device_id)][1]
    # one batch, A twice: rename 1 and remove 2, then (same batch) bring 2 back renamed and
    # expose 3 (max_channels raised) without 3 itself changing
    second = [
        repo.submit(make_catalog_job(DEV_A, [], [ch(1, "east gate")], [ch(2).device_id], {ch(1).device_id})),
        repo.submit(make_catalog_job(DEV_B, [ch(10)], [], [], {ch(9).device_id, ch(10).device_id})),
        repo.submit(make_catalog_job(DEV_A, [ch(2, "back")], [], [],
                                     {ch(1).device_id, ch(2).device_id, ch(3).device_id})),
    ]
    await asyncio.gather(*second)
    assert repo.batches >= 2
    assert await table(repo) == {
        (DEV_A, ch(1).device_id): ("east gate", True, False),
        (DEV_A, ch(2).device_id): ("back", True, False),  # removed, then revived in the same batch
        (DEV_A, ch(3).device_id): ("cam3", True, False),  # unchanged item, exposure followed the set
        (DEV_B, ch(9).device_id): ("cam9", True, False),
        (DEV_B, ch(10).device_id): ("cam10", True, False),
    }
    # hide 3 again and remove 10: exposure and removal on channels the diff does not carry
    await asyncio.gather(repo.submit(make_catalog_job(DEV_A, [], [], [], {ch(1).device_id, ch(2).device_id})),
                         repo.submit(make_catalog_job(DEV_B, [], [], [ch(10).device_id], {ch(9).device_id})))
    t = await table(repo)
    assert t[(DEV_A, ch(3).device_id)] == ("cam3", False, False)
    assert t[(DEV_B, ch(10).device_id)] == ("cam10", True, True)
