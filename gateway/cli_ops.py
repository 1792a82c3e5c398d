"""`gbgate contract|maintenance|ticket|policy|notice …`: the ops side of issue 5 on the command line.

    gbgate contract import KIND FILE.csv|.xlsx      all or nothing; every bad line and field listed
    gbgate contract list KIND [--json]
    gbgate maintenance add SUBJECT --start T --end T [--reason R]
    gbgate maintenance list [--subject S] [--json]
    gbgate ticket list [--status S] [--station ID] [--vendor ID] [--json]
    gbgate ticket show ID
    gbgate ticket feedback ID [--cause C] [--expected-repair T] [--actual-repair T] [--vendor ID]
    gbgate ticket confirm ID
    gbgate ticket dispute ID --reason R
    gbgate policy show [--json]
    gbgate policy set FILE.json --effective-from YYYY-MM-DD [--name N]
    gbgate notice send [--date YYYY-MM-DD]

Times T are `YYYY-MM-DD HH:MM` in local time (`report.timezone`), ISO with an offset, or unix
seconds. Like every gbgate command, a failure is one line on standard error and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any

OPS_COMMANDS = ("contract", "maintenance", "ticket", "policy", "notice")
CONTRACT_KINDS = ("vendors", "batches", "maintenance_contracts", "links", "stations", "jurisdiction", "channels")
TICKET_STATUSES = ("open", "vendor_answered", "recovered", "repaired", "confirmed", "disputed")


class OpsError(Exception):
    """A one-line reason for a non-zero exit."""


def add_ops_parsers(sub: Any) -> None:
    c = sub.add_parser("contract", help="contract data: vendors, batches, links, stations, channels")
    cs = c.add_subparsers(dest="action", required=True)
    ci = cs.add_parser("import", help="import a CSV or XLSX file (all or nothing)")
    ci.add_argument("kind", choices=CONTRACT_KINDS)
    ci.add_argument("file")
    cl = cs.add_parser("list", help="print the stored rows of one kind")
    cl.add_argument("kind", choices=CONTRACT_KINDS)
    cl.add_argument("--json", action="store_true")

    m = sub.add_parser("maintenance", help="declared maintenance windows (never billed)")
    ms = m.add_subparsers(dest="action", required=True)
    ma = ms.add_parser("add", help="declare a window for channel:/device:/site:/link:<id>")
    ma.add_argument("subject")
    ma.add_argument("--start", required=True, help="YYYY-MM-DD HH:MM local time, ISO 8601 or unix seconds")
    ma.add_argument("--end", required=True)
    ma.add_argument("--reason", default="")
    ml = ms.add_parser("list", help="print declared windows")
    ml.add_argument("--subject")
    ml.add_argument("--json", action="store_true")

    t = sub.add_parser("ticket", help="fault tickets and vendor feedback")
    ts = t.add_subparsers(dest="action", required=True)
    tl = ts.add_parser("list", help="print tickets, newest first")
    tl.add_argument("--status", choices=TICKET_STATUSES)
    tl.add_argument("--station")
    tl.add_argument("--vendor")
    tl.add_argument("--json", action="store_true")
    tsh = ts.add_parser("show", help="one ticket with its history (JSON)")
    tsh.add_argument("ticket")
    tf = ts.add_parser("feedback", help="record a vendor's answer: cause, expected and actual repair time")
    tf.add_argument("ticket")
    tf.add_argument("--cause", default="")
    tf.add_argument("--expected-repair")
    tf.add_argument("--actual-repair")
    tf.add_argument("--vendor", help="refuse unless the ticket belongs to this vendor")
    tc = ts.add_parser("confirm", help="the station confirms the repair")
    tc.add_argument("ticket")
    td = ts.add_parser("dispute", help="the station does not accept the repair or cause")
    td.add_argument("ticket")
    td.add_argument("--reason", required=True)

    p = sub.add_parser("policy", help="deduction policy versions")
    ps = p.add_subparsers(dest="action", required=True)
    psh = ps.add_parser("show", help="print every version and the one in force today")
    psh.add_argument("--name", default="default")
    psh.add_argument("--json", action="store_true")
    pst = ps.add_parser("set", help="store a new version from a JSON file")
    pst.add_argument("file")
    pst.add_argument("--effective-from", required=True, help="YYYY-MM-DD (local)")
    pst.add_argument("--name", default="default")

    n = sub.add_parser("notice", help="the daily fault notice")
    ns = n.add_subparsers(dest="action", required=True)
    nsd = ns.add_parser("send", help="push the notice to the configured robot webhooks now")
    nsd.add_argument("--date", help="the local day YYYY-MM-DD (default: today)")


def parse_instant(text: str, tz: tzinfo, name: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise OpsError(f"--{name}: expected YYYY-MM-DD HH:MM, ISO 8601 or unix seconds, got {text!r}") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=tz)).timestamp()


def _local(ts: float | None, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


async def run_ops(settings: Any, args: argparse.Namespace, *, clock: Callable[[], float] = time.time) -> int:
    """Run one ops command; `clock` is read once, so the whole command sees one "now" (and tests a fixed one)."""
    from gateway.cli import _with_store
    from gateway.reports.errors import ImportValidationError, ReportError
    from gateway.reports.service import report_timezone

    async def go(sessions: Any) -> int:
        try:
            tz = report_timezone(settings.report.timezone)
            handler = _HANDLERS[(args.command, args.action)]
            args.now = clock()
            return int(await handler(sessions, settings, args, tz))
        except ImportValidationError as exc:
            # one line (contract.md), naming every bad line and field: the file was refused as a whole
            listed = "; ".join(str(e) for e in exc.errors)
            print(f"gbgate: {args.file}: nothing imported, {len(exc.errors)} error(s): {listed}", file=sys.stderr)
            return 2
        except (OpsError, ReportError, OSError) as exc:
            print(f"gbgate: {exc}", file=sys.stderr)
            return 2

    return int(await _with_store(settings, go))


async def _contract_import(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    from gateway.reports import records

    data = Path(args.file).read_bytes()
    count = await records.import_contract(sessions, args.kind, args.file, data, now=args.now)
    print(f"imported {count} {args.kind} row(s) from {args.file}")
    return 0


async def _contract_list(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    from gateway.reports import records

    rows = await records.list_contract(sessions, args.kind)
    if args.json:
        _print_json(rows)
        return 0
    if rows:
        keys = list(rows[0])
        print("\t".join(keys))
        for r in rows:
            print("\t".join("" if r[k] is None else str(r[k]) for k in keys))
    print(f"{len(rows)} {args.kind} row(s)", file=sys.stderr)
    return 0


async def _maintenance_add(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    from gateway.cli_whitelist import cli_actor
    from gateway.reports.service import declare_maintenance

    start = parse_instant(args.start, tz, "start")
    end = parse_instant(args.end, tz, "end")
    wid = await declare_maintenance(
        sessions, args.subject, start, end, reason=args.reason, actor=cli_actor(), now=args.now
    )
    print(f"maintenance window {wid}: {args.subject} {_local(start, tz)} → {_local(end, tz)}")
    return 0


async def _maintenance_list(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    from gateway.reports import records

    rows = await records.list_maintenance(sessions, subject=args.subject)
    if args.json:
        _print_json(rows)
        return 0
    for w in rows:
        print(
            f"{w['id']:>5}  {w['subject']:<32}  {_local(w['start_ts'], tz)} → {_local(w['end_ts'], tz)}  {w['reason']}"
        )
    print(f"{len(rows)} window(s)", file=sys.stderr)
    return 0


async def _ticket_list(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    from gateway.reports import records

    rows = await records.list_tickets(sessions, status=args.status, station=args.station, vendor=args.vendor)
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'TICKET':<16}  {'CHANNEL':<20}  {'FAULT':<13}  {'SINCE':<16}  {'STATUS':<15}  VENDOR / FEEDBACK")
    for r in rows:
        print(
            f"{r['id']:<16}  {r['channel_id']:<20}  {r['fault']:<13}  {_local(r['since_ts'], tz):<16}  "
            f"{r['status']:<15}  {r['vendor_id']} {r['vendor_cause']}".rstrip()
        )
    print(f"{len(rows)} ticket(s)", file=sys.stderr)
    return 0


async def _ticket_show(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    from gateway.reports import records

    detail = await records.ticket_detail(sessions, args.ticket)
    if detail is None:
        raise OpsError(f"ticket: unknown ticket {args.ticket!r}")
    _print_json(detail)
    return 0


async def _ticket_do(
    sessions: Any, args: argparse.Namespace, steps: list[tuple[str, dict[str, Any]]], vendor: str | None = None
) -> int:
    from gateway.cli_whitelist import cli_actor
    from gateway.reports.service import ticket_steps

    new = await ticket_steps(sessions, args.ticket, steps, actor=cli_actor(), now=args.now, vendor=vendor)
    print(f"{new.id}: {new.status}")
    return 0


async def _ticket_feedback(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    from gateway.reports import records

    expected = parse_instant(args.expected_repair, tz, "expected-repair") if args.expected_repair else None
    actual = parse_instant(args.actual_repair, tz, "actual-repair") if args.actual_repair else None
    cause = args.cause.strip()
    if not cause and expected is None and actual is None:
        raise OpsError("give --cause, --expected-repair or --actual-repair")
    current = await records.ticket_detail(sessions, args.ticket, vendor=args.vendor)
    if current is None:
        raise OpsError(f"ticket: unknown ticket {args.ticket!r}")
    return await _ticket_do(sessions, args, records.feedback_steps(current, cause, expected, actual), args.vendor)


async def _ticket_confirm(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    return await _ticket_do(sessions, args, [("confirm", {})])


async def _ticket_dispute(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    return await _ticket_do(sessions, args, [("dispute", {"reason": args.reason})])


async def _policy_show(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    from gateway.reports import records

    versions = await records.list_policies(sessions, args.name)
    today = datetime.fromtimestamp(args.now, tz).date().isoformat()
    in_force = [v for v in versions if v["effective_from"] <= today]
    current = max(in_force, key=lambda v: (v["effective_from"], v["version"]))["version"] if in_force else None
    if args.json:
        _print_json({"name": args.name, "versions": versions, "current_version": current})
        return 0
    if not versions:
        print(f"policy {args.name}: no versions stored (the built-in zero-rate policy applies)")
    for v in versions:
        mark = "*" if v["version"] == current else " "
        body = json.dumps(v["body"], ensure_ascii=False, sort_keys=True)
        print(f"{mark} v{v['version']}  from {v['effective_from']}  {body}")
    return 0


async def _policy_set(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    from gateway.reports.service import save_policy

    try:
        effective = date.fromisoformat(args.effective_from)
    except ValueError:
        raise OpsError(f"--effective-from: expected YYYY-MM-DD, got {args.effective_from!r}") from None
    try:
        body = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise OpsError(f"{args.file}: not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise OpsError(f"{args.file}: expected a JSON object")
    version = await save_policy(sessions, body, effective_from=effective, name=args.name)
    print(f"policy {args.name} version {version}, in force from {effective.isoformat()}")
    return 0


async def _notice_send(sessions: Any, settings: Any, args: argparse.Namespace, tz: tzinfo) -> int:
    from gateway.reports.notice import send_now

    day = None
    if args.date:
        try:
            day = date.fromisoformat(args.date)
        except ValueError:
            raise OpsError(f"--date: expected YYYY-MM-DD, got {args.date!r}") from None
    result = await send_now(sessions, settings, day, now=args.now)
    if not result.sent and not result.failed:
        raise OpsError("no webhook configured: set report.webhook_url or a police station's webhook_url")
    for label in result.sent:
        print(f"notice {result.day} sent to {label}")
    if result.failed:
        label, reason = next(iter(result.failed.items()))
        raise OpsError(f"notice {result.day} to {label} failed: {reason} ({len(result.failed)} target(s) failed)")
    return 0


_HANDLERS: dict[tuple[str, str], Any] = {
    ("contract", "import"): _contract_import,
    ("contract", "list"): _contract_list,
    ("maintenance", "add"): _maintenance_add,
    ("maintenance", "list"): _maintenance_list,
    ("ticket", "list"): _ticket_list,
    ("ticket", "show"): _ticket_show,
    ("ticket", "feedback"): _ticket_feedback,
    ("ticket", "confirm"): _ticket_confirm,
    ("ticket", "dispute"): _ticket_dispute,
    ("policy", "show"): _policy_show,
    ("policy", "set"): _policy_set,
    ("notice", "send"): _notice_send,
}
