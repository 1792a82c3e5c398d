"""The `gbgate` command (contract.md): serve, demo, whitelist, token, devices, report, certs, db, audit.

Every subcommand exits non-zero with a one-line reason on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.config import load_settings, masked, to_toml
from gateway.errors import ConfigError, GbgateError


class CliError(Exception):
    """A one-line reason for a non-zero exit."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gbgate", description="GB/T 28181 gateway for social-resource cameras")
    p.add_argument("--config", help="TOML configuration file (or GBGATE_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

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

    tok = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    tc = tok.add_parser("create", help="create a token and print it alone on standard output")
    tc.add_argument("--role", required=True, choices=["integrator", "security", "ops", "platform", "vendor", "admin"])
    tc.add_argument("--name", default="")
    tc.add_argument("--scope", default="", help="for vendor tokens: the vendor id")
    tc.add_argument("--expires", default="90d",
                    help="lifetime: N followed by d, h or m (default 90d), or 'never'")
    tl = tok.add_parser("list", help="list tokens (id, role, name, state, expiry; never the token)")
    tl.add_argument("--json", action="store_true")
    tr = tok.add_parser("revoke", help="revoke a token by id (a running gateway refuses it within 1 s)")
    tr.add_argument("token_id", type=int)
    tr.add_argument("--reason", default="")

    dev = sub.add_parser("devices", help="devices").add_subparsers(dest="action", required=True)
    dl = dev.add_parser("list", help="ID, name, online, last keepalive, channels")
    dl.add_argument("--json", action="store_true")

    from gateway.cli_whitelist import add_whitelist_parsers

    add_whitelist_parsers(sub)

    aud = sub.add_parser("audit", help="audit log").add_subparsers(dest="action", required=True)
    aud.add_parser("verify", help="check the hash chain; exit 1 naming the first bad record")
    al = aud.add_parser("list", help="print audit records")
    al.add_argument("--limit", type=int, default=50)

    from gateway.cli_extra import add_extra_parsers

    add_extra_parsers(sub)
    from gateway.cli_ops import add_ops_parsers

    add_ops_parsers(sub)
    return p


def run_async(fn: Callable[..., Awaitable[int]], *args: Any) -> int:
    settings = args[0] if args else None
    choice = getattr(getattr(settings, "runtime", None), "event_loop", "asyncio")
    with asyncio.Runner(loop_factory=event_loop_factory(choice)) as runner:
        return runner.run(fn(*args))


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for (or "auto" and installed); None means asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("runtime.event_loop", "uvloop is not installed (pip install uvloop)") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(settings: Any) -> int:
    from gateway.app import Gateway

    gw = Gateway(settings)
    await gw.start()
    print(f"gbgate serving: SIP {settings.sip.host}:{gw.sip_port} (UDP/TCP), HTTP {gw.http_url}", flush=True)
    try:
        await _until_signal()
    finally:
        await gw.stop()
    return 0


async def _until_signal(duration: float = 0) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if duration > 0:
        loop.call_later(duration, stop.set)
    await stop.wait()


async def _with_store(settings: Any, fn: Callable[[Any], Awaitable[int]]) -> int:
    from gateway.store import migrate
    from gateway.store.db import make_engine, make_sessionmaker

    await asyncio.to_thread(migrate.upgrade, settings.database.url)
    engine = make_engine(settings.database.url)
    try:
        return await fn(make_sessionmaker(engine))
    finally:
        await engine.dispose()


def parse_lifetime(text: str) -> timedelta | None:
    """`--expires`: N followed by d, h or m (90d, 12h, 30m), or `never`; CliError otherwise."""
    value = text.strip().lower()
    if value == "never":
        return None
    units = {"d": 86_400, "h": 3_600, "m": 60}
    number, unit = value[:-1], value[-1:]
    if unit not in units or not number.isdigit() or not 0 < int(number) <= 3650 * 86_400 // units[unit]:
        raise CliError(f"--expires: expected e.g. 90d, 12h, 30m or never (at most 10 years), got {text!r}")
    return timedelta(seconds=int(number) * units[unit])


async def _token(settings: Any, args: argparse.Namespace) -> int:
    from gateway.api.auth import Role, TokenStore

    async def go(sessions: Any) -> int:
        from gateway.cli_whitelist import cli_actor
        from whitelist.store import WhitelistStore

        tokens = TokenStore(sessions)
        audit = WhitelistStore(sessions)
        now = datetime.now(UTC)
        if args.action == "list":
            infos = await tokens.list_tokens()
            rows = [{"id": i.id, "role": i.role, "name": i.name, "scope": i.scope, "state": i.state(now),
                     "created_at": i.created_at.isoformat(timespec="seconds"),
                     "expires_at": i.expires_at.isoformat(timespec="seconds") if i.expires_at else None,
                     "revoked_at": i.revoked_at.isoformat(timespec="seconds") if i.revoked_at else None}
                    for i in infos]
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2))
                return 0
            print(f"{'ID':>5}  {'ROLE':<10}  {'NAME':<20}  {'STATE':<8}  EXPIRES")
            for r in rows:
                print(f"{r['id']:>5}  {r['role']:<10}  {(r['name'] or '-')[:20]:<20}  {r['state']:<8}  "
                      f"{r['expires_at'] or 'never'}")
            return 0
        if args.action == "revoke":
            info = await tokens.revoke(args.token_id)
            if info is None:
                raise CliError(f"token_id: no token with id {args.token_id}")
            await audit.append_audit(
                actor=cli_actor(), action="token_revoke", target=f"token:{info.id}", before=None,
                after={"id": info.id, "role": info.role, "name": info.name}, reason=args.reason or "cli",
            )
            print(f"token {info.id} ({info.role} {info.name or '-'}) revoked")
            return 0
        lifetime = parse_lifetime(args.expires)
        token, info = await tokens.create_with_id(Role(args.role), args.name, args.scope, lifetime)
        # an admin action: audited (who, what), never the token itself
        await audit.append_audit(
            actor=cli_actor(), action="token_create", target=f"token:{args.role}", before=None,
            after={"id": info.id, "role": args.role, "name": args.name, "scope": args.scope,
                   "expires_at": info.expires_at.isoformat() if info.expires_at else None}, reason="cli",
        )
        print(token)
        return 0

    return await _with_store(settings, go)


async def _devices_list(settings: Any, args: argparse.Namespace) -> int:
    from gateway.store.devices import DeviceRepository

    async def go(sessions: Any) -> int:
        repo = DeviceRepository(sessions)
        rows = await repo.list_devices()
        counts = await repo.channel_counts()
        items = [
            {
                "id": r.id,
                "name": r.name,
                "online": r.online,
                "last_keepalive": r.last_keepalive.isoformat() if r.last_keepalive else None,
                "channels": counts.get(r.id, 0),
            }
            for r in rows
        ]
        if args.json:
            print(json.dumps(items, ensure_ascii=False, indent=2))
            return 0
        print(f"{'ID':<20}  {'NAME':<24}  {'ONLINE':<6}  {'LAST KEEPALIVE':<32}  CHANNELS")
        for i in items:
            print(
                f"{i['id']:<20}  {(i['name'] or '-')[:24]:<24}  {'yes' if i['online'] else 'no':<6}  "
                f"{i['last_keepalive'] or '-':<32}  {i['channels']}"
            )
        print(f"{sum(1 for i in items if i['online'])} of {len(items)} online")
        return 0

    return await _with_store(settings, go)


async def _db_upgrade(settings: Any) -> int:
    from gateway.store import migrate

    await asyncio.to_thread(migrate.upgrade, settings.database.url)
    print("database is at the latest revision")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(args.config)
        cmd = args.command
        if cmd == "serve":
            logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
            return run_async(_serve, settings)
        if cmd == "demo":
            from gateway.demo import run_demo

            return run_async(run_demo, settings, args)
        if cmd == "config":
            data = masked(settings)
            print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else to_toml(data), end="")
            return 0
        if cmd == "db":
            return run_async(_db_upgrade, settings)
        if cmd == "token":
            return run_async(_token, settings, args)
        if cmd == "devices":
            return run_async(_devices_list, settings, args)
        if cmd in ("whitelist", "audit"):
            from gateway.cli_whitelist import run_whitelist

            return run_async(run_whitelist, settings, args)
        from gateway.cli_ops import OPS_COMMANDS, run_ops

        if cmd in OPS_COMMANDS:
            return run_async(run_ops, settings, args)
        from gateway.cli_extra import run_extra

        return run_async(run_extra, settings, args)
    except (ConfigError, CliError, GbgateError) as exc:
        print(f"gbgate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # last resort: one line, not a traceback
        if getattr(args, "verbose", False):
            raise
        print(f"gbgate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
