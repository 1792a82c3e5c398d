"""Contract import: CSV and XLSX, Chinese headers, every error named by line and field, all or nothing."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlmodel import SQLModel, select

from gateway.reports.contract_import import apply_import, parse_rows
from gateway.reports.errors import ImportValidationError
from gateway.store import contract as tables

DATA = Path(__file__).parents[2] / "data" / "reports"
KNOWN = {"vendors": {"V1", "V2"}, "batches": {"B1"}, "links": {"L1"}, "stations": {"S1", "S2"}}


def test_vendors_csv_with_bom_and_chinese_headers() -> None:
    rows = parse_rows("vendors", "vendors.csv", (DATA / "vendors.csv").read_bytes())
    assert rows == [
        {"id": "V1", "name": "科海", "kind": "rental", "contact": "张三", "phone": "13800000000"},
        {"id": "V2", "name": "海康", "kind": "rental", "contact": "李四", "phone": None},
    ]


def test_every_bad_row_and_field_is_named() -> None:
    with pytest.raises(ImportValidationError) as info:
        parse_rows("channels", "channels_bad.csv", (DATA / "channels_bad.csv").read_bytes(), known=KNOWN)
    got = {(e.line, e.field) for e in info.value.errors}
    assert got == {(3, "channel_id"), (4, "vendor_id"), (4, "admitted_ts"), (5, "channel_id")}
    assert "line 3, field channel_id: expected a 20-digit GB/T 28181 ID" in str(info.value)
    dup = next(e for e in info.value.errors if e.line == 5)
    assert "duplicate of line 2" in dup.message


def test_header_problems() -> None:
    with pytest.raises(ImportValidationError) as info:
        parse_rows("batches", "b.csv", b"id,vendor_id,colour\nB1,V1,red\n", known=KNOWN)
    assert {(e.line, e.field) for e in info.value.errors} == {
        (1, "colour"),
        (1, "year"),
        (1, "channel_count"),
        (1, "monthly_rent_per_channel"),
    }
    with pytest.raises(ImportValidationError):
        parse_rows("batches", "b.csv", b"")
    with pytest.raises(ImportValidationError):
        parse_rows("planets", "b.csv", b"id\n1\n")
    with pytest.raises(ImportValidationError):
        parse_rows("vendors", "v.csv", "id,name\nV1,科海\n".encode("gb18030"))


def test_values_are_checked() -> None:
    csv_data = (
        "id,vendor_id,name,year,channel_count,monthly_rent_per_channel,start_date,end_date\n"
        'B1,V1,科海2016,2016,300,"1,200.50",2016-01-01,2019-12-31\n'
        "B2,V1,,1800,-3,12.345,2016-13-01,\n"
        "B3,V2,,2017,10,5,2018-01-01,2017-01-01\n"
    ).encode()
    with pytest.raises(ImportValidationError) as info:
        parse_rows("batches", "b.csv", csv_data, known=KNOWN)
    assert {(e.line, e.field) for e in info.value.errors} == {
        (3, "year"),
        (3, "channel_count"),
        (3, "monthly_rent_per_channel"),
        (3, "start_date"),
        (4, "end_date"),
    }
    good = parse_rows("batches", "b.csv", csv_data.split(b"\n")[0] + b"\n" + csv_data.split(b"\n")[1], known=KNOWN)
    assert good[0]["monthly_rent_per_channel"] == Decimal("1200.50") and good[0]["year"] == 2016


def xlsx(rows: list[list[object]]) -> bytes:
    wb = Workbook()
    for r in rows:
        wb.active.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def test_xlsx_import_with_numbers_and_dates() -> None:
    from datetime import date

    data = xlsx(
        [
            ["批次编号", "厂商编号", "年份", "路数", "每路月租", "start_date"],
            ["B1", "V1", 2016, 300, 120.5, date(2016, 1, 1)],
            ["B2", "V1", 2017, "many", 10, None],
        ]
    )
    with pytest.raises(ImportValidationError) as info:
        parse_rows("batches", "batches.xlsx", data, known=KNOWN)
    assert [(e.line, e.field) for e in info.value.errors] == [(3, "channel_count")]
    ok = parse_rows(
        "batches",
        "batches.xlsx",
        xlsx(
            [["id", "vendor_id", "year", "channel_count", "monthly_rent_per_channel"], ["B1", "V1", 2016, 300, 120.5]]
        ),
        known=KNOWN,
    )
    assert ok[0]["monthly_rent_per_channel"] == Decimal("120.5") and ok[0]["channel_count"] == 300
    with pytest.raises(ImportValidationError):
        parse_rows("batches", "broken.xlsx", b"PK\x03\x04 not really")


async def test_apply_import_all_or_nothing_and_jurisdiction_history() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    async with AsyncSession(engine) as session, session.begin():
        await apply_import(
            session, "vendors", parse_rows("vendors", "v.csv", (DATA / "vendors.csv").read_bytes()), now=1.0
        )
        await apply_import(
            session,
            "stations",
            parse_rows("stations", "s.csv", "id,name\nS1,城东派出所\nS2,城北派出所\n".encode()),
            now=1.0,
        )
        await apply_import(
            session,
            "batches",
            parse_rows(
                "batches",
                "b.csv",
                b"id,vendor_id,year,channel_count,monthly_rent_per_channel\nB1,V1,2016,300,100\n",
                known=KNOWN,
            ),
            now=1.0,
        )
        ch = "channel_id,vendor_id,batch_id,station_id\n34020000001320000001,V1,B1,S1\n"
        await apply_import(session, "channels", parse_rows("channels", "c.csv", ch.encode(), known=KNOWN), now=1.0)
    # a file with one bad row writes nothing
    bad = "channel_id,vendor_id,station_id\n34020000001320000001,V1,S2\n34020000001320000002,V7,S2\n"
    with pytest.raises(ImportValidationError):
        parse_rows("channels", "c.csv", bad.encode(), known=KNOWN)
    # moving the channel to another station keeps the history
    move = "channel_id,vendor_id,batch_id,station_id\n34020000001320000001,V1,B1,S2\n"
    async with AsyncSession(engine) as session, session.begin():
        await apply_import(session, "channels", parse_rows("channels", "c.csv", move.encode(), known=KNOWN), now=2.0)
    async with AsyncSession(engine) as session:
        cc = await session.get(tables.ChannelContract, "34020000001320000001")
        assert cc is not None and cc.station_id == "S2" and cc.batch_id == "B1"
        hist = (await session.execute(select(tables.StationChannel).order_by(tables.StationChannel.id))).scalars().all()
        assert [(h.station_id, h.valid_from_ts, h.valid_to_ts) for h in hist] == [("S1", 1.0, 2.0), ("S2", 2.0, None)]
        vendors = (await session.execute(select(tables.Vendor))).scalars().all()
        assert {v.id for v in vendors} == {"V1", "V2"}
        batch = await session.get(tables.RentalBatch, "B1")
        assert batch is not None and batch.monthly_rent_per_channel == Decimal("100")
    await engine.dispose()


async def test_back_dated_jurisdiction_keeps_the_history_ordered() -> None:
    """Issue 11.9 (contract_import valid_to < valid_from). The channel is S1's from t=1 (channel
    import); jurisdiction rows then say S2 from t=100, then (back-dated) S1 from t=50, then S2
    from t=50. Hand: S1 [1, 50), S2 [50, open): rows beginning at or after a back-dated move are
    superseded, the row running past it is closed there. The old code closed S2's row (from 100)
    at 50, so valid_to < valid_from."""
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
    cid = "34020000001320000001"
    async with AsyncSession(engine) as session, session.begin():
        session.add(tables.Vendor(id="V1", name="科海"))
        session.add(tables.PoliceStation(id="S1", name="城东派出所"))
        session.add(tables.PoliceStation(id="S2", name="城北派出所"))
        ch = f"channel_id,vendor_id,station_id\n{cid},V1,S1\n"
        await apply_import(session, "channels", parse_rows("channels", "c.csv", ch.encode(), known=KNOWN), now=1.0)
    for since, station in ((100.0, "S2"), (50.0, "S1"), (50.0, "S2")):
        async with AsyncSession(engine) as session, session.begin():
            rows = [{"channel_id": cid, "station_id": station, "valid_from_ts": since}]
            await apply_import(session, "jurisdiction", rows, now=200.0)
    async with AsyncSession(engine) as session:
        hist = (
            (await session.execute(select(tables.StationChannel).order_by(tables.StationChannel.valid_from_ts)))
            .scalars()
            .all()
        )
        assert [(h.station_id, h.valid_from_ts, h.valid_to_ts) for h in hist] == [("S1", 1.0, 50.0), ("S2", 50.0, None)]
        assert (await session.get(tables.ChannelContract, cid)).station_id == "S2"
    await engine.dispose()
