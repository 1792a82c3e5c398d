"""The database side of the reports: load plain values, compute, render; tickets and windows.

The CLI (`gbgate report`) and `/api/v1/reports/...` call `build_report`; the ticket and
maintenance-window API calls `ticket_action`, `open_due_tickets` and `declare_maintenance`.
Everything here takes an `async_sessionmaker` and `now`; the arithmetic stays in the pure modules.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlmodel import col

from gateway.health.timeline import Event, State
from gateway.reports import frozen
from gateway.reports.builder import KINDS, event_window, make_report
from gateway.reports.deductions import DeductionPolicy, policy_in_force
from gateway.reports.errors import PeriodError, PolicyError, ReportError, TicketError
from gateway.reports.faults import (
    Ticket,
    TicketStatus,
    apply_action,
    faults_to_open,
    ticket_id,
    tickets_to_recover,
)
from gateway.reports.ledger import MaintenanceDecl, build_ledger
from gateway.reports.model import BatchInfo, ChannelInfo, ContractData, LinkInfo
from gateway.reports.outages import responsible
from gateway.reports.period import Period, parse_period
from gateway.reports.render import Report, render
from gateway.store import contract as T

__all__ = [
    "KINDS",
    "PeriodError",
    "PolicyError",
    "ReportError",
    "TicketError",
    "build_report",
    "compute_report",
    "declare_maintenance",
    "load_contract",
    "load_events",
    "open_due_tickets",
    "reissue_report",
    "report_timezone",
    "save_policy",
    "ticket_action",
]

_FIXED_ZONES = {
    "asia/shanghai": 8,
    "asia/chongqing": 8,
    "asia/harbin": 8,
    "asia/urumqi": 8,
    "prc": 8,
    "asia/hong_kong": 8,
    "asia/macau": 8,
    "asia/taipei": 8,
    "utc": 0,
    "etc/utc": 0,
}


def _freeze_after(settings: Any) -> float:
    """`report.freeze_after`: how long after its end a month or year is closed (and frozen once issued)."""
    return float(getattr(getattr(settings, "report", None), "freeze_after", frozen.CLOSE_AFTER_S))


def report_timezone(name: str) -> tzinfo:
    """report.timezone as a fixed offset: a zone without daylight saving, or "+08:00" / "UTC+8"."""
    key = name.strip().lower()
    if key in _FIXED_ZONES:
        return timezone(timedelta(hours=_FIXED_ZONES[key]), name)
    m = re.fullmatch(r"(?:utc)?([+-])(\d{1,2})(?::?(\d{2}))?", key)
    if m:
        delta = timedelta(hours=int(m[2]), minutes=int(m[3] or 0))
        return timezone(delta if m[1] == "+" else -delta)
    raise ReportError(f"report.timezone {name!r}: use a zone without daylight saving or an offset like +08:00")


def _lang(value: str | None) -> str:
    return "en" if value and value.lower().startswith("en") else "zh"


async def load_contract(sessions: Any) -> ContractData:
    """Contract data, plus inventory channels that have no contract row yet (admitted, unbilled)."""
    from gateway.store import models

    async with sessions() as s:
        cc = (await s.execute(select(T.ChannelContract))).scalars().all()
        batches = (await s.execute(select(T.RentalBatch))).scalars().all()
        links = (await s.execute(select(T.FibreLink))).scalars().all()
        vendors = (await s.execute(select(T.Vendor))).scalars().all()
        stations = (await s.execute(select(T.PoliceStation))).scalars().all()
        mcs = (await s.execute(select(T.MaintenanceContract))).scalars().all()
        inventory = (
            await s.execute(
                select(models.Channel, models.Device).join(
                    models.Device, col(models.Device.id) == models.Channel.device_id
                )
            )
        ).all()
        sites = (await s.execute(select(models.Site))).scalars().all()
        history = (await s.execute(select(T.StationChannel))).scalars().all()
    # a contract row without its device takes the inventory's: a lower platform's outage is then
    # grouped into one fault (gateway.reports.outages) even when the contract sheet left it out
    # (only when one device lists that channel ID: IDs may repeat across devices)
    device_of: dict[str, str] = {}
    for ch, dev in inventory:
        if ch.removed_at is None:
            device_of[ch.channel_id] = dev.id if device_of.get(ch.channel_id, dev.id) == dev.id else ""
    channels = [
        ChannelInfo(
            c.channel_id,
            c.name,
            c.site_id,
            c.owner,
            c.link_id or "",
            c.vendor_id,
            c.batch_id or "",
            c.station_id or "",
            c.device_id or device_of.get(c.channel_id, ""),
            c.maintenance_contract_id or "",
            c.admitted_ts,
            c.retired_ts,
            contracted=True,
        )
        for c in cc
    ]
    known = {c.channel_id for c in cc}
    for ch, dev in inventory:
        if ch.channel_id in known or ch.removed_at is not None or not ch.exposed:
            continue
        known.add(ch.channel_id)
        admitted = dev.first_admitted_at or ch.first_seen
        ts = admitted.replace(tzinfo=admitted.tzinfo or UTC).timestamp() if admitted else None
        channels.append(
            ChannelInfo(
                ch.channel_id, ch.name, dev.site_id or "", ch.owner, dev.link_id or "", device_id=dev.id, admitted_ts=ts
            )
        )
    mc_fee = {m.id: (m.monthly_fee / m.channel_count if m.channel_count else Decimal(0)) for m in mcs}
    return ContractData(
        channels=tuple(sorted(channels, key=lambda c: c.channel_id)),
        batches={
            b.id: BatchInfo(
                b.id,
                b.vendor_id,
                b.year,
                b.channel_count,
                Decimal(b.monthly_rent_per_channel),
                b.name,
                b.policy_name,
                b.start_date,
                b.end_date,
            )
            for b in batches
        },
        links={
            k.id: LinkInfo(k.id, k.name, k.provider, k.site_id, Decimal(k.monthly_fee), k.policy_name) for k in links
        },
        vendors={v.id: v.name for v in vendors},
        stations={st.id: st.name for st in stations},
        sites={site.id: site.name for site in sites},
        maintenance_fees=mc_fee,
        jurisdiction=_jurisdiction(history),
    )


def _jurisdiction(rows: Any) -> dict[str, tuple[tuple[float, float | None, str], ...]]:
    out: dict[str, list[tuple[float, float | None, str]]] = {}
    for r in rows:
        out.setdefault(r.channel_id, []).append((r.valid_from_ts, r.valid_to_ts, r.station_id))
    return {cid: tuple(sorted(v, key=lambda x: x[0])) for cid, v in out.items()}


def _event(row: T.HealthEvent) -> Event:
    return Event(row.event_id, row.subject, row.ts, State(row.state), row.cause, dict(row.evidence or {}))


async def load_events(sessions: Any, start: float, end: float) -> list[Event]:
    """Events in [start, end) plus what each subject's full history implies at `start`.

    That is each subject's last *signalling* event (online/offline/unknown) before `start` and its
    last *media* event (no_video/picture_fault) before `start`: replayed in time order they give
    the state at `start` exactly (a media fault after the last signalling event still holds; one
    before it was cleared by it). Only the last event of any kind would lose a `no_video` carried
    over midnight (issue 11.3).
    """
    H = T.HealthEvent
    sig = [State.online.value, State.offline.value, State.unknown.value]
    media = [State.no_video.value, State.picture_fault.value]
    async with sessions() as s:
        lasts = []
        for states in (sig, media):
            before = (
                select(col(H.subject), func.max(H.ts).label("ts"))
                .where(col(H.ts) < start, col(H.state).in_(states))
                .group_by(H.subject)
                .subquery()
            )
            lasts.append(
                select(col(H.id))
                .join(before, and_(col(H.subject) == before.c.subject, col(H.ts) == before.c.ts))
                .where(col(H.state).in_(states))
            )
        q = select(H).where(
            or_(and_(col(H.ts) >= start, col(H.ts) < end), col(H.id).in_(lasts[0]), col(H.id).in_(lasts[1]))
        )
        rows = (await s.execute(q.order_by(col(H.ts), col(H.id)))).scalars().all()
    return [_event(r) for r in rows]


async def contract_checks(sessions: Any, settings: Any, *, now: float) -> list[dict[str, str]]:
    """The contract alarms for the ops view (`gateway.reports.checks`)."""
    from dataclasses import asdict

    from gateway.reports.checks import contract_alarms

    tz = report_timezone(getattr(getattr(settings, "report", None), "timezone", "Asia/Shanghai"))
    contract = await load_contract(sessions)
    async with sessions() as s:
        names = (await s.execute(select(col(T.DeductionPolicyRecord.name)).distinct())).scalars().all()
    return [asdict(a) for a in contract_alarms(contract, policy_names=names, now=now, tz=tz)]


async def load_policies(sessions: Any, name: str = "default") -> list[DeductionPolicy]:
    async with sessions() as s:
        rows = await s.execute(select(T.DeductionPolicyRecord).where(col(T.DeductionPolicyRecord.name) == name))
        records = rows.scalars().all()
    return [
        DeductionPolicy.from_body(r.body, name=r.name, version=r.version, effective_from=r.effective_from)
        for r in records
    ]


async def current_policy(sessions: Any, on: date) -> DeductionPolicy:
    """The policy in force on `on`; the built-in zero-rate policy (version 0) when none is stored."""
    policies = await load_policies(sessions)
    if not policies:
        return DeductionPolicy(name="builtin", version=0)
    return policy_in_force(policies, on)


def _ticket(r: T.FaultTicket) -> Ticket:
    return Ticket(
        r.id,
        r.channel_id,
        r.vendor_id,
        r.station_id or "",
        r.fault,
        r.since_ts,
        TicketStatus(r.status),
        r.cause,
        r.vendor_cause,
        r.expected_repair_ts,
        r.repaired_ts,
        r.recovered_ts,
        r.confirmed_ts,
        r.dispute_reason,
    )


async def load_tickets(sessions: Any, start: float, end: float) -> list[Ticket]:
    async with sessions() as s:
        q = select(T.FaultTicket).where(
            col(T.FaultTicket.since_ts) < end,
            or_(col(T.FaultTicket.status) != TicketStatus.confirmed, col(T.FaultTicket.updated_ts) >= start),
        )
        return [_ticket(r) for r in (await s.execute(q)).scalars().all()]


async def load_maintenance(sessions: Any, start: float, end: float) -> list[MaintenanceDecl]:
    W = T.MaintenanceWindow
    async with sessions() as s:
        rows = (await s.execute(select(W).where(col(W.start_ts) < end, col(W.end_ts) > start))).scalars().all()
    return [MaintenanceDecl(w.subject, w.start_ts, w.end_ts, w.reason) for w in rows]


def for_station(contract: ContractData, station: str, kind: str) -> ContractData:
    """The contract seen by one police station (ID or name): only its channels, so that rows,
    vendor summaries, totals and 完好率 all cover that station alone (issue 11.5). Link fees are
    per link, not per station: a link's state needs every camera on it, so they stay whole."""
    ids = {sid for sid, name in contract.stations.items() if station in (sid, name)}
    if not ids:
        raise ReportError(f"station: unknown police station {station!r}")
    if kind == "link-fees":
        return contract
    return replace(contract, channels=tuple(c for c in contract.channels if c.station in ids))


async def compute_report(
    sessions: Any,
    settings: Any,
    kind: str,
    period: str,
    *,
    station: str | None = None,
    group_by: str = "channel",
    now: float | None = None,
    window_start: float | None = None,
) -> tuple[Report, tzinfo]:
    """Load what report `kind` needs and compute it (the arithmetic in a worker thread)."""
    c = await _compute(
        sessions, settings, kind, period, station=station, group_by=group_by, now=now, window_start=window_start
    )
    return c.report, c.tz


@dataclass(slots=True)
class _Computed:
    report: Report
    tz: tzinfo
    period: Period
    policy: DeductionPolicy
    inputs: dict[str, Any] | None


async def _compute(
    sessions: Any,
    settings: Any,
    kind: str,
    period: str,
    *,
    station: str | None = None,
    group_by: str = "channel",
    now: float | None = None,
    window_start: float | None = None,
    record_inputs: bool = False,
) -> _Computed:
    if kind not in KINDS:
        raise ReportError(f"unknown report kind {kind!r}: one of {', '.join(KINDS)}")
    now = time.time() if now is None else now
    tz = report_timezone(getattr(getattr(settings, "report", None), "timezone", "Asia/Shanghai"))
    p = parse_period(period, now=now, tz=tz)
    start, end = event_window(kind, p)
    # jurisdiction as of the period's last instant (a day's notice: that day's stations)
    contract = (await load_contract(sessions)).as_of(min(p.end, p.full_end) - 0.001)
    if station:
        contract = for_station(contract, station, kind)
    events = await load_events(sessions, start, end)
    policy = await current_policy(sessions, p.first)
    with_tickets = kind in ("daily-faults", "reconciliation", "deductions", "repairs")
    tickets = await load_tickets(sessions, start, end) if with_tickets else []
    windows = await load_maintenance(sessions, start, end)
    # CPU-bound over months of events: off the loop (architecture.md rule 11)
    report = await asyncio.to_thread(
        make_report,
        kind,
        p,
        events=events,
        contract=contract,
        policy=policy,
        tickets=tickets,
        maintenance=windows,
        group_by=group_by,
        window_start=window_start,
    )
    if station:
        report.meta["station"] = station
    report.meta["generated_at"] = datetime.fromtimestamp(now, tz).strftime("%Y-%m-%d %H:%M:%S")
    inputs = None
    if record_inputs:
        inputs = await asyncio.to_thread(frozen.inputs_record, events, contract, policy, windows, tickets)
    return _Computed(report, tz, p, policy, inputs)


async def build_report(
    sessions: Any,
    settings: Any,
    kind: str,
    period: str,
    *,
    fmt: str = "csv",
    lang: str | None = None,
    station: str | None = None,
    group_by: str = "channel",
    now: float | None = None,
) -> bytes:
    """`gbgate report KIND --period P --format F`: the rendered bytes. Raises ReportError.

    A report of a closed period is issued once and then frozen (`gateway.reports.frozen`): every
    later download renders the stored report, byte for byte the same.
    """
    if kind not in KINDS:
        raise ReportError(f"unknown report kind {kind!r}: one of {', '.join(KINDS)}")
    if fmt not in ("csv", "xlsx", "html"):
        raise ReportError(f"unknown format {fmt!r}: csv, xlsx or html")
    now = time.time() if now is None else now
    tz = report_timezone(getattr(getattr(settings, "report", None), "timezone", "Asia/Shanghai"))
    p = parse_period(period, now=now, tz=tz)
    language = _lang(lang or getattr(getattr(settings, "report", None), "language", "zh"))
    if frozen.closed(kind, p, now, _freeze_after(settings)):
        key = (kind, p.label, station or "", group_by)
        row = await frozen.latest(sessions, *key)
        if row is None:
            c = await _compute(
                sessions, settings, kind, period, station=station, group_by=group_by, now=now, record_inputs=True
            )
            assert c.inputs is not None
            row = await frozen.issue(
                sessions,
                c.report,
                kind=kind,
                period=p.label,
                station=station or "",
                group_by=group_by,
                policy=c.policy,
                inputs=c.inputs,
                actor="system",
                reason="first issue",
                now=now,
                revision=1,
            )
        report = frozen.report_from_json(row.report)
    else:
        report, tz = await compute_report(sessions, settings, kind, period, station=station, group_by=group_by, now=now)
    return await asyncio.to_thread(render, report, fmt, lang=language, tz=tz)


async def reissue_report(
    sessions: Any,
    settings: Any,
    kind: str,
    period: str,
    *,
    actor: str,
    reason: str,
    station: str | None = None,
    group_by: str = "channel",
    now: float,
) -> dict[str, Any]:
    """Re-issue a frozen report from today's data as its next revision (explicit and audited)."""
    if not reason or not reason.strip():
        raise ReportError("reason: a re-issue needs a reason")
    tz = report_timezone(getattr(getattr(settings, "report", None), "timezone", "Asia/Shanghai"))
    p = parse_period(period, now=now, tz=tz)
    if not frozen.closed(kind, p, now, _freeze_after(settings)):
        raise ReportError(f"period: {kind} {p.label} is not closed yet; it is computed afresh on every download")
    key = (kind, p.label, station or "", group_by)
    before = await frozen.latest(sessions, *key)
    c = await _compute(
        sessions, settings, kind, period, station=station, group_by=group_by, now=now, record_inputs=True
    )
    assert c.inputs is not None
    revision = (before.revision if before is not None else 0) + 1
    await frozen.issue(
        sessions,
        c.report,
        kind=kind,
        period=p.label,
        station=station or "",
        group_by=group_by,
        policy=c.policy,
        inputs=c.inputs,
        actor=actor,
        reason=reason.strip(),
        now=now,
        revision=revision,
    )
    return {
        "kind": kind,
        "period": p.label,
        "station": station or "",
        "revision": revision,
        "previous_revision": before.revision if before is not None else None,
        "policy_version": c.policy.label,
        "inputs": c.inputs,
        "inputs_changed": before is None or before.inputs.get("sha256") != c.inputs["sha256"],
    }


async def save_policy(sessions: Any, body: dict[str, Any], *, effective_from: date, name: str = "default") -> int:
    """Validate and store a new version of policy `name`; returns the version number."""
    async with sessions() as s, s.begin():
        latest = (
            await s.execute(
                select(func.max(T.DeductionPolicyRecord.version)).where(col(T.DeductionPolicyRecord.name) == name)
            )
        ).scalar() or 0
        version = int(latest) + 1
        DeductionPolicy.from_body(body, name=name, version=version, effective_from=effective_from)
        s.add(T.DeductionPolicyRecord(name=name, version=version, effective_from=effective_from, body=dict(body)))
    return version


async def declare_maintenance(
    sessions: Any, subject: str, start: float, end: float, *, reason: str = "", actor: str = "", now: float
) -> int:
    """Record a maintenance window; refuses reversed, past-only or overlapping windows for the subject."""
    if not re.fullmatch(r"(channel|device|site|link):[A-Za-z0-9_.\-]{1,64}", subject):
        raise ReportError("subject: expected channel:<id>, device:<id>, site:<id> or link:<id>")
    if end <= start:
        raise ReportError("end: must be after start")
    W = T.MaintenanceWindow
    async with sessions() as s, s.begin():
        clash = (
            await s.execute(select(W).where(col(W.subject) == subject, col(W.start_ts) < end, col(W.end_ts) > start))
        ).scalars()
        first = clash.first()
        if first is not None:
            raise ReportError(f"start: overlaps maintenance window {first.id} of {subject}")
        row = W(subject=subject, start_ts=start, end_ts=end, reason=reason, declared_by=actor, created_ts=now)
        s.add(row)
        await s.flush()
        return int(row.id or 0)


def _apply_to_row(s: Any, row: T.FaultTicket, action: str, *, actor: str, now: float, **kw: Any) -> Ticket:
    """One workflow step on a loaded row, with its history line, in the caller's transaction."""
    new, h = apply_action(_ticket(row), action, actor=actor, now=now, **kw)
    for field in (
        "status",
        "vendor_cause",
        "expected_repair_ts",
        "repaired_ts",
        "recovered_ts",
        "confirmed_ts",
        "dispute_reason",
    ):
        setattr(row, field, str(getattr(new, field)) if field == "status" else getattr(new, field))
    row.updated_ts = now
    s.add(
        T.TicketHistory(
            ticket_id=h.ticket_id,
            ts=h.ts,
            actor=h.actor,
            action=str(h.action),
            from_status=str(h.from_status),
            to_status=str(h.to_status),
            detail=h.detail,
        )
    )
    return new


async def ticket_steps(
    sessions: Any,
    ticket: str,
    steps: list[tuple[str, dict[str, Any]]],
    *,
    actor: str,
    now: float,
    vendor: str | None = None,
) -> Ticket:
    """Several workflow actions (e.g. answer, then repair) as one transaction: all or none."""
    async with sessions() as s, s.begin():
        row = await s.get(T.FaultTicket, ticket)
        if row is None or (vendor is not None and row.vendor_id != vendor):
            raise TicketError(f"ticket: unknown ticket {ticket!r}", field="ticket", reason="not_found")
        if not steps:
            raise TicketError("nothing to do: give a cause, an expected or an actual repair time", field="cause")
        new = _ticket(row)
        for action, kw in steps:
            new = _apply_to_row(s, row, action, actor=actor, now=now, **kw)
    return new


async def ticket_action(
    sessions: Any, ticket: str, action: str, *, actor: str, now: float, vendor: str | None = None, **kw: Any
) -> Ticket:
    """Apply a workflow action and keep its history. `vendor` scopes a vendor token to its tickets."""
    return await ticket_steps(sessions, ticket, [(action, kw)], actor=actor, now=now, vendor=vendor)


async def open_due_tickets(sessions: Any, settings: Any, *, now: float, min_duration_s: float = 600) -> list[str]:
    """Open a ticket for every ongoing fault episode without its own (run before the daily
    notice) and move tickets of faults the ledger has seen end to `recovered`; IDs opened."""
    tz = report_timezone(getattr(getattr(settings, "report", None), "timezone", "Asia/Shanghai"))
    day = datetime.fromtimestamp(now, tz).date()
    p = parse_period(day.isoformat(), now=now, tz=tz)
    start = p.start - 31 * 86_400
    wide: Period = replace(p, start=start, first=p.first - timedelta(days=31))
    async with sessions() as s:  # cheap check first: load_contract reads every channel and device
        any_vendor = (
            await s.execute(
                select(col(T.ChannelContract.channel_id)).where(col(T.ChannelContract.vendor_id) != "").limit(1)
            )
        ).first()
    if any_vendor is None:
        return []  # no contracted channel, nobody to send a ticket to
    contract = await load_contract(sessions)
    if not any(c.vendor for c in contract.channels):
        return []  # no vendor to send a ticket to: do not rebuild a month of ledger for nothing
    events = await load_events(sessions, start, now)
    maintenance = await load_maintenance(sessions, start, now)
    # a month of timelines is CPU work: off the event loop, so SIP and media never wait for it
    ledger = await asyncio.to_thread(build_ledger, events, contract, wide, maintenance=maintenance)
    opened: list[str] = []
    async with sessions() as s, s.begin():
        rows = (
            (
                await s.execute(
                    select(T.FaultTicket).where(
                        or_(col(T.FaultTicket.status) != TicketStatus.confirmed, col(T.FaultTicket.since_ts) >= start)
                    )
                )
            )
            .scalars()
            .all()
        )
        known = [_ticket(r) for r in rows]
        by_id = {r.id: r for r in rows}
        # the ledger saw these channels back: their tickets move to `recovered` (issue 11.7)
        for t, back in tickets_to_recover(ledger, known, contract):
            _apply_to_row(s, by_id[t.id], "recover", actor="system", now=now, repaired_ts=back)
        prefix = f"T{day:%Y%m%d}-"
        count = (
            await s.execute(
                select(func.count()).select_from(T.FaultTicket).where(col(T.FaultTicket.id).startswith(prefix))
            )
        ).scalar() or 0
        for f in faults_to_open(ledger, contract, known, min_duration_s=min_duration_s):
            # one ticket per lower-platform outage, naming the channels it took down (issue 14 #2)
            ep = f.episode
            vendor, station = responsible(f, contract)
            if not vendor:
                continue
            count += 1
            tid = ticket_id(day, count)
            s.add(
                T.FaultTicket(
                    id=tid,
                    channel_id=f.subject,
                    station_id=station or None,
                    vendor_id=vendor,
                    fault=str(ep.state),
                    cause=ep.cause,
                    since_ts=ep.start,
                    opened_ts=now,
                    status=TicketStatus.open,
                    updated_ts=now,
                )
            )
            detail: dict[str, Any] = {"since_ts": ep.start}
            if f.channels:
                detail.update(platform_id=f.subject, channel_count=len(f.channels), channels=list(f.channels))
            s.add(
                T.TicketHistory(
                    ticket_id=tid,
                    ts=now,
                    actor="system",
                    action="open",
                    from_status="",
                    to_status="open",
                    detail=detail,
                )
            )
            opened.append(tid)
    return opened
