"""/api/v1 reports, contract import, maintenance windows, policy versions, tickets and the probe route.

The real store (SQLite in tmp, migrated) with the demo history seeded for 26 Sep - 5 Nov 2026, so
October 2026 is a complete month whose figures are worked out below:
  channel 2 flaps twice a day for 20 min → offline 31 × 2,400 = 74,400 s;
  channel 3 is offline 26 Oct 08:00 for 30 h → 108,000 s (ticket T20261026-0001, vendor answered);
  channel 4 has a 4 h maintenance window on 31 Oct → 14,400 s;
  the gateway was down 24 Oct 03:00-04:00 → 3,600 s unknown for everybody.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import func, select

from gateway.api import build_web_app
from gateway.api import reports as reports_api
from gateway.api.auth import Role
from gateway.api.services import Services
from gateway.health.timeline import UTC8
from gateway.reports.demo_history import seed_history
from gateway.reports.i18n import t
from gateway.store import contract as T

IDS = [(f"3402000000111000000{i}", f"3402000000132000000{i}") for i in range(1, 6)]
CH2, CH3 = IDS[1][1], IDS[2][1]
SEEDED_AT = datetime(2026, 11, 5, 12, tzinfo=UTC8).timestamp()
TICKET = "T20261026-0001"
OCT_S = 31 * 86_400


class FakeProber:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    async def probe_channel(self, channel_id: str, *, open_stream: bool = False) -> Any:
        from gateway.health.probe_runner import ProbeResult

        self.calls.append((channel_id, open_stream))
        if channel_id.endswith("9"):
            from gateway.media.errors import ChannelNotFound

            raise ChannelNotFound(f"no channel {channel_id}")
        return ProbeResult(channel_id, 1.0, ["black"], {"p98": 3.0}, None, False, 352, 288)


@pytest.fixture
def sessions(services: Services) -> Any:
    return services.repo._sessions


@pytest.fixture
async def api(aiohttp_client: Any, services: Services, sessions: Any) -> Any:
    await seed_history(sessions, IDS, now=SEEDED_AT)
    services.reports = reports_api.ReportsRuntime(sessions=sessions, prober=FakeProber())
    services.clock = lambda: SEEDED_AT  # "today" is 5 Nov 2026, whatever the wall clock says
    client = await aiohttp_client(build_web_app(services, [reports_api.routes]))
    client.tokens = {
        "ops": await services.tokens.create(Role.OPS, "ops"),
        "integrator": await services.tokens.create(Role.INTEGRATOR, "int"),
        "vendor": await services.tokens.create(Role.VENDOR, "demo", scope="demo-vendor"),
        "other": await services.tokens.create(Role.VENDOR, "other", scope="other-vendor"),
        "unscoped": await services.tokens.create(Role.VENDOR, "none"),
    }
    return client


def auth(api: Any, who: str = "ops") -> dict[str, str]:
    return {"Authorization": f"Bearer {api.tokens[who]}"}


async def error_of(resp: Any) -> dict[str, Any]:
    body = await resp.json()
    return body["error"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- reports


async def test_availability_csv_over_seeded_month(api: Any) -> None:
    resp = await api.get("/api/v1/reports/availability?period=2026-10&format=csv", headers=auth(api))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert 'attachment; filename="gbgate-availability-2026-10.csv"' in resp.headers["Content-Disposition"]
    lines = (await resp.read()).decode("utf-8-sig").splitlines()
    assert lines[0].startswith("channel_id,name,site,link,vendor,station,expected_s,online_s,offline_s")
    row = next(line.split(",") for line in lines if line.startswith(CH2))
    assert row[6:9] == [str(OCT_S), str(OCT_S - 74_400 - 3_600), "74400"]
    assert row[-1] == f"{(OCT_S - 74_400 - 3_600) / (OCT_S - 3_600):.4f}" == "0.9722"


async def test_availability_xlsx_cell_by_cell(api: Any) -> None:
    resp = await api.get("/api/v1/reports/availability?period=2026-10&format=xlsx&lang=zh-CN", headers=auth(api))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == reports_api.CONTENT_TYPES["xlsx"]
    ws = load_workbook(io.BytesIO(await resp.read())).worksheets[0]
    assert ws["A1"].value == t("title.availability", "zh")
    header = next(r for r in range(1, 20) if ws.cell(r, 1).value == t("channel_id", "zh"))
    cols = {ws.cell(header, c).value: c for c in range(1, ws.max_column + 1)}
    rows = {ws.cell(r, 1).value: r for r in range(header + 1, header + 7)}
    r2, r3, r4 = rows[CH2], rows[CH3], rows[IDS[3][1]]
    assert ws.cell(r2, cols[t("offline_s", "zh")]).value == 74_400
    assert ws.cell(r2, cols[t("unknown_s", "zh")]).value == 3_600
    assert ws.cell(r2, cols[t("availability", "zh")]).value == pytest.approx(0.9722)
    assert ws.cell(r3, cols[t("offline_s", "zh")]).value == 108_000
    assert ws.cell(r4, cols[t("maintenance_s", "zh")]).value == 14_400
    assert ws.cell(r4, cols[t("offline_s", "zh")]).value == 0
    total = rows[t("total", "zh")]
    assert ws.cell(total, cols[t("expected_s", "zh")]).value == 5 * OCT_S


async def test_html_report_is_inline_and_english(api: Any) -> None:
    resp = await api.get("/api/v1/reports/daily-faults?period=2026-10-26&format=html&lang=en", headers=auth(api))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.headers["Content-Disposition"].startswith("inline;")
    text = await resp.text()
    assert TICKET in text and "<html" in text.lower()


async def test_report_token_in_query_is_refused(api: Any) -> None:
    """Issue 10 item 11: ?token= only on /live/…; the console now fetches reports with the header."""
    resp = await api.get(f"/api/v1/reports/deductions?period=2026-10&token={api.tokens['ops']}")
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "token"


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/api/v1/reports/nonsense?period=2026-10", 400, "kind"),
        ("/api/v1/reports/availability", 400, "period"),
        ("/api/v1/reports/availability?period=2026-13", 400, "period"),
        ("/api/v1/reports/availability?period=last-month", 400, "period"),
        ("/api/v1/reports/availability?period=2099-01", 422, "period"),
        ("/api/v1/reports/availability?period=2026-10&format=pdf", 400, "format"),
        ("/api/v1/reports/availability?period=2026-10&lang=fr", 400, "lang"),
        ("/api/v1/reports/availability?period=2026-10&group_by=colour", 400, "group_by"),
    ],
)
async def test_report_bad_input_names_the_field(api: Any, path: str, status: int, field: str) -> None:
    resp = await api.get(path, headers=auth(api))
    assert resp.status == status
    assert (await error_of(resp))["field"] == field


async def test_reports_need_ops(api: Any) -> None:
    assert (await api.get("/api/v1/reports/availability?period=2026-10")).status == 401
    resp = await api.get("/api/v1/reports/availability?period=2026-10", headers=auth(api, "integrator"))
    assert resp.status == 403
    assert (await api.get("/api/v1/reports/availability?period=2026-10", headers=auth(api, "vendor"))).status == 403


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"reason": "政策追溯调整"}, 422, "period"),
        ({"period": "2026-10"}, 422, "reason"),
        ({"period": "2026-10", "reason": "  "}, 422, "reason"),
        ({"period": "2099-01", "reason": "x"}, 422, "period"),
        ({"period": "2026-10", "reason": "x", "group_by": "colour"}, 422, "group_by"),
    ],
)
async def test_reissue_bad_input_names_the_field(api: Any, body: dict[str, Any], status: int, field: str) -> None:
    resp = await api.post("/api/v1/reports/deductions/reissue", json=body, headers=auth(api))
    assert resp.status == status
    assert (await error_of(resp))["field"] == field


async def test_reissue_needs_ops(api: Any) -> None:
    body = {"period": "2026-10", "reason": "x"}
    assert (await api.post("/api/v1/reports/deductions/reissue", json=body)).status == 401
    resp = await api.post("/api/v1/reports/deductions/reissue", json=body, headers=auth(api, "vendor"))
    assert resp.status == 403


# ---------------------------------------------------------------- contract data

VENDORS_CSV = "厂商编号,厂商名称,类型,联系人,电话\nV1,科海,rental,张三,13800000000\nV2,海康,rental,李四,\n"


async def count(sessions: Any, model: Any) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar() or 0)


async def test_contract_import_csv_then_listing(api: Any, sessions: Any) -> None:
    resp = await api.post("/api/v1/contract/import?kind=vendors", data=VENDORS_CSV.encode(), headers=auth(api))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["imported"] == 2
    listing = await (await api.get("/api/v1/contract/vendors", headers=auth(api))).json()
    assert {r["id"]: r["name"] for r in listing["rows"]} == {"V1": "科海", "V2": "海康", "demo-vendor": "演示运维公司"}


async def test_contract_import_xlsx(api: Any, sessions: Any) -> None:
    wb = Workbook()
    ws = wb.active
    ws.append(["id", "vendor_id", "name", "year", "channel_count", "monthly_rent_per_channel"])
    ws.append(["B9", "demo-vendor", "科海2016", 2016, 300, 95.5])
    buf = io.BytesIO()
    wb.save(buf)
    resp = await api.post("/api/v1/contract/import?kind=batches", data=buf.getvalue(), headers=auth(api))
    assert resp.status == 200, await resp.text()
    async with sessions() as s:
        row = await s.get(T.RentalBatch, "B9")
    assert row is not None and row.channel_count == 300 and str(row.monthly_rent_per_channel) == "95.50"


async def test_contract_import_bad_row_writes_nothing(api: Any, sessions: Any) -> None:
    before = await count(sessions, T.ChannelContract)
    body = (
        "channel_id,name,vendor_id,station_id\n"
        "34020000001320000011,good,demo-vendor,demo-station\n"
        "3402000000132000001X,bad id,demo-vendor,demo-station\n"
        "34020000001320000013,bad vendor,V404,demo-station\n"
    )
    resp = await api.post("/api/v1/contract/import?kind=channels", data=body.encode(), headers=auth(api))
    assert resp.status == 422
    err = await error_of(resp)
    assert err["code"] == "invalid_rows" and err["line"] == 3 and err["field"] == "channel_id"
    assert {(e["line"], e["field"]) for e in err["errors"]} == {(3, "channel_id"), (4, "vendor_id")}
    assert await count(sessions, T.ChannelContract) == before  # the good row was not written either


async def test_jurisdiction_import_moves_channel(api: Any, sessions: Any) -> None:
    stations = "id,name\nS2,城南派出所\n"
    assert (
        await api.post("/api/v1/contract/import?kind=stations", data=stations.encode(), headers=auth(api))
    ).status == 200
    body = f"channel_id,station_id,valid_from\n{CH2},S2,2026-11-20 00:00\n"
    resp = await api.post("/api/v1/contract/import?kind=jurisdiction", data=body.encode(), headers=auth(api))
    assert resp.status == 200, await resp.text()
    async with sessions() as s:
        assert (await s.get(T.ChannelContract, CH2)).station_id == "S2"  # type: ignore[union-attr]
    rows = (await (await api.get("/api/v1/contract/jurisdiction", headers=auth(api))).json())["rows"]
    assert [(r["channel_id"], r["station_id"]) for r in rows] == [(CH2, "S2")]
    bad = f"channel_id,station_id\n{CH2},S404\n"
    resp = await api.post("/api/v1/contract/import?kind=jurisdiction", data=bad.encode(), headers=auth(api))
    assert resp.status == 422 and (await error_of(resp))["field"] == "station_id"


async def test_contract_bad_kind_and_empty_body(api: Any) -> None:
    resp = await api.post("/api/v1/contract/import?kind=cameras", data=b"a,b\n", headers=auth(api))
    assert resp.status == 400 and (await error_of(resp))["field"] == "kind"
    resp = await api.post("/api/v1/contract/import?kind=vendors", data=b"", headers=auth(api))
    assert resp.status == 400 and (await error_of(resp))["field"] == "body"
    resp = await api.get("/api/v1/contract/cameras", headers=auth(api))
    assert resp.status == 400 and (await error_of(resp))["field"] == "kind"


# ---------------------------------------------------------------- maintenance windows


async def test_maintenance_declare_list_and_overlap(api: Any) -> None:
    subject = f"channel:{CH2}"
    body = {"subject": subject, "start": "2026-12-01T09:00", "end": "2026-12-01T12:00", "reason": "换交换机"}
    resp = await api.post("/api/v1/maintenance", json=body, headers=auth(api))
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["start_ts"] == datetime(2026, 12, 1, 9, tzinfo=UTC8).timestamp()
    overlap = {**body, "start": "2026-12-01T11:00", "end": "2026-12-01T13:00"}
    resp = await api.post("/api/v1/maintenance", json=overlap, headers=auth(api))
    assert resp.status == 409 and (await error_of(resp))["field"] == "start"
    listed = await (await api.get(f"/api/v1/maintenance?subject={subject}", headers=auth(api))).json()
    assert [(w["id"], w["reason"], w["declared_by"]) for w in listed["windows"]] == [
        (created["id"], "换交换机", "ops:ops")
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subject": "camera:1", "start": 1, "end": 2}, "subject"),
        ({"subject": "channel:34020000001320000001", "start": "soon", "end": 2}, "start"),
        ({"subject": "channel:34020000001320000001", "start": 10, "end": 5}, "end"),
        ({"start": 1, "end": 2}, "subject"),
    ],
)
async def test_maintenance_bad_input(api: Any, body: dict[str, Any], field: str) -> None:
    resp = await api.post("/api/v1/maintenance", json=body, headers=auth(api))
    assert resp.status == 422
    assert (await error_of(resp))["field"] == field


# ---------------------------------------------------------------- policy


async def test_policy_versions(api: Any) -> None:
    before = await (await api.get("/api/v1/policy", headers=auth(api))).json()
    assert [v["version"] for v in before["versions"]] == [1] and before["current_version"] == 1
    body = {"effective_from": "2026-12-01", "body": {"grace_hours": 4, "rate_per_fault_hour": "3.00"}}
    resp = await api.post("/api/v1/policy", json=body, headers=auth(api))
    assert resp.status == 201 and (await resp.json())["version"] == 2
    after = await (await api.get("/api/v1/policy", headers=auth(api))).json()
    assert [v["version"] for v in after["versions"]] == [1, 2]
    assert after["versions"][1]["body"]["grace_hours"] == 4
    assert after["current_version"] == 1  # version 2 is not in force before December


async def test_policy_bad_field(api: Any) -> None:
    resp = await api.post(
        "/api/v1/policy", json={"effective_from": "2026-12-01", "body": {"grace_hours": "lots"}}, headers=auth(api)
    )
    assert resp.status == 422 and (await error_of(resp))["field"] == "grace_hours"
    resp = await api.post("/api/v1/policy", json={"effective_from": "12/01", "body": {}}, headers=auth(api))
    assert resp.status == 422 and (await error_of(resp))["field"] == "effective_from"


# ---------------------------------------------------------------- tickets


async def test_ticket_listing_scoped_by_vendor(api: Any) -> None:
    ops = await (await api.get("/api/v1/tickets?station=demo-station", headers=auth(api))).json()
    assert [tk["id"] for tk in ops["tickets"]] == [TICKET]
    mine = await (await api.get("/api/v1/tickets", headers=auth(api, "vendor"))).json()
    assert [tk["id"] for tk in mine["tickets"]] == [TICKET]
    other = await (await api.get("/api/v1/tickets", headers=auth(api, "other"))).json()
    assert other["tickets"] == []
    resp = await api.get("/api/v1/tickets?vendor=demo-vendor", headers=auth(api, "other"))
    assert resp.status == 403
    assert (await api.get(f"/api/v1/tickets/{TICKET}", headers=auth(api, "other"))).status == 404
    assert (await api.get("/api/v1/tickets", headers=auth(api, "unscoped"))).status == 403
    resp = await api.get("/api/v1/tickets?status=lost", headers=auth(api))
    assert resp.status == 400 and (await error_of(resp))["field"] == "status"


async def test_other_vendor_cannot_answer(api: Any) -> None:
    resp = await api.post(f"/api/v1/tickets/{TICKET}/feedback", json={"cause": "not us"}, headers=auth(api, "other"))
    assert resp.status == 404 and (await error_of(resp))["field"] == "ticket"
    detail = await (await api.get(f"/api/v1/tickets/{TICKET}", headers=auth(api))).json()
    assert detail["vendor_cause"] == "光缆被施工挖断" and detail["history"] == []
    # ops cannot answer for a vendor, vendors cannot confirm
    assert (await api.post(f"/api/v1/tickets/{TICKET}/feedback", json={"cause": "x"}, headers=auth(api))).status == 403
    assert (await api.post(f"/api/v1/tickets/{TICKET}/confirm", headers=auth(api, "vendor"))).status == 403


async def test_feedback_dispute_confirm_with_history(api: Any) -> None:
    repaired = datetime(2026, 10, 27, 14, 15, tzinfo=UTC8).timestamp()
    body = {"cause": "施工挖断光缆，已熔接", "actual_repair": "2026-10-27T14:15"}
    resp = await api.post(f"/api/v1/tickets/{TICKET}/feedback", json=body, headers=auth(api, "vendor"))
    assert resp.status == 200, await resp.text()
    got = await resp.json()
    assert got["status"] == "repaired" and got["repaired_ts"] == repaired
    assert got["vendor_cause"] == "施工挖断光缆，已熔接"
    resp = await api.post(f"/api/v1/tickets/{TICKET}/dispute", json={}, headers=auth(api))
    assert resp.status == 422 and (await error_of(resp))["field"] == "reason"
    resp = await api.post(f"/api/v1/tickets/{TICKET}/dispute", json={"reason": "时间不符"}, headers=auth(api))
    assert (await resp.json())["status"] == "disputed"
    resp = await api.post(f"/api/v1/tickets/{TICKET}/confirm", headers=auth(api))
    assert resp.status == 409 and (await error_of(resp))["field"] == "status"  # disputed: repair first
    resp = await api.post(
        f"/api/v1/tickets/{TICKET}/feedback",
        json={"cause": "复核", "expected_repair": "2026-10-27T12:00", "actual_repair": repaired - 600},
        headers=auth(api, "vendor"),
    )
    assert (await resp.json())["status"] == "repaired"
    resp = await api.post(f"/api/v1/tickets/{TICKET}/confirm", headers=auth(api))
    detail = await resp.json()
    assert detail["status"] == "confirmed"
    steps = [(h["action"], h["from_status"], h["to_status"], h["actor"]) for h in detail["history"]]
    assert steps == [
        ("repair", "repaired", "repaired", "vendor:demo"),
        ("dispute", "repaired", "disputed", "ops:ops"),
        ("answer", "disputed", "vendor_answered", "vendor:demo"),
        ("repair", "vendor_answered", "repaired", "vendor:demo"),
        ("confirm", "repaired", "confirmed", "ops:ops"),
    ]


async def test_feedback_all_or_nothing(api: Any, sessions: Any) -> None:
    # the answer step is fine, the repair time lies in the future: neither is kept
    body = {"cause": "新原因", "actual_repair": 4_000_000_000}
    resp = await api.post(f"/api/v1/tickets/{TICKET}/feedback", json=body, headers=auth(api, "vendor"))
    assert resp.status == 422 and (await error_of(resp))["field"] == "actual_repair"
    assert await count(sessions, T.TicketHistory) == 0


async def test_unknown_ticket_is_404_naming_the_field(api: Any) -> None:
    for path, who, body in (
        ("/api/v1/tickets/T20990101-0001/confirm", "ops", None),
        ("/api/v1/tickets/T20990101-0001/dispute", "ops", {"reason": "x"}),
        ("/api/v1/tickets/T20990101-0001/feedback", "vendor", {"cause": "x"}),
    ):
        resp = await api.post(path, json=body, headers=auth(api, who))
        assert resp.status == 404, path
        assert (await error_of(resp))["field"] == "ticket"


# ---------------------------------------------------------------- probe


async def test_probe_route(api: Any, services: Services) -> None:
    resp = await api.post(f"/api/v1/channels/{CH2}/probe", headers=auth(api))
    assert resp.status == 200
    assert (await resp.json())["faults"] == ["black"]
    assert services.reports.prober.calls == [(CH2, True)]
    resp = await api.post("/api/v1/channels/34020000001320000009/probe", headers=auth(api))
    assert resp.status == 404 and (await error_of(resp))["code"] == "channel_not_found"
    resp = await api.post("/api/v1/channels/12345/probe", headers=auth(api))
    assert resp.status == 400 and (await error_of(resp))["field"] == "channel_id"
    assert (await api.post(f"/api/v1/channels/{CH2}/probe", headers=auth(api, "vendor"))).status == 403


async def test_contract_checks_for_ops_only(api: Any) -> None:
    resp = await api.get("/api/v1/contract/checks", headers=auth(api))
    assert resp.status == 200
    body = await resp.json()
    assert body["count"] == len(body["alarms"])
    assert all(set(a) == {"kind", "subject", "name", "detail"} for a in body["alarms"])
    assert (await api.get("/api/v1/contract/checks", headers=auth(api, "vendor"))).status == 403
