"""Fault notices as DingTalk / WeCom group-robot messages (issue 5 §6). Pure: payloads only.

Both robots accept a markdown message (DingTalk `{"msgtype": "markdown", "markdown": {"title",
"text"}}`, WeCom `{"msgtype": "markdown", "markdown": {"content"}}`) of at most 4,096 bytes
(WeCom's limit; DingTalk's is larger), so a long notice is cut at a row boundary with a line
saying how many rows were left out — the full list is in the report itself. The app posts the
payload to `report.webhook_url` (or the station's / vendor's own URL) at `report.notice_hour`.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from gateway.health.timeline import UTC8
from gateway.reports.i18n import t, value
from gateway.reports.table import Table

MAX_BYTES = 4096


def _line(row: dict[str, Any], lang: str, tz: tzinfo) -> str:
    since = datetime.fromtimestamp(row["since"], tz).strftime("%m-%d %H:%M") if row.get("since") else ""
    hours = float(row.get("duration_s") or 0) / 3600
    head = f"**{row.get('name') or row.get('channel_id')}**"
    if (row.get("channels") or 1) > 1:  # a lower platform's outage: its ID and how many it took down
        head = f"**{row['channel_id']}** ({row['channels']} {t('channels', lang)}: {row.get('name', '')})"
    parts = [
        head,
        str(value("fault", row.get("fault"), lang)),
        f"{since}",
        f"{hours:.1f}h",
    ]
    if row.get("vendor"):
        parts.append(f"{t('vendor', lang)}: {row['vendor']}")
    if row.get("ticket"):
        parts.append(f"{row['ticket']} {value('status', row.get('status'), lang)}")
    if row.get("feedback"):
        parts.append(str(row["feedback"]))
    return "- " + " · ".join(parts)


def notice_markdown(table: Table, *, lang: str = "zh", tz: tzinfo = UTC8, limit: int = MAX_BYTES) -> str:
    """The daily fault notice as markdown, grouped by station, cut to `limit` bytes."""
    title = f"### {t('title.daily-faults', lang)} {table.meta.get('period', '')}"
    if table.meta.get("notice_window"):
        title += f"\n{t('meta.notice_window', lang)}: {table.meta['notice_window']}"
    lines = [title]
    if not table.rows:
        lines.append("- " + ("无故障" if lang != "en" else "no faults"))
        return "\n".join(lines)
    station = None
    used = len(title.encode())
    for i, row in enumerate(table.rows):
        chunk = []
        if row.get("station") != station:
            station = row.get("station")
            chunk.append(f"#### {station or '-'}")
        chunk.append(_line(row, lang, tz))
        text = "\n".join(chunk)
        more = len(table.rows) - i
        tail = f"\n… {more} " + ("条未列出，详见报表" if lang != "en" else "more in the report")
        if used + len(text.encode()) + 1 + len(tail.encode()) > limit:
            lines.append(tail.strip())
            break
        lines.append(text)
        used += len(text.encode()) + 1
    return "\n".join(lines)


def robot_payload(table: Table, robot: str, *, lang: str = "zh", tz: tzinfo = UTC8) -> dict[str, Any]:
    """JSON body for a `dingtalk` or `wecom` group robot."""
    text = notice_markdown(table, lang=lang, tz=tz)
    if robot == "dingtalk":
        return {"msgtype": "markdown", "markdown": {"title": t("title.daily-faults", lang), "text": text}}
    if robot == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": text}}
    raise ValueError(f"unknown robot {robot!r}: dingtalk or wecom")


def robot_kind(url: str) -> str:
    """Which robot a webhook URL belongs to (by host), defaulting to DingTalk's format."""
    return "wecom" if "qyapi.weixin.qq.com" in url else "dingtalk"


def reconciliation_markdown(report_tables: list[Table], *, lang: str = "zh") -> str:
    """The Thursday reconciliation as a robot message: amounts per vendor × station, and how many
    tickets each check gave (the full list is in the report)."""
    recon, amounts = report_tables[0], report_tables[1]
    title = "周对账" if lang != "en" else "Weekly reconciliation"
    lines = [f"### {title} {recon.meta.get('period', '')}"]
    for row in amounts.rows:
        lines.append(
            f"- **{row['vendor']} × {row['station']}** · {t('rent', lang)} {row['rent']} · "
            f"{t('deduction', lang)} {row['deduction']} · {t('payable', lang)} {row['payable']}"
        )
    counts: dict[str, int] = {}
    for row in recon.rows:
        counts[row["check"]] = counts.get(row["check"], 0) + 1
    if counts:
        lines.append(" · ".join(f"{value('check', k, lang)} {n}" for k, n in sorted(counts.items())))
    return "\n".join(lines)


def repairs_markdown(table: Table, *, lang: str = "zh", tz: tzinfo = UTC8, limit: int = MAX_BYTES) -> str:
    """The 17:00 publication: what was repaired since the last one and the deduction that follows."""
    title = "每日修复及扣款公示" if lang != "en" else "Repairs and deductions"
    lines = [f"### {title} {table.meta.get('period', '')}"]
    if not table.rows:
        lines.append("- " + ("无" if lang != "en" else "none"))
        return "\n".join(lines)
    used = len(lines[0].encode())
    for i, row in enumerate(table.rows):
        back = datetime.fromtimestamp(row["recovered"], tz).strftime("%m-%d %H:%M")
        parts = [
            f"**{row.get('name') or row['channel_id']}**",
            str(row.get("station") or "-"),
            str(row.get("vendor") or "-"),
            str(value("fault", row.get("fault"), lang)),
            f"{row['fault_hm']}",
            f"{back}",
            f"{t('deduction', lang)} {row['deduction']}",
        ]
        if row.get("ticket"):
            parts.append(f"{row['ticket']} {value('status', row.get('status'), lang)}")
        text = "- " + " · ".join(parts)
        tail = f"\n… {len(table.rows) - i} " + ("条未列出，详见报表" if lang != "en" else "more in the report")
        if used + len(text.encode()) + 1 + len(tail.encode()) > limit:
            lines.append(tail.strip())
            break
        lines.append(text)
        used += len(text.encode()) + 1
    if table.total:
        lines.append(f"{t('total', lang)} {t('deduction', lang)} {table.total['deduction']}")
    return "\n".join(lines)
