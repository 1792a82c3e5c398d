"""One entry point from ledger events + contract data to a `Report` of any kind (pure).

Kinds (contract.md `gbgate report KIND`): daily-faults, availability, link-fees, deductions,
reconciliation, annual-offline. Windows:

* daily-faults for a day lists the faults overlapping that day; the ledger is built from
  `lookback_days` earlier so a long fault shows when it really began (events for the lookback
  must be supplied).
* repairs (the 17:00 publication) lists the faults that ended in the day (or since `window_start`)
  with the deduction each leads to;
* reconciliation for a day covers the week ending with that day (the Thursday meeting reviews
  the seven days before it); for a month or year, the whole period.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from gateway.health.timeline import Event
from gateway.reports.annual import annual_offline_table
from gateway.reports.availability import availability_table, uplink_table
from gateway.reports.deductions import DeductionPolicy, deductions_table, repairs_table, station_sheet
from gateway.reports.errors import ReportError
from gateway.reports.faults import Ticket, daily_faults_table, reconciliation_table
from gateway.reports.ledger import MaintenanceDecl, build_ledger
from gateway.reports.link_fees import link_fees_table
from gateway.reports.model import ContractData
from gateway.reports.period import Period
from gateway.reports.render import Report
from gateway.reports.table import Table

KINDS = ("daily-faults", "availability", "link-fees", "deductions", "reconciliation", "annual-offline", "repairs")
DAY_S = 86_400.0


def event_window(kind: str, period: Period, *, lookback_days: int = 31) -> tuple[float, float]:
    """[start, end) of the events a report of `kind` needs (plus each subject's last event before)."""
    if kind in ("daily-faults", "repairs"):
        return period.start - lookback_days * DAY_S, period.end
    if kind == "reconciliation":
        start = period.full_end - 7 * DAY_S if period.kind == "day" else period.start
        return start - lookback_days * DAY_S, period.end
    return period.start, period.end


def make_report(
    kind: str,
    period: Period,
    *,
    events: Iterable[Event],
    contract: ContractData,
    policy: DeductionPolicy,
    tickets: Iterable[Ticket] = (),
    maintenance: Iterable[MaintenanceDecl] = (),
    group_by: str = "channel",
    lookback_days: int = 31,
    window_start: float | None = None,
) -> Report:
    """Compute the report; render it with `gateway.reports.render.render`.

    `window_start` (daily-faults only) starts the notice's window earlier than the day's
    midnight: the daily notice covers everything since the previous notice (issue 11.10).
    """
    if kind not in KINDS:
        raise ReportError(f"unknown report kind {kind!r}: one of {', '.join(KINDS)}")
    events = list(events)
    maintenance = list(maintenance)
    tickets = list(tickets)
    if kind in ("daily-faults", "reconciliation", "repairs"):
        start, _ = event_window(kind, period, lookback_days=lookback_days)
        wide = replace(period, start=start, first=period.first - timedelta(days=lookback_days))
        ledger = build_ledger(events, contract, wide, maintenance=maintenance)
        ledger.period = replace(wide, label=period.label)
        if kind in ("daily-faults", "repairs") and window_start is not None:
            if not start < window_start <= period.end:
                raise ReportError("since: must lie within the lookback before the notice")
            window = (window_start, period.end)
        else:
            window = (start + lookback_days * DAY_S, period.end)
        if kind == "repairs":
            table = repairs_table(ledger, contract, policy, tickets, window=window)
        elif kind == "daily-faults":
            table = daily_faults_table(ledger, contract, tickets, window=window)
            if window_start is not None:
                table.meta["notice_window"] = " → ".join(
                    datetime.fromtimestamp(ts, period.tz).strftime("%Y-%m-%d %H:%M") for ts in window
                )
        else:
            table = reconciliation_table(ledger, contract, tickets, window=window)
            table.meta["period"] = period.label
            return Report(kind, [table, _week_amounts(events, contract, policy, tickets, maintenance, period, window)])
        table.meta["period"] = period.label
        return Report(kind, [table])
    ledger = build_ledger(events, contract, period, maintenance=maintenance)
    if kind == "availability":
        uplinks = uplink_table(events, ledger)
        return Report(kind, [availability_table(ledger, contract, group_by), *([uplinks] if uplinks else [])])
    if kind == "deductions":
        summary, lines = deductions_table(ledger, contract, policy, tickets)
        by_station = station_sheet(lines.rows, ledger, policy)
        return Report(kind, [summary, lines, by_station], csv_index=1)
    if kind == "link-fees":
        return Report(kind, [link_fees_table(ledger, contract, policy, link_events=events)])
    return Report(kind, [annual_offline_table(ledger, contract, policy)])


def _week_amounts(
    events: list[Event],
    contract: ContractData,
    policy: DeductionPolicy,
    tickets: list[Ticket],
    maintenance: list[MaintenanceDecl],
    period: Period,
    window: tuple[float, float],
) -> Table:
    """The amounts the Thursday meeting reconciles: rent, deduction and payable per vendor × police
    station over the reconciliation window (rent by days in service; the same rules as the
    monthly sheet, disputed faults held out)."""
    from gateway.health.timeline import local_day

    week = replace(period, start=window[0], first=local_day(window[0], period.tz))
    ledger = build_ledger(events, contract, week, maintenance=maintenance)
    _, lines = deductions_table(ledger, contract, policy, tickets)
    table = station_sheet(lines.rows, ledger, policy)
    table.kind = "reconciliation-amounts"
    table.signatures = []
    table.meta.pop("send_to", None)
    return table
