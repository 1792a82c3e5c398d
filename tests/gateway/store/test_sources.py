"""Pull sources in the store: the password only sealed (never in the database file), round trip."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.store.db import make_engine, make_sessionmaker
from gateway.store.migrate import upgrade
from gateway.store.sealed import Sealer, SealError
from gateway.store.sources import PullMode, SourceRecord, SourceRepository

CH = "34020000001310000001"
PASSWORD = "Tr0ub4dor&3-unique"


def test_sealer_binds_the_value_to_its_channel_and_key() -> None:
    s = Sealer(b"k" * 32)
    sealed = s.seal(PASSWORD, CH)
    assert PASSWORD not in sealed and s.open(sealed, CH) == PASSWORD
    with pytest.raises(SealError):
        s.open(sealed, "34020000001310000002")  # copied to another row
    with pytest.raises(SealError):
        Sealer(b"x" * 32).open(sealed, CH)        # another node's secret
    assert s.seal("", CH) == "" and s.open("", CH) == ""
    assert "k" * 8 not in repr(s)


async def test_repository_round_trip_without_cleartext_on_disk(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await asyncio.to_thread(upgrade, f"sqlite:///{db}")
    engine = make_engine(f"sqlite:///{db}")
    try:
        repo = SourceRepository(make_sessionmaker(engine), Sealer(b"n" * 32))
        rec = SourceRecord(channel_id=CH, url="rtsp://192.168.1.5:554/live", username="admin", password=PASSWORD,
                           mode=PullMode.ALWAYS_ON, name="gate", site="s1")
        before, after = await repo.put(rec)
        assert before is None and after.password == PASSWORD and after.always_on
        got = await repo.get(CH)
        assert got is not None and got.password == PASSWORD and got.url == rec.url
        pub = got.public_dict()
        assert pub["url"] == "rtsp://admin:***@192.168.1.5:554/live" and PASSWORD not in str(pub)
        assert PASSWORD not in repr(got)
        assert [r.channel_id for r in await repo.list()] == [CH]
        removed = await repo.delete(CH)
        assert removed is not None and await repo.get(CH) is None and await repo.delete(CH) is None
    finally:
        await engine.dispose()
    assert PASSWORD.encode() not in db.read_bytes()
