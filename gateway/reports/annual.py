"""The annual offline-camera deduction, settled each January (issue 5 §4).

A day counts as an *offline day* for a channel when its billable fault time that local day
(offline + no_video + picture_fault; never maintenance or unknown) reaches
`annual_offline_day_min_hours`. Channels with more than `annual_offline_days` such days in the
year are deducted `annual_deduction_per_channel` once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.health.timeline import fault_ms
from gateway.reports.deductions import HOUR_MS, DeductionPolicy, money
from gateway.reports.ledger import Ledger
from gateway.reports.model import ContractData
from gateway.reports.table import Column, Table

ANNUAL_COLUMNS = [
    Column("vendor"),
    Column("channel_id"),
    Column("name"),
    Column("batch"),
    Column("station"),
    Column("offline_days", "int"),
    Column("threshold_days", "int"),
    Column("deduction", "money"),
    Column("policy_version"),
]


def offline_days(days: dict[Any, dict[str, int]], policy: DeductionPolicy) -> int:
    limit = int(policy.annual_offline_day_min_hours * HOUR_MS)
    return sum(1 for totals in days.values() if fault_ms(totals) >= limit and fault_ms(totals) > 0)


def annual_offline_table(ledger: Ledger, contract: ContractData, policy: DeductionPolicy) -> Table:
    """Every channel with its offline-day count; those above the threshold carry the deduction."""
    table = Table("annual-offline", ANNUAL_COLUMNS)
    table.meta.update(period=ledger.period.label, policy_version=policy.label)
    total = Decimal(0)
    for ch in contract.channels:
        n = offline_days(ledger.days[ch.channel_id], policy)
        deduction = policy.annual_deduction_per_channel if n > policy.annual_offline_days else Decimal(0)
        total += deduction
        table.rows.append(
            {
                "vendor": ch.vendor,
                "channel_id": ch.channel_id,
                "name": ch.name,
                "batch": ch.batch,
                "station": ch.station,
                "offline_days": n,
                "threshold_days": policy.annual_offline_days,
                "deduction": money(deduction),
                "policy_version": policy.label,
            }
        )
    table.rows.sort(key=lambda r: (-r["offline_days"], r["vendor"], r["channel_id"]))
    table.total = {"vendor": "*", "deduction": money(total), "offline_days": sum(r["offline_days"] for r in table.rows)}
    table.chart = ("channel_id", "offline_days")
    return table
