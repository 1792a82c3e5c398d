"""Fault tickets, the daily fault notice and the weekly reconciliation list (issue 5 §5, §6). Pure.

The workflow the district runs by hand, as a table (anything not listed is refused):

    open ──answer──► vendor_answered ──repair──► repaired ──confirm──► confirmed (final)
      │                 ▲      │                    │
      ├────repair───────┼──────┼───────────────────►│
      │                 │      └──dispute──► disputed ◄──dispute── repaired, recovered
      │                 └────────answer──────┘    └──repair──► repaired
      └──recover──► recovered ◄──recover── vendor_answered
                      answer (stays recovered), repair → repaired, confirm → confirmed, dispute

`recover` is the system's action when the ledger sees the channel healthy again (issue 11.7): it
records when, and moves an open or answered ticket to `recovered`; the vendor's feedback and
repair time and the station's confirmation or dispute still apply after it.

One ticket belongs to one fault episode: a ticket matches an episode when its `since` lies in
it (or, for an episode already under way when the ledger starts, when it is the latest ticket
not yet recovered from before then). A new episode never inherits an older ticket: it gets its
own (`tickets_to_open`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from typing import Any

from gateway.reports.errors import TicketError
from gateway.reports.ledger import Episode, Ledger
from gateway.reports.model import ContractData
from gateway.reports.outages import PLATFORM_OFFLINE, Fault, faults_of, notice_episodes, row_fields
from gateway.reports.table import Column, Table


class TicketStatus(StrEnum):
    open = "open"
    vendor_answered = "vendor_answered"
    repaired = "repaired"
    recovered = "recovered"  # the ledger saw the channel healthy; station still confirms
    confirmed = "confirmed"
    disputed = "disputed"


class TicketAction(StrEnum):
    answer = "answer"  # vendor: cause and expected repair time
    repair = "repair"  # vendor: actual repair time
    recover = "recover"  # system: the ledger saw the channel healthy again
    confirm = "confirm"  # station: repair confirmed
    dispute = "dispute"  # station: repair or cause not accepted


S, A = TicketStatus, TicketAction
TRANSITIONS: dict[tuple[TicketStatus, TicketAction], TicketStatus] = {
    (S.open, A.answer): S.vendor_answered,
    (S.open, A.repair): S.repaired,
    (S.open, A.recover): S.recovered,
    (S.vendor_answered, A.answer): S.vendor_answered,
    (S.vendor_answered, A.repair): S.repaired,
    (S.vendor_answered, A.recover): S.recovered,
    (S.recovered, A.answer): S.recovered,
    (S.recovered, A.repair): S.repaired,
    (S.recovered, A.recover): S.recovered,
    (S.recovered, A.confirm): S.confirmed,
    (S.recovered, A.dispute): S.disputed,
    (S.vendor_answered, A.dispute): S.disputed,
    (S.repaired, A.recover): S.repaired,
    (S.repaired, A.repair): S.repaired,
    (S.repaired, A.confirm): S.confirmed,
    (S.repaired, A.dispute): S.disputed,
    (S.disputed, A.answer): S.vendor_answered,
    (S.disputed, A.repair): S.repaired,
    (S.disputed, A.recover): S.disputed,
}


@dataclass(slots=True, frozen=True)
class Ticket:
    """A fault ticket as plain values (the store's FaultTicket row maps 1:1)."""

    id: str
    channel_id: str
    vendor: str
    station: str
    fault: str
    since_ts: float
    status: TicketStatus = TicketStatus.open
    cause: str = ""
    vendor_cause: str = ""
    expected_repair_ts: float | None = None
    repaired_ts: float | None = None
    recovered_ts: float | None = None
    confirmed_ts: float | None = None
    dispute_reason: str = ""


@dataclass(slots=True, frozen=True)
class HistoryEntry:
    ticket_id: str
    ts: float
    actor: str
    action: TicketAction
    from_status: TicketStatus
    to_status: TicketStatus
    detail: dict[str, Any]


def apply_action(
    ticket: Ticket,
    action: TicketAction | str,
    *,
    actor: str,
    now: float,
    cause: str | None = None,
    expected_repair_ts: float | None = None,
    repaired_ts: float | None = None,
    reason: str | None = None,
) -> tuple[Ticket, HistoryEntry]:
    """The ticket after `action`, and the history line to keep. Raises TicketError when refused."""
    try:
        act = TicketAction(action)
    except ValueError:
        raise TicketError(f"unknown ticket action {action!r}", field="action") from None
    to = TRANSITIONS.get((ticket.status, act))
    if to is None:
        raise TicketError(f"ticket {ticket.id}: cannot {act} when {ticket.status}", field="status", reason="conflict")
    detail: dict[str, Any] = {}
    new = ticket
    if act is A.answer:
        if not cause or not cause.strip():
            raise TicketError(f"ticket {ticket.id}: an answer needs the cause", field="cause")
        if expected_repair_ts is not None and expected_repair_ts < ticket.since_ts:
            raise TicketError(f"ticket {ticket.id}: expected repair time is before the fault", field="expected_repair")
        new = replace(ticket, vendor_cause=cause.strip(), expected_repair_ts=expected_repair_ts)
        detail = {"cause": cause.strip(), "expected_repair_ts": expected_repair_ts}
    elif act is A.repair:
        when = now if repaired_ts is None else repaired_ts
        if when > now or when < ticket.since_ts:
            raise TicketError(
                f"ticket {ticket.id}: repair time must lie between the fault and now", field="actual_repair"
            )
        new = replace(ticket, repaired_ts=when, vendor_cause=cause.strip() if cause else ticket.vendor_cause)
        detail = {"repaired_ts": when}
    elif act is A.recover:
        new = replace(ticket, recovered_ts=now if repaired_ts is None else repaired_ts)
        detail = {"recovered_ts": new.recovered_ts}
    elif act is A.confirm:
        new = replace(ticket, confirmed_ts=now)
    elif act is A.dispute:
        if not reason or not reason.strip():
            raise TicketError(f"ticket {ticket.id}: a dispute needs a reason", field="reason")
        new = replace(ticket, dispute_reason=reason.strip())
        detail = {"reason": reason.strip()}
    new = replace(new, status=to)
    return new, HistoryEntry(ticket.id, now, actor, act, ticket.status, to, detail)


def ticket_id(day: date, seq: int) -> str:
    return f"T{day:%Y%m%d}-{seq:04d}"


def faults_to_open(
    ledger: Ledger, contract: ContractData, tickets: Iterable[Ticket], *, min_duration_s: float = 600
) -> list[Fault]:
    """Ongoing faults at the ledger's end that last long enough and have no ticket of their own:
    a channel's, or one per lower-platform outage (`outages`)."""
    by_subject = _by_channel(tickets)
    latest: dict[str, Fault] = {}
    for f in faults_of(ledger, contract).items:
        latest[f.subject] = f  # a subject's faults come in time order: the last one may be ongoing
    out = []
    for f in latest.values():
        ep = f.episode
        if not ep.ongoing or ep.end - ep.start < min_duration_s:
            continue
        if match_ticket(by_subject.get(f.subject, []), ep, ledger.period.start) is None:
            out.append(f)
    return out


def tickets_to_open(
    ledger: Ledger, contract: ContractData, tickets: Iterable[Ticket], *, min_duration_s: float = 600
) -> list[Episode]:
    """The episodes of `faults_to_open` (`channel_id` is the platform's ID for an outage)."""
    return [f.episode for f in faults_to_open(ledger, contract, tickets, min_duration_s=min_duration_s)]


LIVE = frozenset({S.open, S.vendor_answered})


def tickets_to_recover(
    ledger: Ledger, tickets: Iterable[Ticket], contract: ContractData | None = None
) -> list[tuple[Ticket, float]]:
    """Open or answered tickets whose fault episode has ended in the ledger, with when it ended.

    With `contract`, faults are grouped as `outages` says: a platform's ticket follows its outage,
    and a channel's ticket with cause `platform_offline` (opened per channel before outages were
    grouped) follows that channel's platform parts. Without, each ticket's subject is a channel of
    the ledger and its notice episodes are the faults."""
    found = faults_of(ledger, contract) if contract is not None else None
    eps_of = found.by_subject() if found is not None else {}
    out = []
    for subject, mine in _by_channel(tickets).items():
        if found is None:
            groups = [(mine, notice_episodes(ledger, subject) if subject in ledger.intervals else [])]
        else:
            plat = [t for t in mine if t.cause == PLATFORM_OFFLINE and subject in found.platform_parts]
            own = [t for t in mine if t not in plat]
            groups = [(own, eps_of.get(subject, [])), (plat, found.platform_parts.get(subject, []))]
        for group, eps in groups:
            for ep in eps:
                if ep.ongoing or not group:
                    continue
                t = match_ticket(group, ep, ledger.period.start)
                if t is not None and t.status in LIVE:
                    out.append((t, ep.end))
    return sorted(out, key=lambda x: x[0].id)


def _by_channel(tickets: Iterable[Ticket]) -> dict[str, list[Ticket]]:
    by_channel: dict[str, list[Ticket]] = defaultdict(list)
    for tk in tickets:
        by_channel[tk.channel_id].append(tk)
    return by_channel


def match_ticket(tickets: list[Ticket], ep: Episode, ledger_start: float | None = None) -> Ticket | None:
    """The ticket of this episode: the first whose `since` lies in it; for an episode already under
    way at the ledger's start, the latest earlier ticket not yet recovered. Never an older one."""
    inside = [t for t in tickets if ep.start - 1 <= t.since_ts <= ep.end]
    if inside:
        return min(inside, key=lambda t: (t.since_ts, t.id))
    if ledger_start is not None and round(ep.start * 1000) <= round(ledger_start * 1000):
        earlier = [
            t for t in tickets if t.since_ts < ep.start and t.recovered_ts is None and t.status is not S.confirmed
        ]
        if earlier:
            return max(earlier, key=lambda t: (t.since_ts, t.id))
    return None


NOTICE_COLUMNS = [
    Column("station"),
    Column("channel_id"),
    Column("name"),
    Column("site"),
    Column("owner"),
    Column("link"),
    Column("vendor"),
    Column("fault"),
    Column("cause"),
    Column("since", "datetime"),
    Column("duration_s", "seconds"),
    Column("ticket"),
    Column("feedback"),
    Column("expected_repair", "datetime"),
    Column("status"),
    Column("channels", "int"),  # how many channels the fault took down: 1, or a platform outage's
]


def daily_faults_table(
    ledger: Ledger, contract: ContractData, tickets: Iterable[Ticket], *, window: tuple[float, float]
) -> Table:
    """The daily fault notice: every fault overlapping `window`, grouped by police station.

    The ledger may start before the window (a lookback) so that `since` shows when a long fault
    really began.
    """
    from gateway.reports.availability import link_name, seconds

    by_subject = _by_channel(tickets)
    info = {ch.channel_id: ch for ch in contract.channels}
    table = Table("daily-faults", NOTICE_COLUMNS)
    table.meta["period"] = ledger.period.label
    for f in faults_of(ledger, contract).items:
        ep = f.episode
        if ep.end <= window[0] or ep.start >= window[1]:
            continue
        t = match_ticket(by_subject.get(f.subject, []), ep, ledger.period.start)
        status = str(t.status) if t else ("ongoing" if ep.ongoing else "recovered")
        d = row_fields(f, contract, info)
        table.rows.append(
            {
                "station": contract.stations.get(d["station"], d["station"]),
                "channel_id": d["channel_id"],
                "name": d["name"],
                "site": contract.sites.get(d["site"], d["site"]),
                "owner": d["owner"],
                "link": link_name(contract, d["link"]),
                "vendor": contract.vendors.get(d["vendor"], d["vendor"]),
                "fault": str(ep.state),
                "cause": ep.cause,
                "since": ep.start,
                "duration_s": seconds(round((ep.end - ep.start) * 1000)),
                "ticket": t.id if t else "",
                "feedback": t.vendor_cause if t else "",
                "expected_repair": t.expected_repair_ts if t else None,
                "status": status,
                "channels": len(f.channels) or 1,
            }
        )
    table.rows.sort(key=lambda r: (r["station"], r["since"], r["channel_id"]))
    return table


RECON_COLUMNS = [
    Column("ticket"),
    Column("station"),
    Column("channel_id"),
    Column("name"),
    Column("vendor"),
    Column("fault"),
    Column("since", "datetime"),
    Column("recovered", "datetime"),
    Column("vendor_repaired", "datetime"),
    Column("difference_s", "seconds"),
    Column("fault_hours", "hours"),
    Column("feedback"),
    Column("status"),
    Column("check"),
]


def reconciliation_table(
    ledger: Ledger,
    contract: ContractData,
    tickets: Iterable[Ticket],
    *,
    window: tuple[float, float],
    tolerance_s: float = 900,
) -> Table:
    """The weekly list both sides reconcile: ledger recovery vs the vendor's repair time per ticket.

    `check` is "ok", "mismatch" (repair times differ by more than `tolerance_s`), "disputed",
    "unanswered" (no vendor feedback) or "no_ticket" (a fault nobody opened a ticket for).
    """
    from decimal import Decimal

    from gateway.reports.availability import seconds

    by_subject = _by_channel(tickets)
    info = {ch.channel_id: ch for ch in contract.channels}
    table = Table("reconciliation", RECON_COLUMNS)
    table.meta["period"] = ledger.period.label
    for f in faults_of(ledger, contract).items:
        ep = f.episode
        if ep.end <= window[0] or ep.start >= window[1]:
            continue
        t = match_ticket(by_subject.get(f.subject, []), ep, ledger.period.start)
        recovered = None if ep.ongoing else ep.end
        vendor_repaired = t.repaired_ts if t else None
        diff = None
        if recovered is not None and vendor_repaired is not None:
            diff = seconds(round((vendor_repaired - recovered) * 1000))
        if t is None:
            check = "no_ticket"
        elif t.status is S.disputed:
            check = "disputed"
        elif not t.vendor_cause:
            check = "unanswered"
        elif diff is not None and abs(diff) > Decimal(str(tolerance_s)):
            check = "mismatch"
        else:
            check = "ok"
        d = row_fields(f, contract, info)
        table.rows.append(
            {
                "ticket": t.id if t else "",
                "station": contract.stations.get(d["station"], d["station"]),
                "channel_id": d["channel_id"],
                "name": d["name"],
                "vendor": contract.vendors.get(d["vendor"], d["vendor"]),
                "fault": str(ep.state),
                "since": ep.start,
                "recovered": recovered,
                "vendor_repaired": vendor_repaired,
                "difference_s": diff,
                "fault_hours": (Decimal(ep.fault_ms) / 3_600_000).quantize(Decimal("0.001")),
                "feedback": t.vendor_cause if t else "",
                "status": str(t.status) if t else "",
                "check": check,
            }
        )
    table.rows.sort(key=lambda r: (r["vendor"], r["since"], r["channel_id"]))
    return table
