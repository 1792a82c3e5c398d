"""`gbgate whitelist …` and `gbgate audit …` (contract.md).

The CLI writes through whitelist.store (entry + audit record in one transaction); a running
gateway picks the change up from the audit feed within a second (whitelist.admission).
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.cli.common import CliError, Invocation, cli_actor, print_json, reasons, with_store
from whitelist.errors import ValidationError, ValidationErrors, WhitelistError
from whitelist.model import (
    Credential,
    Entry,
    EntryStatus,
    parse_networks,
    validate_device_id,
)
from whitelist.ranges import parse_channel_ranges

STATUS_OF_ACTION = {"approve": EntryStatus.APPROVED, "suspend": EntryStatus.SUSPENDED, "revoke": EntryStatus.REVOKED}


def add_parsers(sub: Any) -> None:
    wl = sub.add_parser("whitelist", help="device whitelist").add_subparsers(dest="action", required=True)
    add = wl.add_parser("add", help="add (or update) an approved entry")
    add.add_argument("device_id")
    add.add_argument("--password", help="digest password (or GBGATE_DEVICE_PASSWORD, or prompted)")
    add.add_argument("--ip", action="append", default=[], help="allowed source IP or CIDR (repeatable)")
    add.add_argument("--name", default="")
    add.add_argument("--site", default="")
    add.add_argument("--link", default="")
    add.add_argument("--owner", default="")
    add.add_argument("--manufacturer")
    add.add_argument("--model")
    add.add_argument("--max-channels", type=int)
    add.add_argument(
        "--channel-ranges", default=None,
        help="a lower platform's allowed channel IDs: lo-hi,id,... (20-digit IDs; default: any)",
    )
    ls = wl.add_parser("list", help="list entries")
    ls.add_argument("--status", choices=[s.value for s in EntryStatus])
    ls.add_argument("--json", action="store_true")
    for name, text in (("approve", "approve an entry"), ("suspend", "suspend"), ("revoke", "revoke")):
        a = wl.add_parser(name, help=text)
        a.add_argument("device_id")
        a.add_argument("--reason", default="")
        if name == "approve":
            a.add_argument("--password", help="give a pending device its credential while approving it")
    imp = wl.add_parser("import", help="import a CSV/JSON list or a signed bundle (all or nothing)")
    imp.add_argument("file")
    imp.add_argument("--public-key", help="require a signed bundle and verify it with this Ed25519 public key")
    imp.add_argument(
        "--status", default="approved", choices=["approved", "pending"],
        help="status of imported CSV/JSON rows (an operator's import is approved by default)",
    )
    imp.add_argument("--progress", action="store_true", help="progress line on stderr even when it is not a terminal")
    exp = wl.add_parser("export", help="export the whitelist as JSON")
    exp.add_argument("--signed", action="store_true", help="sign with the policy key (gbgate certs signing-key)")
    exp.add_argument("--out", help="file (default: standard output)")

    aud = sub.add_parser("audit", help="audit log").add_subparsers(dest="action", required=True)
    aud.add_parser("verify", help="check the hash chain; exit 1 naming the first bad record")
    al = aud.add_parser("list", help="print audit records")
    al.add_argument("--limit", type=int, default=50)


def validation_message(exc: WhitelistError) -> str:
    """One line for a whitelist error; every field of a ValidationErrors, with its line when known."""
    if isinstance(exc, ValidationErrors):
        return "; ".join(validation_message(e) for e in exc.errors)
    if isinstance(exc, ValidationError):
        where = f"line {exc.line}: " if exc.line is not None else ""
        return f"{where}{exc.field}: {exc.message}"
    return str(exc)


StoreCommand = Callable[[Any, Invocation], Awaitable[int]]


def on_store(fn: StoreCommand) -> Callable[[Invocation], Awaitable[int]]:
    """A handler run against a WhitelistStore, whitelist errors translated to CliError.

    The store's in-memory policy is not loaded: a one-shot command reads what it needs from the
    database (export loads it itself), and an import of 20,000 entries should not first read and
    then re-index every existing one (issue 15)."""

    async def run(inv: Invocation) -> int:
        from whitelist.store import WhitelistStore

        async def go(sessions: Any) -> int:
            with reasons(WhitelistError, describe=validation_message):
                store = WhitelistStore(sessions)
                return await fn(store, inv)

        return await with_store(inv.settings, go)

    run.__name__ = run.__qualname__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


@on_store
async def whitelist_add(store: Any, inv: Invocation) -> int:
    args, realm = inv.args, inv.settings.sip.domain
    device_id = validate_device_id(args.device_id)
    password = args.password or os.environ.get("GBGATE_DEVICE_PASSWORD")
    if not password and sys.stdin.isatty():
        password = getpass.getpass(f"password for {device_id}: ")
    if not password:
        raise CliError("--password is required (a device needs its own credential)")
    current = await store.get(device_id)
    entry = Entry(
        device_id=device_id,
        status=EntryStatus.APPROVED,
        credential=Credential.from_password(device_id, realm, password),
        allowed_sources=parse_networks(args.ip, field="--ip"),
        name=args.name or (current.name if current else ""),
        site=args.site or (current.site if current else ""),
        link=args.link or (current.link if current else ""),
        owner=args.owner or (current.owner if current else ""),
        expected_manufacturer=args.manufacturer,
        expected_model=args.model,
        max_channels=args.max_channels,
        channel_ranges=parse_channel_ranges(args.channel_ranges, field="--channel-ranges"),
        evidence=dict(current.evidence) if current else {},
    )
    action = "add" if current is None else "update"
    await store.save_entry(entry, actor=cli_actor(), action=action, reason="cli add")
    print(f"{device_id} approved")
    return 0


@on_store
async def whitelist_list(store: Any, inv: Invocation) -> int:
    args = inv.args
    status = EntryStatus(args.status) if args.status else None
    entries = await store.list_entries(status)
    if args.json:
        print_json([e.public_dict() for e in entries])
        return 0
    print(f"{'DEVICE ID':<20}  {'STATUS':<9}  {'NAME':<20}  {'SOURCES':<24}  EVIDENCE")
    for e in entries:
        sources = ",".join(str(n) for n in e.allowed_sources) or "any"
        ev = e.evidence or {}
        evidence = ""
        if ev:
            evidence = f"{ev.get('source', '')} {ev.get('user_agent') or ''} x{ev.get('attempts', '')}"
        print(f"{e.device_id:<20}  {e.status.value:<9}  {(e.name or '-')[:20]:<20}  {sources[:24]:<24}  {evidence}")
    print(f"{len(entries)} entries")
    return 0


@on_store
async def whitelist_set_status(store: Any, inv: Invocation) -> int:
    """`approve`, `suspend`, `revoke`; `approve --password` also gives a pending device its credential."""
    args = inv.args
    action = args.action
    device_id = validate_device_id(args.device_id)
    if action == "approve" and getattr(args, "password", None):
        current = await store.get(device_id)
        if current is None:
            raise CliError(f"device_id: no whitelist entry for {device_id}")
        credential = Credential.from_password(device_id, inv.settings.sip.domain, args.password)
        await store.save_entry(replace(current, credential=credential, status=EntryStatus.APPROVED),
                               actor=cli_actor(), action="approve", reason=args.reason or "cli approve")
        print(f"{device_id} approved")
        return 0
    entry = await store.set_status(device_id, STATUS_OF_ACTION[action], actor=cli_actor(), reason=args.reason)
    if action == "approve" and entry.credential is None:
        print(f"warning: {device_id} has no credential yet; set one with `gbgate whitelist add`", file=sys.stderr)
    print(f"{device_id} {entry.status.value}")
    return 0


@on_store
async def whitelist_import(store: Any, inv: Invocation) -> int:
    """An operator's import: CSV/JSON rows, or a bundle only when signed by the trusted key."""
    from gateway.progress import ProgressLine
    from whitelist import bundle

    args, settings = inv.args, inv.settings
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    public_key = None
    if args.public_key or bundle.bundle_format(data) == bundle.SIGNED_FORMAT:
        from certs.signing import load_public

        public_key = load_public(args.public_key or settings.whitelist.signing_pub)
    status = EntryStatus(args.status)
    progress = ProgressLine.for_stream(sys.stderr, "import", force=getattr(args, "progress", False))
    try:
        progress(f"reading {path.name}", 0, 0)
        loaded = bundle.load_any(
            data, realm=settings.sip.domain, public_key=public_key, status=status,
            require_signature=bool(args.public_key),
        )
        entries, rules = loaded.entries, loaded.rules
        saved = await store.import_entries(
            entries, cli_actor(), rules=rules, lines=loaded.lines,
            proposals_only=loaded.key_id is None and status is EntryStatus.PENDING, progress=progress)
    finally:
        progress.finish()
    counts: dict[str, int] = {}
    for e in saved:
        counts[e.status.value] = counts.get(e.status.value, 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"imported {len(saved)} entries" + (f" ({detail})" if detail else "")
          + (f" and {len(rules)} rules" if rules else ""))
    return 0


@on_store
async def whitelist_export(store: Any, inv: Invocation) -> int:
    from whitelist import bundle

    args, settings = inv.args, inv.settings
    policy = await store.load_policy()
    if args.signed:
        from certs.signing import load_private

        try:
            key = load_private(settings.whitelist.signing_key)
        except Exception as exc:
            raise CliError(
                f"no signing key at {settings.whitelist.signing_key} ({exc}); run `gbgate certs signing-key`"
            ) from exc
        data = bundle.export_signed(policy, key)
    else:
        data = bundle.export_json(policy)
    if args.out:
        from certs.files import write_private

        write_private(args.out, data, overwrite=True)     # HA1s are password-equivalent: 0600 from creation
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
    return 0


@on_store
async def audit_verify(store: Any, inv: Invocation) -> int:
    """Exit 1 (not 2) naming the first bad record: a finding, not a usage error (contract.md)."""
    result = await store.verify_audit()
    records = await store.audit_records()
    if result.ok:
        print(f"audit chain OK: {len(records)} records")
        return 0
    print(f"audit chain BROKEN at record {result.first_bad_seq}: {result.problem}", file=sys.stderr)
    return 1


@on_store
async def audit_list(store: Any, inv: Invocation) -> int:
    limit = inv.args.limit
    if limit < 1:
        raise CliError("--limit must be at least 1")
    records = await store.audit_records()
    for r in records[-limit:]:
        print(f"{r.seq:>6}  {r.ts.isoformat()}  {r.actor:<20}  {r.action:<12}  {r.target}  {r.reason}")
    return 0
