"""Contract checks shown as alarms on the ops view (maintenance regulation)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from gateway.health.timeline import UTC8
from gateway.reports.checks import contract_alarms
from gateway.reports.model import BatchInfo, ChannelInfo, ContractData, LinkInfo


def L(m: int, d: int) -> float:
    return datetime(2026, m, d, tzinfo=UTC8).timestamp()


NOW = L(11, 20)


def test_each_check() -> None:
    """B1 contracts 2 channels and has 3 in service on 20 Nov (a 4th retired 1 Nov, a 5th admitted
    only on 1 Dec do not count) → batch_over_contract "3 … 2". B1's contract runs 1 Jan – 31 Oct
    2026: every B1 channel still in service on 20 Nov is outside it (3 alarms), the one retired
    1 Nov too (its last day 1 Nov > 31 Oct); the one admitted 1 Dec is not in service yet. B2
    names policy "night" that does not exist, and link L9 names "fibre" → two no_policy."""
    b1 = BatchInfo("B1", "V1", 2026, 2, Decimal(100), "科海2026", "default", date(2026, 1, 1), date(2026, 10, 31))
    b2 = BatchInfo("B2", "V2", 2026, 5, Decimal(100), "海康2026", "night")
    ch = [ChannelInfo(f"3402000000132000000{i}", f"东门{i}", batch="B1", admitted_ts=L(2, 1)) for i in range(3)]
    ch.append(ChannelInfo("34020000001320000003", "旧", batch="B1", admitted_ts=L(2, 1), retired_ts=L(11, 1)))
    ch.append(ChannelInfo("34020000001320000004", "新", batch="B1", admitted_ts=L(12, 1)))
    ch.append(ChannelInfo("34020000001320000005", "北门", batch="B2", admitted_ts=L(2, 1)))
    contract = ContractData(
        tuple(ch),
        {"B1": b1, "B2": b2},
        {"L1": LinkInfo("L1", "万达专线"), "L9": LinkInfo("L9", "九号线", policy_name="fibre")},
    )
    alarms = contract_alarms(contract, policy_names=["default"], now=NOW)
    assert [(a.kind, a.subject) for a in alarms] == [
        ("batch_over_contract", "batch:B1"),
        ("no_policy", "batch:B2"),
        ("outside_contract_dates", "channel:34020000001320000000"),
        ("outside_contract_dates", "channel:34020000001320000001"),
        ("outside_contract_dates", "channel:34020000001320000002"),
        ("outside_contract_dates", "channel:34020000001320000003"),
        ("no_policy", "link:L9"),
    ]
    assert alarms[0].detail == "3 channels in service, 2 contracted" and alarms[0].name == "科海2026"
    assert contract_alarms(contract, policy_names=["default", "night", "fibre"], now=L(3, 1))[0].kind == (
        "batch_over_contract"
    )
