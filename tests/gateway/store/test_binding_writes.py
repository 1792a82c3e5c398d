"""Registration bindings written in batches (DeviceRepository.save_binding), on SQLite and PostgreSQL.

A plain refresh (only registered_at/expires_at moved since this writer last wrote the binding) is
a narrow UPDATE without an existence SELECT; the table must end exactly as if every binding had
been upserted whole: a stale hint (row deleted or changed behind the writer's back) and a failed
batch must change nothing in what is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text, update

import gateway.store.devices as devices
from gateway.store.db import make_engine, make_sessionmaker
from gateway.store.devices import DeviceRepository
from gateway.store.migrate import upgrade
from gateway.store.models import DeviceBinding, DeviceEvent

T0 = 1_780_000_000.0
DEVS = [f"3402000000132000{i:04d}" for i in range(1, 6)]
_TABLE = DeviceBinding.__table__  # type: ignore[attr-defined]


def binding(n: int, ts: float, host: str = "10.0.0.1", **over: Any) -> dict[str, Any]:
    return {"transport": "udp", "host": host, "port": 5060 + n, "contact": f"<sip:{n}@{host}:{5060 + n}>",
            "call_id": f"call-{n}", "realm": "3402000000", "user_agent": "IPC 1.0",
            "registered_at": datetime.fromtimestamp(ts, UTC), "expires_at": datetime.fromtimestamp(ts + 3600, UTC),
            **over}


@pytest.fixture(params=["sqlite", "postgresql", "sqlite-sqlalchemy", "postgresql-sqlalchemy"])
async def repo(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DeviceRepository]:
    """`-sqlalchemy`: the statements SQLAlchemy runs itself (a dialect the driver path declines)."""
    db, _, path = request.param.partition("-")
    if path:
        monkeypatch.setattr(devices, "_driver_statement", lambda stmt, dialect: None)
    url = f"sqlite:///{tmp_path}/b.db" if db == "sqlite" else request.getfixturevalue("postgres_url")
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    r = DeviceRepository(make_sessionmaker(engine), interval=3600)  # flushed by the tests
    async with r._sessions() as s, s.begin():  # a clean slate on the shared PostgreSQL
        await s.execute(_TABLE.delete())
        await s.execute(DeviceEvent.__table__.delete().where(DeviceEvent.device_id.in_(DEVS)))  # type: ignore
    yield r
    await engine.dispose()


async def stored(r: DeviceRepository) -> dict[str, dict[str, Any]]:
    """Every binding as plain values (times as epoch seconds, whatever tz the driver returns)."""
    out = {}
    for b in await r.bindings():
        values = {k: getattr(b, k) for k in ("transport", "host", "port", "contact", "call_id", "realm",
                                             "user_agent")}
        for k in ("registered_at", "expires_at", "updated_at"):
            t = getattr(b, k)
            values[k] = (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()
        out[b.device_id] = values
    return out


def expected(n: int, ts: float, host: str = "10.0.0.1", **over: Any) -> dict[str, Any]:
    b = binding(n, ts, host, **over)
    b["registered_at"], b["expires_at"] = ts, ts + 3600
    return b


async def test_refreshes_store_what_a_full_upsert_would(repo: DeviceRepository) -> None:
    for n, d in enumerate(DEVS):
        repo.save_binding(d, **binding(n, T0))
    await repo.flush()
    # one batch mixing plain refreshes, a moved device, a new call-id, a delete and a new device
    for n, d in enumerate(DEVS[:3]):
        repo.save_binding(d, **binding(n, T0 + 60))
    repo.save_binding(DEVS[1], **binding(1, T0 + 70, "10.0.0.9"))  # the last one queued wins
    repo.save_binding(DEVS[3], **binding(3, T0 + 60, call_id="call-new"))
    repo.delete_binding(DEVS[4])
    new = "34020000001320009999"
    repo.save_binding(new, **binding(9, T0 + 60))
    await repo.flush()
    assert repo.bindings_refreshed == 2  # DEVS[0], DEVS[2]: only their times moved
    rows = await stored(repo)
    updated = {d: rows[d].pop("updated_at") for d in rows}
    assert rows == {DEVS[0]: expected(0, T0 + 60), DEVS[1]: expected(1, T0 + 70, "10.0.0.9"),
                    DEVS[2]: expected(2, T0 + 60), DEVS[3]: expected(3, T0 + 60, call_id="call-new"),
                    new: expected(9, T0 + 60)}
    assert len(set(updated.values())) == 1  # all stamped by the one batch
    # refresh again (now every device's binding is known to the writer): only the times move
    for n, d in ((0, DEVS[0]), (2, DEVS[2]), (9, new)):
        repo.save_binding(d, **binding(n, T0 + 120))
    repo.save_binding(DEVS[1], **binding(1, T0 + 120, "10.0.0.9"))
    await repo.flush()
    assert repo.bindings_refreshed == 2 + 4
    rows = await stored(repo)
    for d in rows:
        rows[d].pop("updated_at")
    assert rows[DEVS[0]] == expected(0, T0 + 120) and rows[new] == expected(9, T0 + 120)
    assert rows[DEVS[1]] == expected(1, T0 + 120, "10.0.0.9")
    assert rows[DEVS[3]] == expected(3, T0 + 60, call_id="call-new")  # untouched


async def test_a_stale_hint_changes_nothing_it_should_not(repo: DeviceRepository) -> None:
    for n, d in enumerate(DEVS[:3]):
        repo.save_binding(d, **binding(n, T0))
    await repo.flush()
    # behind the writer's back: one row gone, one row's address changed
    async with repo._sessions() as s, s.begin():
        await s.execute(_TABLE.delete().where(_TABLE.c.device_id == DEVS[0]))
        await s.execute(update(_TABLE).where(_TABLE.c.device_id == DEVS[1]).values(host="192.0.2.1"))
    for n, d in enumerate(DEVS[:3]):
        repo.save_binding(d, **binding(n, T0 + 60))
    await repo.flush()
    assert repo.bindings_refreshed == 0  # the refresh missed two rows: all three upserted whole
    rows = await stored(repo)
    for d in rows:
        rows[d].pop("updated_at")
    assert rows == {DEVS[0]: expected(0, T0 + 60), DEVS[1]: expected(1, T0 + 60), DEVS[2]: expected(2, T0 + 60)}
    for n, d in enumerate(DEVS[:3]):
        repo.save_binding(d, **binding(n, T0 + 120))
    await repo.flush()
    assert repo.bindings_refreshed == 3


async def test_a_failed_batch_is_requeued_whole(repo: DeviceRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    for n, d in enumerate(DEVS[:3]):
        repo.save_binding(d, **binding(n, T0))
    await repo.flush()
    for n, d in enumerate(DEVS[:3]):
        repo.save_binding(d, **binding(n, T0 + 60))
    repo.add_event(DEVS[0], "registered", T0 + 60)
    repo.update_device(DEVS[0], online=True)

    real = devices._write_devices

    async def broken(*args: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(devices, "_write_devices", broken)
    with pytest.raises(RuntimeError):
        await repo.flush()
    rows = await stored(repo)
    assert all(rows[d]["expires_at"] == T0 + 3600 for d in DEVS[:3])  # rolled back: nothing moved
    monkeypatch.setattr(devices, "_write_devices", real)
    await repo.flush()  # the re-queued batch, whole
    assert repo.bindings_refreshed == 0  # the failed batch left no hint: upserted whole
    rows = await stored(repo)
    for d in rows:
        rows[d].pop("updated_at")
    assert rows == {d: expected(n, T0 + 60) for n, d in enumerate(DEVS[:3])}
    assert [e.kind for e in await repo.events(DEVS[0])] == ["registered"]


async def test_a_refresh_stores_the_same_text_as_a_full_upsert(tmp_path: Path) -> None:
    """SQLite keeps times as text: the refresh's own conversion must give exactly SQLAlchemy's."""
    url = f"sqlite:///{tmp_path}/b.db"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    r = DeviceRepository(make_sessionmaker(engine), interval=3600)
    moments = [T0, T0 + 0.5, T0 + 1.000001, 86400.0 * 365 * 30 + 0.25]
    for n, ts in enumerate(moments):
        r.save_binding(DEVS[n], **binding(n, ts - 60))
    await r.flush()
    for n, ts in enumerate(moments):  # refreshes, by the narrow UPDATE
        r.save_binding(DEVS[n], **binding(n, ts))
    await r.flush()
    assert r.bindings_refreshed == len(moments)
    query = text("select device_id, registered_at, expires_at, updated_at from device_binding order by device_id")
    async with engine.connect() as conn:
        refreshed = (await conn.execute(query)).all()
    for n, ts in enumerate(moments):  # moved: every column rewritten, by the full UPDATE
        r.save_binding(DEVS[n], **binding(n, ts, host="10.0.0.7"))
    r.save_binding(DEVS[len(moments)], **binding(9, moments[1]))  # and one INSERT
    await r.flush()
    async with engine.connect() as conn:
        upserted = (await conn.execute(query)).all()
        stamp = upserted[0][3]
        await conn.execute(text("delete from device_binding"))
        at = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        rows = [{**binding(n, ts), "device_id": DEVS[n], "updated_at": at} for n, ts in enumerate(moments)]
        rows.append({**binding(9, moments[1]), "device_id": DEVS[len(moments)], "updated_at": rows[0]["updated_at"]})
        await conn.execute(insert(_TABLE), rows)  # the same, bound by SQLAlchemy itself
        reference = (await conn.execute(query)).all()
    await engine.dispose()
    assert [row[:3] for row in refreshed] == [row[:3] for row in reference[:len(moments)]]
    assert upserted == reference
    assert isinstance(stamp, str) and len(stamp) == 26


def test_the_fast_time_conversion_is_used_only_where_it_agrees() -> None:
    from sqlalchemy.dialects.postgresql import asyncpg
    from sqlalchemy.dialects.sqlite import aiosqlite

    from gateway.store.devices import _REFRESH, _DriverStatement
    from gateway.store.direct import sqlite_utc_text as _sqlite_utc_text

    column = _TABLE.c.registered_at
    sqlite = _DriverStatement.compile(_REFRESH, aiosqlite.dialect())
    assert sqlite is not None and sqlite.registered_at is _sqlite_utc_text
    proc = column.type.dialect_impl(aiosqlite.dialect()).bind_processor(aiosqlite.dialect())
    for ts in (0.0, 1.5, T0 + 0.000001, T0 + 0.999999, 253402300799.0):
        value = datetime.fromtimestamp(ts, UTC)
        assert _sqlite_utc_text(value) == proc(value)
        east = value.astimezone(timezone(timedelta(hours=-8)))
        assert _sqlite_utc_text(east) == proc(east)
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError):
        proc(naive)
    with pytest.raises(ValueError):
        _sqlite_utc_text(naive)
    pg = _DriverStatement.compile(_REFRESH, asyncpg.dialect())  # PostgreSQL binds datetimes: its own processor
    assert pg is not None and pg.registered_at is not _sqlite_utc_text
