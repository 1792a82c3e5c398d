"""Device rows and device events written in batches: straight on the driver (gateway.store.direct)
they must be stored exactly as SQLAlchemy's own executemany stores them, on SQLite and PostgreSQL
— every column, defaults filled, booleans, JSON and times included."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

import gateway.store.direct as store_direct
from gateway.store.db import make_engine, make_sessionmaker
from gateway.store.devices import DeviceRepository
from gateway.store.migrate import upgrade
from gateway.store.models import Device, DeviceEvent

T0 = 1_780_000_000.0
DEVS = [f"3402000000132100{i:04d}" for i in range(1, 5)]


async def write_and_read(url: str, monkeypatch: pytest.MonkeyPatch, direct: bool) -> list[list[Any]]:
    monkeypatch.setattr(store_direct, "compiled_shapes", {})
    if not direct:
        monkeypatch.setattr(store_direct.Direct, "compile", staticmethod(lambda *a: None))
    engine = make_engine(url)
    r = DeviceRepository(make_sessionmaker(engine), interval=3600)
    async with r._sessions() as s, s.begin():  # a clean slate (the PostgreSQL is shared)
        await s.execute(DeviceEvent.__table__.delete().where(DeviceEvent.device_id.in_(DEVS)))  # type: ignore
        await s.execute(Device.__table__.delete().where(Device.id.in_(DEVS)))  # type: ignore
    at = datetime.fromtimestamp(T0 + 0.25, UTC)
    # first logins (INSERT, defaults filled), a bare row, events with JSON detail
    for n, d in enumerate(DEVS[:3]):
        r.update_device(d, online=True, transport="udp", remote_host="10.0.0.1", remote_port=5060 + n,
                        contact=f"<sip:{d}@10.0.0.1>", expires=3600, user_agent="IPC 1.0", registered_at=at,
                        name=f"cam {n}", site_id=None, link_id="L1" if n else None)
        r.add_event(d, "registered", T0 + n, host="10.0.0.1", transport="udp", nested={"a": [1, None, "中"]})
    r.update_device(DEVS[3], channel_count=4)
    await r.flush()
    # changes (UPDATE, grouped by columns): offline with a last keepalive, a count, back online
    r.update_device(DEVS[0], online=False, last_keepalive=datetime.fromtimestamp(T0 + 30.5, UTC))
    r.update_device(DEVS[1], channel_count=16, firmware="V5.7")
    r.update_device(DEVS[3], online=True, registered_at=None)
    r.add_event(DEVS[0], "offline", T0 + 31, cause="keepalive_timeout")
    await r.flush()
    shapes = store_direct.compiled_shapes
    assert len(shapes) >= 4 and all((v is not None) == direct for v in shapes.values())  # the path under test
    ids = ",".join(f"'{d}'" for d in DEVS)  # constants
    async with engine.connect() as conn:
        device_rows = (await conn.execute(text(f"select * from device where id in ({ids}) order by id"))).all()
        event_rows = (await conn.execute(text(
            f"select device_id, ts, kind, detail from device_event where device_id in ({ids}) order by device_id, ts"
        ))).all()
    await engine.dispose()
    out = []
    for row in device_rows:
        values = dict(row._mapping)
        for k in ("created_at", "updated_at", "first_admitted_at"):  # stamped at write time
            assert values.pop(k) is not None
        out.append(sorted(values.items()))
    out += [list(row) for row in event_rows]
    return out


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
async def test_direct_writes_store_what_sqlalchemy_stores(
    db: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/d.db" if db == "sqlite" else request.getfixturevalue("postgres_url")
    await asyncio.to_thread(upgrade, url)
    direct = await write_and_read(url, monkeypatch, direct=True)
    with monkeypatch.context() as m:
        reference = await write_and_read(url, m, direct=False)
    assert direct == reference
    assert len(direct) == 4 + 4


async def test_raw_sqlite_text_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite keeps times, booleans and JSON as text/ints: compare the raw stored values too."""
    url = f"sqlite:///{tmp_path}/d.db"
    await asyncio.to_thread(upgrade, url)
    seen = []
    for direct in (True, False):
        with monkeypatch.context() as m:
            await write_and_read(url, m, direct=direct)
        engine = make_engine(url)
        async with engine.connect() as conn:
            seen.append((await conn.execute(text(
                "select id, online, registered_at, last_keepalive, typeof(created_at), length(created_at) "
                "from device order by id"))).all()
                + (await conn.execute(text("select device_id, ts, kind, detail from device_event order by id"))).all())
        await engine.dispose()
    assert seen[0] == seen[1]
    assert any(row[2] == "2026-05-28 20:26:40.250000" for row in seen[0])


async def test_known_rows_skip_the_lookup_and_a_stale_hint_reinserts(tmp_path: Path) -> None:
    """Rows this writer committed are updated without the existence SELECT; a row removed behind
    its back is noticed by the UPDATE's row count and inserted again with the batch's values."""
    url = f"sqlite:///{tmp_path}/d.db"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    selects: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM device " in statement + " ":
            selects.append(statement)

    r = DeviceRepository(make_sessionmaker(engine), interval=3600)
    for d in DEVS:
        r.update_device(d, online=True, name=f"cam {d[-1]}")
    await r.flush()
    assert len(selects) == 1  # new rows: looked up once
    selects.clear()
    for d in DEVS:
        r.update_device(d, online=False)
    await r.flush()
    assert selects == []  # all known to the writer: no lookup
    async with engine.begin() as conn:  # behind the writer's back
        await conn.execute(Device.__table__.delete().where(Device.id == DEVS[0]))  # type: ignore[attr-defined]
    for d in DEVS:
        r.update_device(d, online=True, channel_count=2)
    await r.flush()
    assert len(selects) >= 1  # the UPDATE missed a row: the hinted IDs were looked up
    async with engine.connect() as conn:
        rows = (await conn.execute(text("select id, online, channel_count, name from device order by id"))).all()
    await engine.dispose()
    assert [tuple(row) for row in rows] == [(DEVS[0], 1, 2, ""), *((d, 1, 2, f"cam {d[-1]}") for d in DEVS[1:])]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
async def test_existence_lookup_on_the_driver_finds_what_sqlalchemy_finds(
    db: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`direct.existing` (the writer's "which of these rows are there" SELECT, straight on the
    driver, IN lists padded to a few sizes and cut into chunks) answers as SQLAlchemy's expanding
    IN does: every size around the padding and chunk boundaries, repeats and misses included."""
    url = f"sqlite:///{tmp_path}/d.db" if db == "sqlite" else request.getfixturevalue("postgres_url")
    await asyncio.to_thread(upgrade, url)
    monkeypatch.setattr(store_direct, "CHUNK", 16)  # chunking shows with few rows
    engine = make_engine(url)
    ids = [f"3402000000132199{i:04d}" for i in range(40)]
    column = Device.__table__.c.id  # type: ignore[attr-defined]
    async with engine.begin() as conn:
        await conn.execute(Device.__table__.delete().where(column.in_(ids)))  # type: ignore[attr-defined]
        await conn.execute(Device.__table__.insert(), [  # type: ignore[attr-defined]
            {"id": d, "created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)} for d in ids[::3]])
        for n in (0, 1, 7, 8, 9, 16, 17, 33, 40):
            keys = ids[:n] + ids[:2]  # with repeats
            on_driver = await store_direct.existing(conn, column, keys)
            with monkeypatch.context() as m:
                m.setattr(store_direct, "_lookups", {})
                m.setattr(store_direct, "_lookup_sql", lambda *a: None)
                reference = await store_direct.existing(conn, column, keys)
            assert on_driver == reference == set(keys) & set(ids[::3])
        assert any(sql is not None for sql in store_direct._lookups.values())  # the path under test
        await conn.execute(Device.__table__.delete().where(column.in_(ids)))  # type: ignore[attr-defined]
    await engine.dispose()
