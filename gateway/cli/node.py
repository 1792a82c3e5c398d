"""`gbgate serve`, `demo`, `config show` and `db upgrade`: running and inspecting a node."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from gateway.cli.common import Invocation, until_signal
from gateway.config import masked, to_toml


def add_parsers(sub: Any) -> None:
    sub.add_parser("serve", help="run the gateway")
    demo = sub.add_parser("demo", help="run the gateway with a simulated site of cameras")
    demo.add_argument("--cameras", type=int, default=8)
    demo.add_argument("--duration", type=float, default=0, help="stop after N seconds (0 = until Ctrl-C)")
    demo.add_argument("--no-history", action="store_true", help="do not seed simulated health history")

    cfg = sub.add_parser("config", help="configuration").add_subparsers(dest="action", required=True)
    show = cfg.add_parser("show", help="print the effective configuration, secrets masked")
    show.add_argument("--json", action="store_true")

    db = sub.add_parser("db", help="database").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply migrations")


async def serve(inv: Invocation) -> int:
    from gateway.app import Gateway

    logging.getLogger().setLevel(logging.DEBUG if inv.args.verbose else logging.INFO)
    settings = inv.settings
    gw = Gateway(settings)
    await gw.start()
    try:
        await until_signal(on_ready=lambda: print(
            f"gbgate serving: SIP {settings.sip.host}:{gw.sip_port} (UDP/TCP), HTTP {gw.http_url}", flush=True))
    finally:
        await gw.stop()
    return 0


async def demo(inv: Invocation) -> int:
    from gateway.demo import run_demo

    args = inv.args
    return await run_demo(
        inv.settings, cameras=args.cameras, history=not args.no_history, until=lambda: until_signal(args.duration)
    )


def config_show(inv: Invocation) -> int:
    data = masked(inv.settings)
    print(json.dumps(data, ensure_ascii=False, indent=2) if inv.args.json else to_toml(data), end="")
    return 0


async def db_upgrade(inv: Invocation) -> int:
    from gateway.store import migrate

    await asyncio.to_thread(migrate.upgrade, inv.settings.database.url)
    print("database is at the latest revision")
    return 0
