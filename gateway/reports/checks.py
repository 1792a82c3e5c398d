"""Checks of the live system against the contract (maintenance regulation), shown to ops as alarms.

Pure: contract data, the stored policy names and `now` in, alarms out.

* `batch_over_contract` — a rental batch has more channels in service now than it contracted
  (`channel_count`): the vendor would be paid for cameras nobody ordered, or the batch is wrong.
* `outside_contract_dates` — a channel is in service on a day outside its batch's contract dates
  (`start_date` … `end_date`).
* `no_policy` — a batch or link names a deduction policy that does not exist: its deductions
  would silently fall back to nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

from gateway.health.timeline import UTC8
from gateway.reports.model import BatchInfo, ChannelInfo, ContractData


@dataclass(slots=True, frozen=True)
class ContractAlarm:
    kind: str  # batch_over_contract | outside_contract_dates | no_policy
    subject: str  # batch:<id>, channel:<id>, link:<id>
    name: str
    detail: str


def _in_service(ch: ChannelInfo, now: float) -> bool:
    return (ch.admitted_ts is None or ch.admitted_ts <= now) and (ch.retired_ts is None or now < ch.retired_ts)


def _day(ts: float | None, tz: tzinfo) -> date | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz).date()


def contract_alarms(
    contract: ContractData, *, policy_names: Iterable[str], now: float, tz: tzinfo = UTC8
) -> list[ContractAlarm]:
    """Every alarm, batches first, then channels, then links (stable order)."""
    out: list[ContractAlarm] = []
    live = Counter(ch.batch for ch in contract.channels if ch.batch and _in_service(ch, now))
    names = set(policy_names)
    b: BatchInfo | None  # a batch here, a channel's batch if it has one below
    for bid in sorted(contract.batches):
        b = contract.batches[bid]
        if live[bid] > b.channel_count:
            out.append(
                ContractAlarm(
                    "batch_over_contract",
                    f"batch:{bid}",
                    b.name or bid,
                    f"{live[bid]} channels in service, {b.channel_count} contracted",
                )
            )
        if b.policy_name not in names:
            out.append(ContractAlarm("no_policy", f"batch:{bid}", b.name or bid, f"no policy named {b.policy_name!r}"))
    today = _day(now, tz)
    assert today is not None
    for ch in contract.channels:
        b = contract.batches.get(ch.batch)
        if b is None or (ch.admitted_ts is not None and ch.admitted_ts > now):
            continue
        first = _day(ch.admitted_ts, tz)
        last = _day(ch.retired_ts, tz) or today
        if (b.start_date and first is not None and first < b.start_date) or (b.end_date and last > b.end_date):
            span = f"{b.start_date or '…'} – {b.end_date or '…'}"
            out.append(
                ContractAlarm(
                    "outside_contract_dates",
                    f"channel:{ch.channel_id}",
                    ch.name or ch.channel_id,
                    f"in service {first or '…'} – {last}, batch {b.name or b.id} contracted {span}",
                )
            )
    for lid in sorted(contract.links):
        link = contract.links[lid]
        if link.policy_name not in names:
            out.append(
                ContractAlarm("no_policy", f"link:{lid}", link.name or lid, f"no policy named {link.policy_name!r}")
            )
    return out
