"""Robot payloads for the daily notice: grouped by station, bounded in size."""

from __future__ import annotations

import json

import pytest
import scenario as S

from gateway.reports.builder import make_report
from gateway.reports.notify import notice_markdown, robot_kind, robot_payload
from gateway.reports.period import parse_period
from gateway.reports.table import Table


def notice(day: str) -> Table:
    r = make_report(
        "daily-faults",
        parse_period(day, now=S.L(12, 5)),
        events=S.EVENTS,
        contract=S.CONTRACT,
        policy=S.POLICY,
        tickets=S.TICKETS,
        maintenance=S.MAINTENANCE,
    )
    return r.tables[0]


def test_markdown_lists_faults_by_station() -> None:
    text = notice_markdown(notice("2026-11-10"))
    assert text.splitlines() == [
        "### 每日故障通报 2026-11-10",
        "#### 城东派出所",
        "- **东门1** · 离线 · 11-10 10:00 · 5.0h · 厂商: 科海 · T20261110-0001 已修复待确认 · 光纤被挖断",
    ]
    assert "无故障" in notice_markdown(notice("2026-11-02"))


def test_notice_covers_everything_since_the_previous_one() -> None:
    """Issue 11.10. The notice of 11 Nov at 10:00 covers 10 Nov 10:00 → 11 Nov 10:00. C1 was
    offline 10 Nov 10:00-15:00: it started at the previous notice and recovered long before this
    one, so the old window (11 Nov 00:00 → 10:00) missed it; now it is listed, 5.0 h, with its
    vendor 科海. The window is stated under the title."""
    period = parse_period("2026-11-11", now=S.L(11, 11, 10))
    old = make_report("daily-faults", period, events=S.EVENTS, contract=S.CONTRACT, policy=S.POLICY)
    assert old.tables[0].rows == []
    table = make_report(
        "daily-faults",
        period,
        events=S.EVENTS,
        contract=S.CONTRACT,
        policy=S.POLICY,
        tickets=S.TICKETS,
        window_start=S.L(11, 10, 10),
    ).tables[0]
    assert [(r["channel_id"], r["since"], r["duration_s"], r["vendor"]) for r in table.rows] == [
        (S.C1, S.L(11, 10, 10), 18000, "科海")
    ]
    lines = notice_markdown(table).splitlines()
    assert lines[1] == "通报区间: 2026-11-10 10:00 → 2026-11-11 10:00"
    assert "厂商: 科海" in lines[3]


def test_payloads() -> None:
    table = notice("2026-11-06")
    ding = robot_payload(table, "dingtalk")
    assert ding["msgtype"] == "markdown" and "东门2" in ding["markdown"]["text"]
    wecom = robot_payload(table, "wecom", lang="en")
    assert "Daily fault notice" in wecom["markdown"]["content"] and "offline" in wecom["markdown"]["content"]
    json.dumps(ding, ensure_ascii=False)
    with pytest.raises(ValueError):
        robot_payload(table, "telegram")
    assert robot_kind("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=x") == "wecom"
    assert robot_kind("https://oapi.dingtalk.com/robot/send?access_token=x") == "dingtalk"


def test_long_notice_is_cut_at_a_row() -> None:
    table = notice("2026-11-10")
    row = table.rows[0]
    table.rows = [dict(row, channel_id=f"{i:020d}", name=f"通道{i}") for i in range(400)]
    text = notice_markdown(table)
    assert len(text.encode()) <= 4096
    assert text.splitlines()[-1].startswith("… ") and "条未列出" in text
    shown = sum(1 for line in text.splitlines() if line.startswith("- "))
    assert text.splitlines()[-1] == f"… {400 - shown} 条未列出，详见报表"
