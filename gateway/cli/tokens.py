"""`gbgate token create|list|revoke` and `gbgate devices list`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.cli.common import CliError, Invocation, cli_actor, with_store

ROLES = ["integrator", "security", "ops", "platform", "vendor", "admin"]


def add_parsers(sub: Any) -> None:
    tok = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    tc = tok.add_parser("create", help="create a token and print it alone on standard output")
    tc.add_argument("--role", required=True, choices=ROLES)
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


async def token_create(inv: Invocation) -> int:
    from gateway.api.auth import Role, TokenStore
    from whitelist.store import WhitelistStore

    args = inv.args

    async def go(sessions: Any) -> int:
        lifetime = parse_lifetime(args.expires)
        token, info = await TokenStore(sessions).create_with_id(Role(args.role), args.name, args.scope, lifetime)
        # an admin action: audited (who, what), never the token itself
        await WhitelistStore(sessions).append_audit(
            actor=cli_actor(), action="token_create", target=f"token:{args.role}", before=None,
            after={"id": info.id, "role": args.role, "name": args.name, "scope": args.scope,
                   "expires_at": info.expires_at.isoformat() if info.expires_at else None}, reason="cli",
        )
        print(token)
        return 0

    return await with_store(inv.settings, go)


async def token_list(inv: Invocation) -> int:
    from gateway.api.auth import TokenStore

    async def go(sessions: Any) -> int:
        now = datetime.fromtimestamp(inv.now(), UTC)
        infos = await TokenStore(sessions).list_tokens()
        rows: list[dict[str, Any]] = [
            {"id": i.id, "role": i.role, "name": i.name, "scope": i.scope, "state": i.state(now),
             "created_at": i.created_at.isoformat(timespec="seconds"),
             "expires_at": i.expires_at.isoformat(timespec="seconds") if i.expires_at else None,
             "revoked_at": i.revoked_at.isoformat(timespec="seconds") if i.revoked_at else None}
            for i in infos
        ]
        if inv.args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
            return 0
        print(f"{'ID':>5}  {'ROLE':<10}  {'NAME':<20}  {'STATE':<8}  EXPIRES")
        for r in rows:
            print(f"{r['id']:>5}  {r['role']:<10}  {(r['name'] or '-')[:20]:<20}  {r['state']:<8}  "
                  f"{r['expires_at'] or 'never'}")
        return 0

    return await with_store(inv.settings, go)


async def token_revoke(inv: Invocation) -> int:
    from gateway.api.auth import TokenStore
    from whitelist.store import WhitelistStore

    args = inv.args

    async def go(sessions: Any) -> int:
        info = await TokenStore(sessions).revoke(args.token_id)
        if info is None:
            raise CliError(f"token_id: no token with id {args.token_id}")
        await WhitelistStore(sessions).append_audit(
            actor=cli_actor(), action="token_revoke", target=f"token:{info.id}", before=None,
            after={"id": info.id, "role": info.role, "name": info.name}, reason=args.reason or "cli",
        )
        print(f"token {info.id} ({info.role} {info.name or '-'}) revoked")
        return 0

    return await with_store(inv.settings, go)


async def devices_list(inv: Invocation) -> int:
    from gateway.store.devices import DeviceRepository

    async def go(sessions: Any) -> int:
        repo = DeviceRepository(sessions)
        rows = await repo.list_devices()
        counts = await repo.channel_counts()
        items: list[dict[str, Any]] = [
            {
                "id": r.id,
                "name": r.name,
                "online": r.online,
                "last_keepalive": r.last_keepalive.isoformat() if r.last_keepalive else None,
                "channels": counts.get(r.id, 0),
            }
            for r in rows
        ]
        if inv.args.json:
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

    return await with_store(inv.settings, go)
