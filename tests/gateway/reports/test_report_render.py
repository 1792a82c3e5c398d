"""CSV, XLSX (checked cell by cell with openpyxl) and HTML (screenshotted by headless Chromium)."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
import scenario as S
from openpyxl import load_workbook

from gateway.reports.builder import make_report
from gateway.reports.period import parse_period
from gateway.reports.render import Report, render, svg_bar_chart, to_csv, to_html, to_xlsx

NOW = S.L(12, 5)
NOV = parse_period("2026-11", now=NOW)


def report(kind: str, period: str = "2026-11") -> Report:
    return make_report(
        kind,
        parse_period(period, now=NOW),
        events=S.EVENTS,
        contract=S.CONTRACT,
        policy=S.POLICY,
        tickets=S.TICKETS,
        maintenance=S.MAINTENANCE,
    )


def test_availability_csv_has_bom_and_contract_columns() -> None:
    data = to_csv(report("availability"))
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data[3:].decode("utf-8"))))
    assert list(rows[0])[:14] == [
        "channel_id",
        "name",
        "site",
        "link",
        "vendor",
        "station",
        "expected_s",
        "online_s",
        "offline_s",
        "no_video_s",
        "picture_fault_s",
        "maintenance_s",
        "unknown_s",
        "availability",
    ]
    assert len(rows) == 4  # no total row in CSV: scripts read channels only
    r2 = next(r for r in rows if r["channel_id"] == S.C2)
    assert (r2["name"], r2["offline_s"], r2["availability"]) == ("东门2", "100800", "0.9606")
    assert b"\r\n" in data


def test_daily_faults_csv_columns() -> None:
    data = to_csv(report("daily-faults", "2026-11-10")).decode("utf-8-sig")
    header, row = list(csv.reader(io.StringIO(data)))
    for col in [
        "station",
        "channel_id",
        "name",
        "site",
        "owner",
        "link",
        "vendor",
        "fault",
        "since",
        "duration_s",
        "ticket",
        "feedback",
        "status",
    ]:
        assert col in header
    rec = dict(zip(header, row, strict=True))
    assert rec["since"] == "2026-11-10T10:00:00+08:00" and rec["duration_s"] == "18000"


def test_deductions_xlsx_cell_by_cell() -> None:
    wb = load_workbook(io.BytesIO(to_xlsx(report("deductions"))))
    assert wb.sheetnames == [
        "月度运维扣款汇总表",
        "扣款明细（按通道）",
        "月度运维扣款表（厂商×派出所）",
        "扣款政策内容",
    ]
    policy = {r[0].value: r[1].value for r in wb["扣款政策内容"].iter_rows(min_row=2) if r[0].value}
    assert policy["扣款政策版本"] == "default v3 (2000-01-01)"
    assert (policy["grace_hours"], policy["rate_per_fault_hour"]) == ("2", "1.00")
    ws = wb["月度运维扣款汇总表"]
    assert ws["A1"].value == "月度运维扣款汇总表" and ws["A1"].font.bold
    assert (ws["A2"].value, ws["B2"].value) == ("统计周期", "2026-11")
    assert (ws["A3"].value, ws["B3"].value) == ("扣款政策版本", "default v3 (2000-01-01)")
    header = [c.value for c in ws[5]]
    assert header == ["厂商", "名称", "通道数", "故障路数", "租金(元)", "扣款(元)", "应付(元)", "政策版本"]
    assert all(c.font.bold for c in ws[5])
    assert ws.freeze_panes == "A6"
    assert ws.auto_filter.ref == "A5:H7"
    assert [c.value for c in ws[6]] == ["V1", "科海", 2, 1, 200.0, 77.0, 123.0, "default v3 (2000-01-01)"]
    # V2's rent: C4 200.00 + C3 admitted 15 Nov, 16 of 30 days: 106.67 (issue 11.6)
    assert [c.value for c in ws[7]][:7] == ["V2", "海康", 2, 0, 306.67, 2.0, 304.67]
    total = [c.value for c in ws[8]]
    assert total[0] == "合计" and total[4:7] == [506.67, 79.0, 427.67] and ws["A8"].font.bold
    assert ws["F6"].number_format == "#,##0.00" and ws["C6"].number_format == "0"
    assert ws.column_dimensions["H"].width >= len("default v3 (2000-01-01)")
    signatures = [ws.cell(row=r, column=1).value for r in range(9, ws.max_row + 1)]
    assert ws.cell(row=11, column=3).value == "________________________"
    assert [s for s in signatures if s] == [
        "派出所（签字）：",
        "运维单位（签字/盖章）：",
        "科技信息化部门（签字）：",
        "科技信息化部门负责人（签字、盖章）：",
        "日期：",
    ]
    lines = wb["扣款明细（按通道）"]
    assert lines.freeze_panes == "A6"
    assert [c.value for c in lines[5]][:3] == ["厂商", "通道编码", "名称"]
    row = [c.value for c in lines[7]]
    # episodes, fault h, fault h:mm, billable h, beyond deadline h, failed, held (disputed) h, tickets, rent,
    # deduction; vendor and batch by name
    assert row[0] == "科海" and row[3] == "科海2016"
    assert row[1] == S.C2 and row[5:15] == [2, 28.0, "28:00", 24.0, 0.0, 1, 0.0, None, 100.0, 74.0]


def test_availability_xlsx_formats_and_english() -> None:
    wb = load_workbook(io.BytesIO(to_xlsx(report("availability"), lang="en")))
    ws = wb.active
    assert ws.title == "Channel availability"
    assert [ws["A2"].value, ws["A3"].value, ws["A4"].value, ws["A5"].value] == [
        "Period",
        "Grouped by",
        "Intact rate",
        None,
    ]
    assert ws.freeze_panes == "A7"
    hdr = [c.value for c in ws[6]]
    assert hdr[0] == "Channel ID" and hdr[-1] == "Availability"
    assert ws.cell(row=7, column=1).value == S.C1
    assert (
        ws.cell(row=7, column=14).value == pytest.approx(0.9930) and ws.cell(row=7, column=14).number_format == "0.00%"
    )
    assert ws.cell(row=7, column=7).value == 2592000 and ws.cell(row=7, column=7).number_format == "#,##0.###"
    assert ws.cell(row=11, column=1).value == "Total" and ws.cell(row=11, column=14).value == pytest.approx(0.9845)


def test_daily_faults_xlsx_datetimes_and_translated_values() -> None:
    wb = load_workbook(io.BytesIO(to_xlsx(report("daily-faults", "2026-11-10"))))
    ws = wb.active
    hdr = [c.value for c in ws[4]]
    assert ws.freeze_panes == "A5"
    row = dict(zip(hdr, [c.value for c in ws[5]], strict=True))
    assert row["故障开始"] == datetime(2026, 11, 10, 10, 0) and row["故障类型"] == "离线"
    assert row["状态"] == "已修复待确认"
    assert row["原因"] == "心跳丢失"  # keepalive_lost: causes in Chinese (issue 11)


def test_html_is_self_contained_with_svg_chart() -> None:
    page = to_html(report("availability"))
    assert page.startswith("<!DOCTYPE html>") and '<html lang="zh-CN">' in page
    assert "<svg" in page and "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "视频通道在线率统计" in page and "96.06%" in page
    en = to_html(report("availability"), lang="en")
    assert '<html lang="en">' in en and "Channel availability" in en
    deductions = to_html(report("deductions"))
    assert "派出所（签字）：" in deductions and "扣款明细（按通道）" in deductions
    assert render(report("link-fees"), "html").startswith(b"<!DOCTYPE html>")
    with pytest.raises(ValueError):
        render(report("link-fees"), "pdf")


def test_svg_chart_escapes_labels() -> None:
    svg = svg_bar_chart(["<b>&"], [0.5], percent=True)
    assert "&lt;b&gt;&amp;" in svg and "50.00%" in svg


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.interop
@pytest.mark.requires("chromium")
def test_chromium_renders_the_html_report(tmp_path: Path) -> None:
    page = tmp_path / "deductions.html"
    page.write_text(to_html(report("deductions")), encoding="utf-8")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[1] == 1280
    assert float(img.std()) > 5  # not a blank page: text, table lines and bars were painted


def test_money_cells_are_exact_in_csv() -> None:
    data = to_csv(report("link-fees")).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(data)))
    l2 = next(r for r in rows if r["link"] == "L2")
    assert Decimal(l2["deduction"]) == Decimal("20.83") and l2["payable"] == "2979.17"


@pytest.mark.parametrize("kind", ["deductions", "availability", "link-fees"])
def test_same_report_same_bytes_and_json_round_trip(kind: str) -> None:
    """Issue 11.9: rendering a report twice gives the same bytes in every format — the XLSX too:
    its zip entries carry a fixed date and docProps/core.xml says created = modified = the
    report's generated_at (2026-12-05 00:00 +08:00 = 2026-12-04T16:00:00Z), never the wall clock.
    A report stored as JSON (a frozen issue) renders to exactly the same bytes."""
    import json
    import zipfile

    from gateway.reports.frozen import report_from_json, report_to_json

    r = report(kind)
    r.meta["generated_at"] = "2026-12-05 00:00:00"
    back = report_from_json(json.loads(json.dumps(report_to_json(r), ensure_ascii=False)))
    for fmt in ("csv", "xlsx", "html"):
        assert render(r, fmt) == render(r, fmt) == render(back, fmt)
    z = zipfile.ZipFile(io.BytesIO(to_xlsx(r)))
    assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    core = z.read("docProps/core.xml").decode()
    assert core.count("2026-12-04T16:00:00Z") == 2
