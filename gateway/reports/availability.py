"""Availability by channel / site / link / vendor / batch / station (issue 5 §5; contract.md).

availability = online / (expected − maintenance − unknown), time-weighted over the group;
完好率 (intact rate) = share of the group's channels not "failed" (fault time above the policy's
failed-channel threshold, 8 h by default, scaled to the period: see `failed_threshold_ms`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from gateway.health.timeline import (
    CAUSE_NO_EVIDENCE,
    STATES,
    Event,
    State,
    availability,
    build_intervals,
    expected_ms,
    fault_ms,
    intact_rate,
    sum_totals,
    totals_of,
)
from gateway.reports.ledger import Ledger
from gateway.reports.model import ChannelInfo, ContractData
from gateway.reports.table import Column, Table

GROUPS = ("channel", "site", "link", "vendor", "batch", "station")
_STATE_COLS = [Column(f"{st}_s", "seconds") for st in STATES]
CHANNEL_COLUMNS = [
    Column("channel_id"),
    Column("name"),
    Column("site"),
    Column("link"),
    Column("vendor"),
    Column("station"),
    Column("expected_s", "seconds"),
    *_STATE_COLS,
    Column("availability", "ratio"),
]
GROUP_COLUMNS = [
    Column("group"),
    Column("name"),
    Column("channels", "int"),
    Column("failed_channels", "int"),
    Column("expected_s", "seconds"),
    *_STATE_COLS,
    Column("availability", "ratio"),
    Column("intact_rate", "ratio"),
]


def seconds(ms: int) -> Decimal:
    """Milliseconds as exact decimal seconds (86400, 3600.5)."""
    return (Decimal(ms) / 1000).normalize() if ms % 1000 else Decimal(ms // 1000)


def _state_cells(totals: dict[str, int]) -> dict[str, Any]:
    cells: dict[str, Any] = {"expected_s": seconds(expected_ms(totals))}
    for st in STATES:
        cells[f"{st}_s"] = seconds(totals.get(st, 0))
    cells["availability"] = availability(totals)
    return cells


def _group_key(ch: ChannelInfo, group_by: str) -> str:
    return {"site": ch.site, "link": ch.link, "vendor": ch.vendor, "batch": ch.batch, "station": ch.station}[group_by]


def _group_name(contract: ContractData, group_by: str, key: str) -> str:
    if group_by == "site":
        return contract.sites.get(key, key)
    if group_by == "link":
        return contract.links[key].name if key in contract.links else key
    if group_by == "vendor":
        return contract.vendors.get(key, key)
    if group_by == "batch":
        return contract.batches[key].name if key in contract.batches else key
    return contract.stations.get(key, key)


def failed_threshold_ms(ledger: Ledger, monthly_hours: float = 8.0) -> int:
    """The "more than 8 fault hours in a month" threshold, pro rata (30-day month) for a day or year."""
    hour_ms = 3_600_000
    if ledger.period.kind == "month":
        return round(monthly_hours * hour_ms)
    length_ms = round((ledger.period.full_end - ledger.period.start) * 1000)
    return round(monthly_hours * hour_ms * length_ms / (30 * 86_400_000))


def availability_table(
    ledger: Ledger, contract: ContractData, group_by: str = "channel", *, failed_hours_per_month: float = 8.0
) -> Table:
    """The availability report for one grouping, with a total row over all channels."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {GROUPS}")
    limit = failed_threshold_ms(ledger, failed_hours_per_month)
    all_totals = [ledger.totals[ch.channel_id] for ch in contract.channels]
    table = Table("availability", CHANNEL_COLUMNS if group_by == "channel" else GROUP_COLUMNS)
    table.meta["period"] = ledger.period.label
    table.meta["group_by"] = group_by
    if group_by == "channel":
        for ch in contract.channels:
            totals = ledger.totals[ch.channel_id]
            row = {
                "channel_id": ch.channel_id,
                "name": ch.name,
                # names, not IDs, on every sheet (issue 11); the ID where no name is known
                "site": contract.sites.get(ch.site, ch.site),
                "link": link_name(contract, ch.link),
                "vendor": contract.vendors.get(ch.vendor, ch.vendor),
                "station": contract.stations.get(ch.station, ch.station),
            }
            row.update(_state_cells(totals))
            table.rows.append(row)
    else:
        groups: dict[str, list[dict[str, int]]] = defaultdict(list)
        for ch in contract.channels:
            groups[_group_key(ch, group_by)].append(ledger.totals[ch.channel_id])
        for key in sorted(groups):
            table.rows.append(_group_row(key, _group_name(contract, group_by, key), groups[key], limit))
    total = _group_row("*", "", all_totals, limit)
    if group_by == "channel":
        total = {k: v for k, v in total.items() if k in {c.key for c in CHANNEL_COLUMNS}}
        total["channel_id"] = "*"
    table.total = total
    table.meta["intact_rate"] = intact_rate(all_totals, max_fault_s=limit / 1000)
    table.chart = ("name" if group_by != "channel" else "channel_id", "availability")
    return table


def _group_row(key: str, name: str, members: list[dict[str, int]], limit_ms: int) -> dict[str, Any]:
    totals = sum_totals(members)
    billable = [t for t in members if expected_ms(t) - t.get(State.maintenance, 0) - t.get(State.unknown, 0) > 0]
    row: dict[str, Any] = {
        "group": key,
        "name": name,
        "channels": len(members),
        "failed_channels": sum(fault_ms(t) > limit_ms for t in billable),
    }
    row.update(_state_cells(totals))
    row["intact_rate"] = intact_rate(members, max_fault_s=limit_ms / 1000)
    return row


def link_name(contract: ContractData, link_id: str) -> str:
    info = contract.links.get(link_id)
    return (info.name or link_id) if info else link_id


UPLINK_PREFIX = "cascade:"
UPLINK_COLUMNS = [Column("uplink"), Column("expected_s", "seconds"), *_STATE_COLS, Column("availability", "ratio")]


def uplink_table(events: Iterable[Event], ledger: Ledger) -> Table | None:
    """The cascade links to upper platforms, like any fibre link: online while registered (ledger
    subject `cascade:<upper id>`), offline while the upper does not answer, unknown while this
    gateway was down or before the first evidence. None when no upper appears in the events."""
    by_upper: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        if ev.subject.startswith(UPLINK_PREFIX) and "/" not in ev.subject:
            by_upper[ev.subject[len(UPLINK_PREFIX):]].append(ev)
    if not by_upper:
        return None
    period = ledger.period
    table = Table("uplinks", UPLINK_COLUMNS)
    table.meta["period"] = period.label
    members = []
    for upper in sorted(by_upper):
        ivs = build_intervals(by_upper[upper], start=period.start, end=period.end, initial=State.unknown,
                              initial_cause=CAUSE_NO_EVIDENCE, gateway_down=ledger.gateway_down, maintenance=[])
        totals = totals_of(ivs)
        members.append(totals)
        row: dict[str, Any] = {"uplink": upper}
        row.update(_state_cells(totals))
        table.rows.append(row)
    total: dict[str, Any] = {"uplink": "*"}
    total.update(_state_cells(sum_totals(members)))
    table.total = total
    return table
