"""Background jobs of the ledger (issue 5 §6): due fault tickets every minute, the daily notice.

Every `tick` seconds (one minute):

* faults that have lasted ≥ `ticket_after` seconds (10 min) and have no open ticket get one
  (`service.open_due_tickets`);
* at `report.notice_hour` local time (`report.timezone`) the daily fault notice — every fault
  ongoing or seen since the previous notice (the previous day's notice hour, issue 11.10: one
  that began after a notice and recovered before the next is not lost), with `since` dated from
  when it really began and the vendor named — goes to `report.webhook_url` (every station) and to each police
  station's own `webhook_url` (its rows only) as a DingTalk/WeCom robot markdown message.

A target that fails (connection refused, HTTP ≥ 300, a robot `errcode` ≠ 0) is logged and retried
on the next tick until it succeeds or the local day ends; a target that succeeded is not sent
again that day. Nothing here may end the loop: each job catches and logs its own failure. A
gateway started after the notice hour sends no notice that day (`gbgate notice send` does).

The jobs themselves are injected (`gateway.reports.notice.make_scheduler` wires the report
service in), as is the clock, and `run_once(now)` does one tick, so tests drive it without sleeping.
It lives with the reports it schedules and delivers: the health ledger only records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

POST_TIMEOUT_S = 10.0


@dataclass(slots=True, frozen=True)
class NoticeTarget:
    """One webhook and the message it gets (`label`: "all" or "station:<id>")."""

    label: str
    url: str
    payload: dict[str, Any]


@dataclass(slots=True)
class NoticeResult:
    day: date
    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # label → reason

    @property
    def ok(self) -> bool:
        return not self.failed


async def post_robot(http: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> None:
    """POST one robot message; raises RuntimeError saying why it was not accepted."""
    try:
        async with http.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S)) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise RuntimeError(f"HTTP {resp.status}: {text[:200]}")
            # both robots answer {"errcode": 0, "errmsg": "ok"}; anything else is a refusal
            with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
                body = await resp.json(content_type=None)
                if isinstance(body, dict) and body.get("errcode", 0) != 0:
                    raise RuntimeError(f"robot refused: errcode {body.get('errcode')} {body.get('errmsg', '')}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None


NoticeSource = Callable[[date, float], Awaitable[list[NoticeTarget]]]
TicketOpener = Callable[[float], Awaitable[list[str]]]


@dataclass(slots=True, frozen=True)
class DailyJob:
    """A job run once on the local days `due(day)` says, from `hour` on (retried each tick until it
    succeeds or the day ends), e.g. issuing last month's sheets on the 2nd (maintenance regulation:
    the monthly sheet and the January deduction are scheduled, not remembered)."""

    name: str
    hour: int
    due: Callable[[date], bool]
    run: Callable[[date, float], Awaitable[Any]]


async def send_notice(
    targets: NoticeSource,
    day: date,
    *,
    now: float,
    http: aiohttp.ClientSession | None = None,
    skip: set[str] | frozenset[str] = frozenset(),
) -> NoticeResult:
    """Build `day`'s notice and push it to every target not in `skip`; never raises for one target."""
    result = NoticeResult(day)
    own = http is None
    session = aiohttp.ClientSession() if http is None else http
    try:
        for target in await targets(day, now):
            if target.label in skip:
                continue
            try:
                await post_robot(session, target.url, target.payload)
                result.sent.append(target.label)
            except RuntimeError as exc:
                result.failed[target.label] = str(exc)
    finally:
        if own:
            await session.close()
    return result


class Scheduler:
    """The minute loop. `start()`/`stop()` from the composition root; `run_once(now)` in tests."""

    def __init__(
        self,
        *,
        open_tickets: TicketOpener,
        notice_targets: NoticeSource,
        tz: tzinfo,
        notice_hour: int,
        clock: Callable[[], float] = time.time,
        tick: float = 60.0,
        jobs: tuple[DailyJob, ...] = (),
    ) -> None:
        self.jobs = jobs
        self._jobs_done: dict[str, date] = {}
        self.open_tickets = open_tickets
        self.notice_targets = notice_targets
        self.tz = tz
        self.notice_hour = notice_hour
        self.clock = clock
        self.tick = tick
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._notice_day: date | None = None  # the day whose notice is being (or was) sent
        self._notice_sent: set[str] = set()
        self._notice_done = False
        self.last_notice: NoticeResult | None = None
        self.tickets_opened = 0
        self.errors = 0

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._loop(), name="ledger-scheduler")

    @property
    def running(self) -> bool:
        """The minute loop is alive (for the node's /healthz)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once(self.clock())
            except Exception:  # run_once already guards each job; this is the last line
                self.errors += 1
                log.exception("scheduler tick failed")
            await asyncio.sleep(self.tick)

    async def run_once(self, now: float) -> None:
        """One tick: open due tickets, then send (or retry) the daily notice if it is due."""
        try:
            opened = await self.open_tickets(now)
            self.tickets_opened += len(opened)
            if opened:
                log.info("opened fault tickets %s", ", ".join(opened))
        except Exception:
            self.errors += 1
            log.exception("opening due fault tickets failed; retrying next tick")
        try:
            await self._notice_job(now)
        except Exception:
            self.errors += 1
            log.exception("daily fault notice failed; retrying next tick")
        await self.run_jobs(now)

    async def run_jobs(self, now: float) -> list[str]:
        """Run every daily job due at `now` and not yet done today; names of those that ran."""
        local = datetime.fromtimestamp(now, self.tz)
        ran = []
        for job in self.jobs:
            if self._jobs_done.get(job.name) == local.date() or local.hour < job.hour or not job.due(local.date()):
                continue
            try:
                await job.run(local.date(), now)
            except Exception:
                self.errors += 1
                log.exception("scheduled job %s failed; retrying next tick", job.name)
                continue
            self._jobs_done[job.name] = local.date()
            ran.append(job.name)
            log.info("scheduled job %s done for %s", job.name, local.date())
        return ran

    def notice_due(self, now: float) -> bool:
        """Is today's notice due (or still owed after a failure) at `now`?"""
        local = datetime.fromtimestamp(now, self.tz)
        if local.date() != self._notice_day:
            self._notice_day, self._notice_sent, self._notice_done = local.date(), set(), False
            if local.hour > self.notice_hour:
                self._notice_done = True  # started after the hour: not today (gbgate notice send)
        return not self._notice_done and local.hour >= self.notice_hour

    async def _notice_job(self, now: float) -> None:
        if not self.notice_due(now):
            return
        day = self._notice_day
        assert day is not None
        http = self._http or aiohttp.ClientSession()
        try:
            result = await send_notice(self.notice_targets, day, now=now, http=http, skip=self._notice_sent)
        finally:
            if http is not self._http:
                await http.close()
        self.last_notice = result
        self._notice_sent.update(result.sent)
        for label, reason in result.failed.items():
            self.errors += 1
            log.warning("fault notice %s to %s failed (%s); retrying next tick", day, label, reason)
        if result.ok:
            self._notice_done = True
            log.info("fault notice %s sent to %s", day, ", ".join(sorted(self._notice_sent)) or "nobody")
