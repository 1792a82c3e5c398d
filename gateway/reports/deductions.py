"""Maintenance deductions per vendor and channel, under a versioned policy (issue 5 §4, §5).

Per channel and local month (a fault spanning two months is billed in each, with a grace each):

* fault runs ("episodes") are maximal runs of offline / no_video / picture_fault. An `unknown`
  gap inside a fault, or a re-registration (`online`, cause registered/keepalive_resumed) of at
  most `reregistration_bridge_minutes`, does not end the run (issue 11.8: the fault continued,
  it only was not seen, so it gets one grace, not two) but is itself never billed (issue 5:
  "never billed to the owner or vendor"). `maintenance` and any real recovery end a run.
  Intervals whose cause is listed in `exempt_causes` (e.g. a city power cut the station
  accepted) count as maintenance.
* hourly part: rate_per_fault_hour × Σ max(0, episode − grace_hours);
* deadline part: rate_per_day_beyond_deadline × Σ max(0, episode − repair_deadline_hours) / 24 h —
  pro rata to the millisecond, never rounded up per episode, so that merging two short faults
  into a longer one never costs less (rounding up per episode would break monotonicity);
* failed channel: fault time above `failed_channel_fault_hours` (default 8 h) in the month counts
  the channel as failed: deduct failed_channel_rent_ratio × monthly rent + failed_channel_amount;
* rent (issue 11.6): with `rent_by_days_in_service` (default) a month's rent is monthly rent ×
  days in service / days in the month, a day counting when any part of it lies between the
  channel's admission and retirement (so a channel admitted on the 26th of a 30-day month pays
  5/30); without it, the month's share of the period (the old whole-month rent);
* caps: per channel at `channel_monthly_cap` and (if `cap_at_rent`) at the channel's rent for the
  month as above; per vendor at `vendor_cap_ratio` × the vendor's rent.

All arithmetic is Decimal; each line is rounded half up to 0.01 yuan. Every function of this module
is non-decreasing in fault time and zero when the timeline holds only unknown/maintenance.
Hiding part of a fault as unknown never raises it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from gateway.health.timeline import FAULT_STATES, Interval, State, to_ms
from gateway.reports.errors import PolicyError
from gateway.reports.faults import Ticket, TicketStatus
from gateway.reports.ledger import Ledger, MonthSlice, clip, episodes, month_slices
from gateway.reports.model import ChannelInfo, ContractData
from gateway.reports.outages import PLATFORM_OFFLINE
from gateway.reports.table import Column, Table

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
CENT = Decimal("0.01")
_FAULTS = frozenset(FAULT_STATES)


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(slots=True, frozen=True)
class DeductionPolicy:
    """One version of the deduction policy; stored as JSON (`to_body`/`from_body`)."""

    name: str = "default"
    version: int = 1
    effective_from: date = date(2000, 1, 1)
    # rental / maintenance channels
    grace_hours: Decimal = Decimal(2)
    rate_per_fault_hour: Decimal = Decimal(0)
    repair_deadline_hours: Decimal = Decimal(24)
    rate_per_day_beyond_deadline: Decimal = Decimal(0)
    failed_channel_fault_hours: Decimal = Decimal(8)
    failed_channel_rent_ratio: Decimal = Decimal(0)
    failed_channel_amount: Decimal = Decimal(0)
    channel_monthly_cap: Decimal | None = None
    cap_at_rent: bool = True
    vendor_cap_ratio: Decimal | None = None
    exempt_causes: tuple[str, ...] = ()
    reregistration_bridge_minutes: Decimal = Decimal(30)
    rent_by_days_in_service: bool = True
    # fibre links
    link_grace_hours: Decimal = Decimal(0)
    link_pro_rata: bool = True
    link_rate_per_hour: Decimal = Decimal(0)
    link_cap_ratio: Decimal = Decimal(1)
    link_witness_minutes: Decimal = Decimal(60)
    # the January rule
    annual_offline_days: int = 30
    annual_offline_day_min_hours: Decimal = Decimal(12)
    annual_deduction_per_channel: Decimal = Decimal(0)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version} ({self.effective_from.isoformat()})"

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("name", "version", "effective_from"):
                continue
            v = getattr(self, f.name)
            body[f.name] = str(v) if isinstance(v, Decimal) else list(v) if isinstance(v, tuple) else v
        return body

    @classmethod
    def from_body(
        cls, body: Mapping[str, Any], *, name: str = "default", version: int = 1, effective_from: date | None = None
    ) -> DeductionPolicy:
        """Validate a JSON body; raises PolicyError naming the first bad field."""
        if not isinstance(body, Mapping):
            raise PolicyError("body", "must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        kw: dict[str, Any] = {"name": name, "version": version}
        if effective_from is not None:
            kw["effective_from"] = effective_from
        default = cls()
        for key, raw in body.items():
            if key not in known or key in ("name", "version", "effective_from"):
                raise PolicyError(key, "unknown policy field")
            current = getattr(default, key)
            kw[key] = _coerce(key, raw, current, key == "channel_monthly_cap" or key == "vendor_cap_ratio")
        if not isinstance(version, int) or version < 1:
            raise PolicyError("version", "must be a positive integer")
        return cls(**kw)


def _coerce(key: str, raw: Any, current: Any, optional: bool) -> Any:
    if raw is None and optional:
        return None
    if isinstance(current, bool):
        if not isinstance(raw, bool):
            raise PolicyError(key, "must be true or false")
        return raw
    if isinstance(current, int) and not isinstance(current, bool):
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
            raise PolicyError(key, "must be a non-negative integer")
        return raw
    if isinstance(current, tuple):
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise PolicyError(key, "must be a list of strings")
        return tuple(raw)
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise PolicyError(key, "must be a number")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise PolicyError(key, f"not a number: {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise PolicyError(key, "must be a finite number ≥ 0")
    return value


def policy_in_force(policies: list[DeductionPolicy], on: date, name: str = "default") -> DeductionPolicy:
    """The highest version of `name` already effective on `on`."""
    candidates = [p for p in policies if p.name == name and p.effective_from <= on]
    if not candidates:
        raise PolicyError("policy", f"no {name!r} deduction policy is effective on {on.isoformat()}")
    return max(candidates, key=lambda p: (p.effective_from, p.version))


def billable(intervals: list[Interval], policy: DeductionPolicy) -> list[Interval]:
    """Intervals with exempt causes turned into maintenance (not billable, not a fault)."""
    if not policy.exempt_causes:
        return intervals
    exempt = set(policy.exempt_causes)
    return [
        Interval(iv.start, iv.end, State.maintenance, iv.cause) if iv.state in _FAULTS and iv.cause in exempt else iv
        for iv in intervals
    ]


@dataclass(slots=True, frozen=True)
class ChannelCharge:
    """The arithmetic for one channel over one month slice (before rounding to cents)."""

    fault_ms: int
    billable_ms: int  # beyond grace
    beyond_deadline_ms: int
    episodes: int
    failed: bool
    amount: Decimal  # after the channel caps, not rounded


def channel_charge(
    channel_id: str, intervals: list[Interval], policy: DeductionPolicy, *, rent: Decimal, share: Decimal = Decimal(1)
) -> ChannelCharge:
    """Deduction for one channel's intervals within one month (`share` of the month in the period)."""
    eps = episodes(
        channel_id,
        billable(intervals, policy),
        bridge_unknown=True,
        bridge_reregistration_ms=int(policy.reregistration_bridge_minutes * 60_000),
    )
    grace = int(policy.grace_hours * HOUR_MS)
    deadline = int(policy.repair_deadline_hours * HOUR_MS)
    fault = sum(ep.fault_ms for ep in eps)
    over_grace = sum(max(0, ep.fault_ms - grace) for ep in eps)
    over_deadline = sum(max(0, ep.fault_ms - deadline) for ep in eps)
    amount = policy.rate_per_fault_hour * Decimal(over_grace) / HOUR_MS
    amount += policy.rate_per_day_beyond_deadline * Decimal(over_deadline) / DAY_MS
    failed = fault > int(policy.failed_channel_fault_hours * HOUR_MS)
    if failed:
        amount += policy.failed_channel_rent_ratio * rent * share + policy.failed_channel_amount
    if policy.channel_monthly_cap is not None:
        amount = min(amount, policy.channel_monthly_cap * share)
    if policy.cap_at_rent and rent > 0:
        amount = min(amount, rent * share)
    return ChannelCharge(fault, over_grace, over_deadline, len(eps), failed, amount)


LINE_COLUMNS = [
    Column("vendor"),
    Column("channel_id"),
    Column("name"),
    Column("batch"),
    Column("station"),
    Column("fault_episodes", "int"),
    Column("fault_hours", "hours"),
    Column("fault_hm"),
    Column("billable_hours", "hours"),
    Column("beyond_deadline_hours", "hours"),
    Column("failed", "int"),
    Column("held_hours", "hours"),
    Column("tickets"),
    Column("rent", "money"),
    Column("deduction", "money"),
    Column("policy_version"),
]
VENDOR_COLUMNS = [
    Column("vendor"),
    Column("name"),
    Column("channels", "int"),
    Column("failed_channels", "int"),
    Column("rent", "money"),
    Column("deduction", "money"),
    Column("payable", "money"),
    Column("policy_version"),
]


def _hours(ms: int) -> Decimal:
    return (Decimal(ms) / HOUR_MS).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)


def service_days(ch: ChannelInfo, sl: MonthSlice) -> int:
    """Local days of the slice (its full overlap with the period) touching [admitted, retired)."""
    a = to_ms(sl.start)
    b = a + sl.share_ms
    if ch.admitted_ts is not None:
        a = max(a, a + (to_ms(ch.admitted_ts) - a) // DAY_MS * DAY_MS)
    if ch.retired_ts is not None:
        r = to_ms(ch.retired_ts)
        b = min(b, to_ms(sl.start) + -(-(r - to_ms(sl.start)) // DAY_MS) * DAY_MS)
    return max(0, -(-(b - a) // DAY_MS))


def rent_share(ch: ChannelInfo, sl: MonthSlice, policy: DeductionPolicy) -> Decimal:
    """The fraction of a month's rent owed for this slice (see the module docstring)."""
    if not policy.rent_by_days_in_service:
        return Decimal(sl.share_ms) / Decimal(sl.month_ms)
    return Decimal(service_days(ch, sl)) / Decimal(sl.month_ms // DAY_MS)


def _held_out(
    channel_id: str, intervals: list[Interval], tickets: list[Ticket], policy: DeductionPolicy
) -> tuple[list[Interval], int, list[str]]:
    """Fault episodes under a disputed ticket are held out of the sheet until the dispute is
    resolved (maintenance regulation: the station's confirmation or dispute changes the money);
    a confirmed or any other ticket's episode is billed. Returns the intervals to bill, the fault
    ms held out, and "ticket:status" marks for the sheet."""
    eps = episodes(
        channel_id,
        billable(intervals, policy),
        bridge_unknown=True,
        bridge_reregistration_ms=int(policy.reregistration_bridge_minutes * 60_000),
    )
    held: list[tuple[float, float]] = []
    held_ms = 0
    marks: list[str] = []
    for ep in eps:
        mine = [t for t in tickets if ep.start - 1 <= t.since_ts <= ep.end]
        if not mine:
            continue
        t = min(mine, key=lambda t: (t.since_ts, t.id))
        marks.append(f"{t.id}:{t.status}")
        if t.status is TicketStatus.disputed:
            held.append((ep.start, ep.end))
            held_ms += ep.fault_ms
    if not held:
        return intervals, 0, marks
    out = []
    for iv in intervals:
        inside = any(a <= iv.start and iv.end <= b for a, b in held)
        out.append(Interval(iv.start, iv.end, State.maintenance, CAUSE_HELD) if inside and iv.state in _FAULTS else iv)
    return out, held_ms, marks


CAUSE_HELD = "held_disputed"


def _platform_tickets(by_subject: Mapping[str, list[Ticket]], ch: ChannelInfo) -> list[Ticket]:
    """The tickets of outages of the lower platform `ch` sits behind: one ticket stands for all
    the channels it took down (issue 14 #2), so its dispute holds each of them out."""
    if not ch.device_id:
        return []
    return [t for t in by_subject.get(ch.device_id, ()) if t.cause == PLATFORM_OFFLINE]


def deduction_lines(
    ledger: Ledger, contract: ContractData, policy: DeductionPolicy, tickets: Iterable[Ticket] = ()
) -> list[dict[str, Any]]:
    """One line per channel with a vendor, summed over the local months of the period."""
    slices = month_slices(ledger.period)
    by_channel: dict[str, list[Ticket]] = defaultdict(list)
    for tk in tickets:
        by_channel[tk.channel_id].append(tk)
    lines = []
    for ch in contract.channels:
        if not ch.vendor:
            continue
        ivs = ledger.intervals[ch.channel_id]
        held_ms, marks = 0, list[str]()
        mine = by_channel.get(ch.channel_id, []) + _platform_tickets(by_channel, ch)
        if mine:
            ivs, held_ms, marks = _held_out(ch.channel_id, ivs, mine, policy)
        rent = contract.rent_of(ch)
        fault = over_grace = over_deadline = n_eps = failed = 0
        amount = Decimal(0)
        rent_total = Decimal(0)
        for sl in slices:
            share = rent_share(ch, sl, policy)
            rent_total += rent * share
            part = clip(ivs, sl.start, sl.end)
            if not part:
                continue
            c = channel_charge(ch.channel_id, part, policy, rent=rent, share=share)
            fault += c.fault_ms
            over_grace += c.billable_ms
            over_deadline += c.beyond_deadline_ms
            n_eps += c.episodes
            failed += c.failed
            amount += c.amount
        batch = contract.batches.get(ch.batch)
        lines.append(
            {
                "vendor": contract.vendors.get(ch.vendor, ch.vendor),
                "vendor_id": ch.vendor,  # not a column: the summaries group by it
                "station_id": ch.station,
                "channel_id": ch.channel_id,
                "name": ch.name,
                "batch": (batch.name or batch.id) if batch else ch.batch,
                "station": contract.stations.get(ch.station, ch.station),
                "fault_episodes": n_eps,
                "fault_hours": _hours(fault),
                "fault_hm": hours_minutes(fault),
                "billable_hours": _hours(over_grace),
                "beyond_deadline_hours": _hours(over_deadline),
                "failed": failed,
                "held_hours": _hours(held_ms),
                "tickets": " ".join(marks),
                "rent": money(rent_total),
                "deduction": money(amount),
                "policy_version": policy.label,
            }
        )
    lines.sort(key=lambda r: (r["vendor_id"], r["channel_id"]))
    return lines


def hours_minutes(ms: int) -> str:
    """A duration as h:mm (rounded to the minute), printed beside the seconds/hours columns."""
    minutes = (ms + 30_000) // 60_000
    return f"{minutes // 60}:{minutes % 60:02d}"


def vendor_summary(
    lines: list[dict[str, Any]], contract: ContractData, policy: DeductionPolicy
) -> list[dict[str, Any]]:
    """Per-vendor totals: rent, deduction (capped by `vendor_cap_ratio`), payable."""
    acc: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"channels": 0, "failed_channels": 0, "rent": Decimal(0), "deduction": Decimal(0)}
    )
    for line in lines:
        a = acc[line["vendor_id"]]
        a["channels"] += 1
        a["failed_channels"] += bool(line["failed"])
        a["rent"] += line["rent"]
        a["deduction"] += line["deduction"]
    out = []
    for vendor in sorted(acc):
        a = acc[vendor]
        deduction = a["deduction"]
        if policy.vendor_cap_ratio is not None:
            deduction = min(deduction, money(a["rent"] * policy.vendor_cap_ratio))
        out.append(
            {
                "vendor": vendor,
                "name": contract.vendors.get(vendor, vendor),
                "channels": a["channels"],
                "failed_channels": a["failed_channels"],
                "rent": a["rent"],
                "deduction": deduction,
                "payable": a["rent"] - deduction,
                "policy_version": policy.label,
            }
        )
    return out


def deductions_table(
    ledger: Ledger, contract: ContractData, policy: DeductionPolicy, tickets: Iterable[Ticket] = ()
) -> tuple[Table, Table]:
    """The monthly deduction sheet: vendor summary (with signature fields) and channel lines."""
    lines = deduction_lines(ledger, contract, policy, tickets)
    summary = Table("deductions", VENDOR_COLUMNS, vendor_summary(lines, contract, policy))
    summary.meta.update(
        period=ledger.period.label,
        policy_version=policy.label,
        policy_body=json.dumps(policy.to_body(), ensure_ascii=False, sort_keys=True),
    )
    summary.total = {
        "vendor": "*",
        "channels": sum(r["channels"] for r in summary.rows),
        "failed_channels": sum(r["failed_channels"] for r in summary.rows),
        "rent": sum((r["rent"] for r in summary.rows), Decimal(0)),
        "deduction": sum((r["deduction"] for r in summary.rows), Decimal(0)),
        "payable": sum((r["payable"] for r in summary.rows), Decimal(0)),
    }
    summary.chart = ("name", "deduction")
    summary.signatures = SIGNATURES
    detail = Table("deduction-lines", LINE_COLUMNS, lines)
    detail.meta.update(period=ledger.period.label, policy_version=policy.label)
    return summary, detail


#: the signable sheet (maintenance regulation): station, vendor, the technology department and its
#: head's signature and seal; it goes to the technical-prevention office
SIGNATURES = ["sign_station", "sign_vendor", "sign_ops", "sign_head", "sign_date"]
SEND_TO = "技防办"
STATION_COLUMNS = [
    Column("vendor"),
    Column("station"),
    Column("channels", "int"),
    Column("failed_channels", "int"),
    Column("fault_hours", "hours"),
    Column("rent", "money"),
    Column("deduction", "money"),
    Column("payable", "money"),
]


def station_sheet(lines: list[dict[str, Any]], ledger: Ledger, policy: DeductionPolicy) -> Table:
    """The monthly sheet per vendor × police station, by name, to be signed (one row per pair).

    Amounts are the channel lines' sums; the vendor cap (`vendor_cap_ratio`) applies on the
    vendor summary, not per station."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        key = (line["vendor"], line["station"])
        a = acc.setdefault(
            key,
            {
                "channels": 0,
                "failed_channels": 0,
                "fault_hours": Decimal(0),
                "rent": Decimal(0),
                "deduction": Decimal(0),
            },
        )
        a["channels"] += 1
        a["failed_channels"] += bool(line["failed"])
        a["fault_hours"] += line["fault_hours"]
        a["rent"] += line["rent"]
        a["deduction"] += line["deduction"]
    table = Table("deductions-by-station", STATION_COLUMNS)
    for (vendor, station), a in sorted(acc.items()):
        table.rows.append({"vendor": vendor, "station": station, **a, "payable": a["rent"] - a["deduction"]})
    table.meta.update(period=ledger.period.label, policy_version=policy.label, send_to=SEND_TO)
    table.signatures = SIGNATURES
    return table


def policy_dict(policy: DeductionPolicy) -> dict[str, Any]:
    """Everything about the policy, for an API response."""
    d = asdict(policy)
    d["effective_from"] = policy.effective_from.isoformat()
    d.update(policy.to_body())
    return d


REPAIR_COLUMNS = [
    Column("station"),
    Column("channel_id"),
    Column("name"),
    Column("vendor"),
    Column("fault"),
    Column("since", "datetime"),
    Column("recovered", "datetime"),
    Column("fault_hours", "hours"),
    Column("fault_hm"),
    Column("ticket"),
    Column("status"),
    Column("deduction", "money"),
]


def repairs_table(
    ledger: Ledger,
    contract: ContractData,
    policy: DeductionPolicy,
    tickets: Iterable[Ticket],
    *,
    window: tuple[float, float],
) -> Table:
    """The 17:00 publication (maintenance regulation): every fault that ended within `window`, with
    the deduction it leads to — the episode charged on its own under the policy (grace, hourly and
    deadline parts, capped at a month's rent); 0 while its ticket is disputed (held out)."""
    from gateway.reports.faults import match_ticket
    from gateway.reports.outages import notice_episodes

    by_channel: dict[str, list[Ticket]] = defaultdict(list)
    for tk in tickets:
        by_channel[tk.channel_id].append(tk)
    table = Table("repairs", REPAIR_COLUMNS)
    table.meta.update(period=ledger.period.label, policy_version=policy.label)
    for ch in contract.channels:
        if not ch.vendor:
            continue
        for ep in notice_episodes(ledger, ch.channel_id):
            if ep.ongoing or not window[0] <= ep.end <= window[1]:
                continue
            t = match_ticket(by_channel.get(ch.channel_id, []), ep, ledger.period.start)
            if t is None and ep.cause == PLATFORM_OFFLINE:
                t = match_ticket(_platform_tickets(by_channel, ch), ep, ledger.period.start)
            held = t is not None and t.status is TicketStatus.disputed
            part = clip(ledger.intervals[ch.channel_id], ep.start, ep.end)
            charge = channel_charge(ch.channel_id, part, policy, rent=contract.rent_of(ch))
            table.rows.append(
                {
                    "station": contract.stations.get(ch.station, ch.station),
                    "channel_id": ch.channel_id,
                    "name": ch.name,
                    "vendor": contract.vendors.get(ch.vendor, ch.vendor),
                    "fault": str(ep.state),
                    "since": ep.start,
                    "recovered": ep.end,
                    "fault_hours": _hours(ep.fault_ms),
                    "fault_hm": hours_minutes(ep.fault_ms),
                    "ticket": t.id if t else "",
                    "status": str(t.status) if t else "recovered",
                    "deduction": Decimal("0.00") if held else money(charge.amount),
                }
            )
    table.rows.sort(key=lambda r: (r["station"], r["recovered"], r["channel_id"]))
    table.total = {"station": "*", "deduction": sum((r["deduction"] for r in table.rows), Decimal(0))}
    return table
