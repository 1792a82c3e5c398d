"""Monthly availability + deduction report over 5,000 channels and 200,000 state changes.

Issue 5 budget: under 2 s and under 500 MB on the 2-core box. Run: python -m load_tests.bench_reports
Prints the time to build the ledger once and both reports (CSV for both, XLSX for the deduction
sheet), and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from datetime import datetime
from decimal import Decimal

from gateway.health.timeline import UTC8, Event, State
from gateway.reports.availability import availability_table
from gateway.reports.deductions import DeductionPolicy, deductions_table
from gateway.reports.ledger import MaintenanceDecl, build_ledger
from gateway.reports.model import BatchInfo, ChannelInfo, ContractData, LinkInfo
from gateway.reports.period import parse_period
from gateway.reports.render import Report, to_csv, to_xlsx

STATES = [State.offline, State.no_video, State.picture_fault]


def world(channels: int, changes: int, seed: int = 1) -> tuple[list[Event], ContractData, list[MaintenanceDecl]]:
    rng = random.Random(seed)
    m0 = datetime(2026, 11, 1, tzinfo=UTC8).timestamp()
    m1 = datetime(2026, 12, 1, tzinfo=UTC8).timestamp()
    chans = []
    for i in range(channels):
        cid = f"3402000000132{i:07d}"
        chans.append(
            ChannelInfo(
                cid,
                f"通道{i}",
                f"SITE{i // 10}",
                "",
                f"L{i // 10}",
                f"V{i % 7}",
                f"B{i % 20}",
                f"S{i % 30}",
                admitted_ts=m0 + 86400 * 3 if i % 50 == 0 else None,
            )
        )
    batches = {f"B{b}": BatchInfo(f"B{b}", f"V{b % 7}", 2016 + b % 8, 300, Decimal("150.00")) for b in range(20)}
    links = {f"L{k}": LinkInfo(f"L{k}", monthly_fee=Decimal("2000")) for k in range(channels // 10 + 1)}
    contract = ContractData(tuple(chans), batches, links, {f"V{v}": f"厂商{v}" for v in range(7)})
    events = [
        Event("g0", "gateway", m0 - 86400, State.online, "start", {}),
        Event("g1", "gateway", m0 + 9 * 86400, State.unknown, "gateway_down", {}),
        Event("g2", "gateway", m0 + 9 * 86400 + 5400, State.online, "gateway_restart", {}),
    ]
    per = changes // channels
    n = 0
    for ch in chans:
        subject = f"channel:{ch.channel_id}"
        events.append(Event(f"e{n}", subject, m0 - 3600, State.online, "registered", {}))
        n += 1
        times = sorted(rng.uniform(m0, m1) for _ in range(per - 1))
        for k, ts in enumerate(times):
            state = State.online if k % 2 else rng.choice(STATES)
            events.append(Event(f"e{n}", subject, ts, state, "load", {}))
            n += 1
    maint = [MaintenanceDecl(f"site:SITE{s}", m0 + s * 3600, m0 + s * 3600 + 4 * 3600) for s in range(0, 500, 5)]
    return events, contract, maint


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=5000)
    ap.add_argument("--changes", type=int, default=200_000)
    args = ap.parse_args()
    events, contract, maint = world(args.channels, args.changes)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    period = parse_period("2026-11", now=datetime(2026, 12, 2, tzinfo=UTC8).timestamp())
    policy = DeductionPolicy(
        rate_per_fault_hour=Decimal("1.5"),
        rate_per_day_beyond_deadline=Decimal(20),
        failed_channel_rent_ratio=Decimal("0.5"),
    )
    cpu0, t0 = time.process_time(), time.perf_counter()
    ledger = build_ledger(events, contract, period, maintenance=maint)
    t_ledger = time.perf_counter() - t0
    avail = Report("availability", [availability_table(ledger, contract)])
    csv_avail = to_csv(avail)
    summary, lines = deductions_table(ledger, contract, policy)
    ded = Report("deductions", [summary, lines], csv_index=1)
    csv_ded = to_csv(ded)
    t_reports = time.perf_counter() - t0
    xlsx = to_xlsx(Report("deductions", [summary]))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    t1 = time.perf_counter()
    full_xlsx = to_xlsx(ded)  # both sheets, 5,000 line rows: informational, outside the budget
    t_full_xlsx = time.perf_counter() - t1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"channels={args.channels} state_changes={len(events)}")
    print(f"ledger_s={t_ledger:.3f} availability+deductions(csv)_s={t_reports:.3f} with_xlsx_summary_s={elapsed:.3f}")
    print(f"cpu_s={cpu:.3f} peak_rss_mb={peak:.0f} (after generating input: {rss_before:.0f})")
    print(
        f"rows availability={len(avail.tables[0].rows)} deduction_lines={len(lines.rows)} "
        f"csv_bytes={len(csv_avail) + len(csv_ded)} xlsx_bytes={len(xlsx)}"
    )
    print(f"full deduction workbook incl. {len(lines.rows)} line rows: {t_full_xlsx:.3f} s, {len(full_xlsx)} bytes")
    ok = t_reports < 2.0 and peak < 500
    print("budget (<2 s, <500 MB):", "ok" if ok else "EXCEEDED")


if __name__ == "__main__":
    main()
