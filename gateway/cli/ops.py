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
seconds. Like every gbgate command, a failure is one line on standard error and exit status 2 (CliError).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any

from gateway.cli.common import CliError, Invocation, cli_actor, print_json, with_store

GROUPS = ("contract", "maintenance", "ticket", "policy", "notice")
CONTRACT_KINDS = ("vendors", "batches", "maintenance_contracts", "links", "stations", "jurisdiction", "channels")
TICKET_STATUSES = ("open", "vendor_answered", "recovered", "repaired", "confirmed", "disputed")


def add_parsers(sub: Any) -> None:
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
        raise CliError(f"--{name}: expected YYYY-MM-DD HH:MM, ISO 8601 or unix seconds, got {text!r}") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=tz)).timestamp()


def local_time(ts: float | None, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M") if ts else "-"


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsContext:
    """What an ops handler works with: the store, the command line, the report timezone, one "now"."""

    sessions: Any
    settings: Any
    args: Any
    tz: tzinfo
    now: float


def in_store(fn: Callable[[OpsContext], Awaitable[int]]) -> Callable[[Invocation], Awaitable[int]]:
    """Run `fn` on a migrated store; the clock is read once, report errors become one line."""

    async def run(inv: Invocation) -> int:
        from gateway.reports.errors import ImportValidationError, ReportError
        from gateway.reports.service import report_timezone

        async def go(sessions: Any) -> int:
            try:
                tz = report_timezone(inv.settings.report.timezone)
                ctx = OpsContext(sessions=sessions, settings=inv.settings, args=inv.args, tz=tz, now=inv.now())
                return await fn(ctx)
            except ImportValidationError as exc:
                # one line (contract.md), naming every bad line and field: the file was refused as a whole
                listed = "; ".join(str(e) for e in exc.errors)
                raise CliError(f"{inv.args.file}: nothing imported, {len(exc.errors)} error(s): {listed}") from exc
            except (ReportError, OSError) as exc:
                raise CliError(str(exc)) from exc

        return await with_store(inv.settings, go)

    run.__name__ = run.__qualname__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


@in_store
async def contract_import(ctx: OpsContext) -> int:
    from gateway.reports import records

    data = Path(ctx.args.file).read_bytes()
    count = await records.import_contract(ctx.sessions, ctx.args.kind, ctx.args.file, data, now=ctx.now)
    print(f"imported {count} {ctx.args.kind} row(s) from {ctx.args.file}")
    return 0


@in_store
async def contract_list(ctx: OpsContext) -> int:
    from gateway.reports import records

    rows = await records.list_contract(ctx.sessions, ctx.args.kind)
    if ctx.args.json:
        print_json(rows)
        return 0
    if rows:
        keys = list(rows[0])
        print("\t".join(keys))
        for r in rows:
            print("\t".join("" if r[k] is None else str(r[k]) for k in keys))
    print(f"{len(rows)} {ctx.args.kind} row(s)", file=sys.stderr)
    return 0


@in_store
async def maintenance_add(ctx: OpsContext) -> int:
    from gateway.reports.service import declare_maintenance

    start = parse_instant(ctx.args.start, ctx.tz, "start")
    end = parse_instant(ctx.args.end, ctx.tz, "end")
    wid = await declare_maintenance(
        ctx.sessions, ctx.args.subject, start, end, reason=ctx.args.reason, actor=cli_actor(), now=ctx.now
    )
    print(f"maintenance window {wid}: {ctx.args.subject} {local_time(start, ctx.tz)} → {local_time(end, ctx.tz)}")
    return 0


@in_store
async def maintenance_list(ctx: OpsContext) -> int:
    from gateway.reports import records

    rows = await records.list_maintenance(ctx.sessions, subject=ctx.args.subject)
    if ctx.args.json:
        print_json(rows)
        return 0
    for w in rows:
        start, end = local_time(w["start_ts"], ctx.tz), local_time(w["end_ts"], ctx.tz)
        print(f"{w['id']:>5}  {w['subject']:<32}  {start} → {end}  {w['reason']}")
    print(f"{len(rows)} window(s)", file=sys.stderr)
    return 0


@in_store
async def ticket_list(ctx: OpsContext) -> int:
    from gateway.reports import records

    args = ctx.args
    rows = await records.list_tickets(ctx.sessions, status=args.status, station=args.station, vendor=args.vendor)
    if ctx.args.json:
        print_json(rows)
        return 0
    print(f"{'TICKET':<16}  {'CHANNEL':<20}  {'FAULT':<13}  {'SINCE':<16}  {'STATUS':<15}  VENDOR / FEEDBACK")
    for r in rows:
        print(
            f"{r['id']:<16}  {r['channel_id']:<20}  {r['fault']:<13}  {local_time(r['since_ts'], ctx.tz):<16}  "
            f"{r['status']:<15}  {r['vendor_id']} {r['vendor_cause']}".rstrip()
        )
    print(f"{len(rows)} ticket(s)", file=sys.stderr)
    return 0


@in_store
async def ticket_show(ctx: OpsContext) -> int:
    from gateway.reports import records

    detail = await records.ticket_detail(ctx.sessions, ctx.args.ticket)
    if detail is None:
        raise CliError(f"ticket: unknown ticket {ctx.args.ticket!r}")
    print_json(detail)
    return 0


async def apply_ticket_steps(
    ctx: OpsContext, steps: list[tuple[str, dict[str, Any]]], vendor: str | None = None
) -> int:
    from gateway.reports.service import ticket_steps

    new = await ticket_steps(ctx.sessions, ctx.args.ticket, steps, actor=cli_actor(), now=ctx.now, vendor=vendor)
    print(f"{new.id}: {new.status}")
    return 0


@in_store
async def ticket_feedback(ctx: OpsContext) -> int:
    from gateway.reports import records

    expected = parse_instant(ctx.args.expected_repair, ctx.tz, "expected-repair") if ctx.args.expected_repair else None
    actual = parse_instant(ctx.args.actual_repair, ctx.tz, "actual-repair") if ctx.args.actual_repair else None
    cause = ctx.args.cause.strip()
    if not cause and expected is None and actual is None:
        raise CliError("give --cause, --expected-repair or --actual-repair")
    current = await records.ticket_detail(ctx.sessions, ctx.args.ticket, vendor=ctx.args.vendor)
    if current is None:
        raise CliError(f"ticket: unknown ticket {ctx.args.ticket!r}")
    return await apply_ticket_steps(ctx, records.feedback_steps(current, cause, expected, actual), ctx.args.vendor)


@in_store
async def ticket_confirm(ctx: OpsContext) -> int:
    return await apply_ticket_steps(ctx, [("confirm", {})])


@in_store
async def ticket_dispute(ctx: OpsContext) -> int:
    return await apply_ticket_steps(ctx, [("dispute", {"reason": ctx.args.reason})])


@in_store
async def policy_show(ctx: OpsContext) -> int:
    from gateway.reports import records

    versions = await records.list_policies(ctx.sessions, ctx.args.name)
    today = datetime.fromtimestamp(ctx.now, ctx.tz).date().isoformat()
    in_force = [v for v in versions if v["effective_from"] <= today]
    current = max(in_force, key=lambda v: (v["effective_from"], v["version"]))["version"] if in_force else None
    if ctx.args.json:
        print_json({"name": ctx.args.name, "versions": versions, "current_version": current})
        return 0
    if not versions:
        print(f"policy {ctx.args.name}: no versions stored (the built-in zero-rate policy applies)")
    for v in versions:
        mark = "*" if v["version"] == current else " "
        body = json.dumps(v["body"], ensure_ascii=False, sort_keys=True)
        print(f"{mark} v{v['version']}  from {v['effective_from']}  {body}")
    return 0


@in_store
async def policy_set(ctx: OpsContext) -> int:
    from gateway.reports.service import save_policy

    try:
        effective = date.fromisoformat(ctx.args.effective_from)
    except ValueError:
        raise CliError(f"--effective-from: expected YYYY-MM-DD, got {ctx.args.effective_from!r}") from None
    try:
        body = json.loads(Path(ctx.args.file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CliError(f"{ctx.args.file}: not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CliError(f"{ctx.args.file}: expected a JSON object")
    version = await save_policy(ctx.sessions, body, effective_from=effective, name=ctx.args.name)
    print(f"policy {ctx.args.name} version {version}, in force from {effective.isoformat()}")
    return 0


@in_store
async def notice_send(ctx: OpsContext) -> int:
    from gateway.reports.notice import send_now

    day = None
    if ctx.args.date:
        try:
            day = date.fromisoformat(ctx.args.date)
        except ValueError:
            raise CliError(f"--date: expected YYYY-MM-DD, got {ctx.args.date!r}") from None
    result = await send_now(ctx.sessions, ctx.settings, day, now=ctx.now)
    if not result.sent and not result.failed:
        raise CliError("no webhook configured: set report.webhook_url or a police station's webhook_url")
    for label in result.sent:
        print(f"notice {result.day} sent to {label}")
    if result.failed:
        label, reason = next(iter(result.failed.items()))
        raise CliError(f"notice {result.day} to {label} failed: {reason} ({len(result.failed)} target(s) failed)")
    return 0


