"""`gbgate source …`: pull sources (RTSP/RTMP/file) with an integrator-assigned GB channel ID.

The same SourceAdmin as the API (gateway/app/sources.py): the channel ID checked, the URL's host
admitted by the whitelist, the password sealed, every change and refusal audited under
`cli:<user>`. A running node picks the change up within a few seconds. Output never shows a
password (`rtsp://user:***@host/…`).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import CliError, Invocation, cli_actor, print_json, with_store

MODES = ("on_demand", "always_on")


def add_parsers(sub: Any) -> None:
    src = sub.add_parser("source", help="RTSP/RTMP/file pull sources").add_subparsers(dest="action", required=True)
    add = src.add_parser("add", help="add (or change) a pull source; its host must be whitelisted for the channel")
    add.add_argument("channel_id", help="the 20-digit GB channel ID it is published as")
    add.add_argument("url", help="rtsp://[user:password@]host[:port]/path, rtmp://…, file:///path")
    # the values of gateway.store.sources.PullMode, spelled here so `gbgate --help` needs no SQLAlchemy
    add.add_argument("--mode", default=MODES[0], choices=MODES)
    add.add_argument("--name", default="")
    add.add_argument("--site", default="")
    add.add_argument("--disabled", action="store_true", help="store it, do not pull it")
    ls = src.add_parser("list", help="list pull sources (passwords never shown)")
    ls.add_argument("--json", action="store_true")
    rm = src.add_parser("remove", help="remove a pull source")
    rm.add_argument("channel_id")
    imp = src.add_parser("import", help="CSV with columns channel_id,url[,mode,name,site]; each row admitted alone")
    imp.add_argument("file")


async def _run(inv: Invocation, fn: Any) -> int:
    from gateway.app.sources import source_admin
    from gateway.store.devices import DeviceRepository
    from gateway.store.sources import SourceError
    from whitelist.store import WhitelistStore

    async def go(sessions: Any) -> int:
        wl = WhitelistStore(sessions)
        policy = await wl.load_policy()
        admin = source_admin(inv.settings, sessions, policy, wl, devices=DeviceRepository(sessions),
                             clock=inv.clock)
        try:
            return int(await fn(admin))
        except SourceError as exc:
            raise CliError(f"{exc.field + ': ' if exc.field else ''}{exc}") from None

    return await with_store(inv.settings, go)


async def source_add(inv: Invocation) -> int:
    a = inv.args

    async def fn(admin: Any) -> int:
        rec = await admin.add(a.channel_id, a.url, actor=cli_actor(), mode=a.mode, name=a.name, site=a.site,
                              enabled=not a.disabled)
        print(f"{rec.channel_id} {rec.mode.value} {rec.redacted_url()}")
        return 0

    return await _run(inv, fn)


async def source_list(inv: Invocation) -> int:
    async def fn(admin: Any) -> int:
        recs = await admin.list()
        if inv.args.json:
            print_json([r.public_dict() for r in recs])
            return 0
        print(f"{'CHANNEL ID':<20}  {'MODE':<9}  {'ON':<3}  {'NAME':<20}  URL")
        for r in recs:
            print(f"{r.channel_id:<20}  {r.mode.value:<9}  {'yes' if r.enabled else 'no':<3}  "
                  f"{(r.name or '-')[:20]:<20}  {r.redacted_url()}")
        print(f"{len(recs)} sources")
        return 0

    return await _run(inv, fn)


async def source_remove(inv: Invocation) -> int:
    async def fn(admin: Any) -> int:
        rec = await admin.remove(inv.args.channel_id, actor=cli_actor())
        print(f"{rec.channel_id} removed")
        return 0

    return await _run(inv, fn)


async def source_import(inv: Invocation) -> int:
    path = Path(inv.args.file)
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None

    from gateway.store.sources import SourceError

    async def fn(admin: Any) -> int:
        ok = failed = 0
        for line, row in enumerate(rows, start=2):
            try:
                await admin.add((row.get("channel_id") or "").strip(), (row.get("url") or "").strip(),
                                actor=cli_actor(), mode=(row.get("mode") or MODES[0]).strip(),
                                name=(row.get("name") or "").strip(), site=(row.get("site") or "").strip())
                ok += 1
            except SourceError as exc:
                failed += 1
                print(f"line {line}: {exc.field + ': ' if exc.field else ''}{exc}", file=sys.stderr)
        print(f"imported {ok} sources" + (f", {failed} refused" if failed else ""))
        return 0 if not failed else 1

    return await _run(inv, fn)
