"""The daily fault notice as webhook messages, and the ledger scheduler wired to the report service.

`gateway.reports.scheduler` runs the minute loop and knows no report service, so this module
hands it its jobs: open due tickets (`service.open_due_tickets`, faults ≥ 10
min) and build the notice targets — `report.webhook_url` gets every station's rows, each police
station with a `webhook_url` gets its own rows (DingTalk or WeCom payload chosen by the URL).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from typing import Any

from gateway.reports import records, service
from gateway.reports.notify import reconciliation_markdown, repairs_markdown, robot_kind, robot_payload
from gateway.reports.scheduler import DailyJob, NoticeResult, NoticeTarget, Scheduler, post_robot, send_notice
from gateway.reports.table import Table

TICKET_AFTER_S = 600.0


def _lang(settings: Any) -> str:
    return "en" if str(getattr(settings.report, "language", "zh")).startswith("en") else "zh"


def previous_notice_ts(settings: Any, day: date) -> float:
    """When the previous notice was due: `report.notice_hour` on the local day before `day`."""
    tz = service.report_timezone(settings.report.timezone)
    hour = clock_time(settings.report.notice_hour)
    return datetime.combine(day - timedelta(days=1), hour, tzinfo=tz).timestamp()


async def notice_targets(
    sessions: Any, settings: Any, day: date, *, now: float, since: float | None = None
) -> list[NoticeTarget]:
    """The daily fault notice of local `day` for every configured webhook.

    It lists every fault since the previous notice (`since`, default the previous day's notice
    hour) up to `now` (issue 11.10): a fault that began after one notice and recovered before the
    next is in the next one. Each row names the channel's maintenance vendor.
    """
    since = previous_notice_ts(settings, day) if since is None else since
    report, tz = await service.compute_report(
        sessions, settings, "daily-faults", day.isoformat(), now=now, window_start=min(since, now)
    )
    table = report.tables[0]
    lang = _lang(settings)
    out: list[NoticeTarget] = []
    url = settings.report.webhook_url
    if url:
        out.append(NoticeTarget("all", url, robot_payload(table, robot_kind(url), lang=lang, tz=tz)))
    for st in await records.stations(sessions):
        hook = st.get("webhook_url")
        if not hook:
            continue
        names = {st["id"], st["name"]}
        mine = Table(table.kind, table.columns, [r for r in table.rows if r.get("station") in names])
        mine.meta = dict(table.meta)
        out.append(NoticeTarget(f"station:{st['id']}", hook, robot_payload(mine, robot_kind(hook), lang=lang, tz=tz)))
    return out


async def send_now(sessions: Any, settings: Any, day: date | None = None, *, now: float | None = None) -> NoticeResult:
    """`gbgate notice send [--date]`: open due tickets, then push `day`'s notice (default today)."""
    now = time.time() if now is None else now
    tz = service.report_timezone(settings.report.timezone)
    if day is None:
        from datetime import datetime

        day = datetime.fromtimestamp(now, tz).date()
    await service.open_due_tickets(sessions, settings, now=now, min_duration_s=TICKET_AFTER_S)

    async def targets(d: date, t: float) -> list[NoticeTarget]:
        return await notice_targets(sessions, settings, d, now=t)

    return await send_notice(targets, day, now=now)


def make_scheduler(
    sessions: Any, settings: Any, *, clock: Callable[[], float] = time.time, tick: float = 60.0
) -> Scheduler:
    """The app's scheduler: due tickets every tick, the notice at report.notice_hour."""

    async def open_tickets(now: float) -> list[str]:
        return await service.open_due_tickets(sessions, settings, now=now, min_duration_s=TICKET_AFTER_S)

    async def targets(day: date, now: float) -> list[NoticeTarget]:
        return await notice_targets(sessions, settings, day, now=now)

    return Scheduler(
        open_tickets=open_tickets,
        notice_targets=targets,
        tz=service.report_timezone(settings.report.timezone),
        notice_hour=settings.report.notice_hour,
        clock=clock,
        tick=tick,
        jobs=issue_jobs(sessions, settings),
    )


MONTHLY_KINDS = ("deductions", "availability", "link-fees")
#: the regulation's daily publication of repairs and deductions
PUBLICATION_HOUR = 17


async def _post(url: str, text: str, title: str) -> None:
    """One markdown robot message (DingTalk or WeCom by the URL); raises RuntimeError if refused."""
    import aiohttp

    if robot_kind(url) == "wecom":
        payload: dict[str, Any] = {"msgtype": "markdown", "markdown": {"content": text}}
    else:
        payload = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
    async with aiohttp.ClientSession() as http:
        await post_robot(http, url, payload)


def issue_jobs(sessions: Any, settings: Any) -> tuple[DailyJob, ...]:
    """On the 2nd at the notice hour, issue (and so freeze) last month's deduction, availability
    and link-fee sheets; on 2 January also last year's annual offline-camera deduction. The 2nd,
    because a period closes a day after it ends (`gateway.reports.frozen`)."""

    async def monthly(day: date, now: float) -> None:
        last = (day.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
        for kind in MONTHLY_KINDS:
            await service.build_report(sessions, settings, kind, last, fmt="xlsx", now=now)

    async def annual(day: date, now: float) -> None:
        await service.build_report(sessions, settings, "annual-offline", str(day.year - 1), fmt="xlsx", now=now)

    async def thursday(day: date, now: float) -> None:
        """The week's reconciliation with amounts per vendor × station, to report.webhook_url."""
        url = settings.report.webhook_url
        if not url:
            return
        report, _ = await service.compute_report(sessions, settings, "reconciliation", day.isoformat(), now=now)
        await _post(url, reconciliation_markdown(report.tables, lang=_lang(settings)), "周对账")

    async def publication(day: date, now: float) -> None:
        """17:00: what was repaired since yesterday's publication and the deductions that follow."""
        url = settings.report.webhook_url
        if not url:
            return
        tz = service.report_timezone(settings.report.timezone)
        since = datetime.combine(day - timedelta(days=1), clock_time(PUBLICATION_HOUR), tzinfo=tz).timestamp()
        report, _ = await service.compute_report(
            sessions, settings, "repairs", day.isoformat(), now=now, window_start=since
        )
        text = repairs_markdown(report.tables[0], lang=_lang(settings), tz=tz)
        await _post(url, text, "每日修复及扣款公示")

    hour = settings.report.notice_hour
    return (
        DailyJob("repair-publication", PUBLICATION_HOUR, lambda d: True, publication),
        DailyJob("monthly-sheets", hour, lambda d: d.day == 2, monthly),
        DailyJob("january-deduction", hour, lambda d: d.month == 1 and d.day == 2, annual),
        DailyJob("thursday-reconciliation", hour, lambda d: d.weekday() == 3, thursday),
    )
