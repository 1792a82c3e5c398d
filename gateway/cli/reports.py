"""`gbgate report KIND --period P`: availability, fees, deductions and fault notices as files."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import CliError, Invocation, reasons, with_store

REPORT_KINDS = (
    "daily-faults",
    "availability",
    "link-fees",
    "deductions",
    "reconciliation",
    "annual-offline",
    "repairs",
)


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("report", help="availability, fees, deductions, fault notices")
    r.add_argument("kind", choices=REPORT_KINDS)
    r.add_argument("--period", required=True, help="a day 2026-11-27, a month 2026-11 or a year 2026 (local time)")
    r.add_argument("--format", default="csv", choices=["csv", "xlsx", "html"])
    r.add_argument("--out", help="output file (default: CSV to standard output)")
    r.add_argument("--lang", choices=["zh-CN", "en"], help="report language (default: report.language)")
    r.add_argument("--station", help="one police station only (ID or name): rows, summaries, totals, 完好率")
    r.add_argument(
        "--reissue",
        metavar="REASON",
        help="re-issue a frozen report of a closed month/year from today's data (recorded with REASON)",
    )


async def report(inv: Invocation) -> int:
    from gateway.reports.service import ReportError, build_report, reissue_report

    settings, args = inv.settings, inv.args
    lang = args.lang or settings.report.language

    async def go(sessions: Any) -> int:
        with reasons(ReportError):
            if args.reissue is not None:
                out = await reissue_report(
                    sessions,
                    settings,
                    args.kind,
                    args.period,
                    actor=f"cli:{getpass.getuser()}",
                    reason=args.reissue,
                    station=args.station,
                    now=inv.now(),
                )
                print(f"re-issued {args.kind} {out['period']} as revision {out['revision']}", file=sys.stderr)
            data = await build_report(
                sessions, settings, args.kind, args.period, fmt=args.format, lang=lang, station=args.station
            )
        if args.out:
            Path(args.out).write_bytes(data)
            print(f"wrote {args.out}", file=sys.stderr)
        elif args.format == "csv":
            sys.stdout.buffer.write(data)
        else:
            raise CliError("--out is required for xlsx and html")
        return 0

    return await with_store(settings, go)
