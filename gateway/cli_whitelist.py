"""`gbgate whitelist …` and `gbgate audit …` (contract.md).

The CLI writes through whitelist.store (entry + audit record in one transaction); a running
gateway picks the change up from the audit feed within a second (gateway.admission).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from whitelist.errors import ValidationError, ValidationErrors, WhitelistError
from whitelist.model import Credential, Entry, EntryStatus, parse_networks, validate_device_id


def add_whitelist_parsers(sub: Any) -> None:
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


def cli_actor() -> str:
    return f"cli:{os.environ.get('USER') or getpass.getuser() or 'operator'}"


def _fail(message: str) -> int:
    print(f"gbgate: {message}", file=sys.stderr)
    return 2


def _validation_message(exc: ValidationError) -> str:
    if isinstance(exc, ValidationErrors):
        return "; ".join(_validation_message(e) for e in exc.errors)
    where = f"line {exc.line}: " if exc.line is not None else ""
    return f"{where}{exc.field}: {exc.message}"


async def run_whitelist(settings: Any, args: argparse.Namespace) -> int:
    from gateway.cli import _with_store
    from whitelist.store import WhitelistStore

    async def go(sessions: Any) -> int:
        store = WhitelistStore(sessions)
        await store.load_policy()
        try:
            if args.command == "audit":
                return await _audit(store, args)
            return await _whitelist(store, settings, args)
        except ValidationError as exc:
            return _fail(_validation_message(exc))
        except WhitelistError as exc:
            return _fail(str(exc))

    return int(await _with_store(settings, go))


async def _whitelist(store: Any, settings: Any, args: argparse.Namespace) -> int:
    action = args.action
    realm = settings.sip.domain
    if action == "add":
        device_id = validate_device_id(args.device_id)
        password = args.password or os.environ.get("GBGATE_DEVICE_PASSWORD")
        if not password and sys.stdin.isatty():
            password = getpass.getpass(f"password for {device_id}: ")
        if not password:
            return _fail("--password is required (a device needs its own credential)")
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
            evidence=dict(current.evidence) if current else {},
        )
        action = "add" if current is None else "update"
        await store.save_entry(entry, actor=cli_actor(), action=action, reason="cli add")
        print(f"{device_id} approved")
        return 0
    if action == "list":
        status = EntryStatus(args.status) if args.status else None
        entries = await store.list_entries(status)
        if args.json:
            print(json.dumps([e.public_dict() for e in entries], ensure_ascii=False, indent=2))
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
    if action in ("approve", "suspend", "revoke"):
        device_id = validate_device_id(args.device_id)
        status = {"approve": EntryStatus.APPROVED, "suspend": EntryStatus.SUSPENDED, "revoke": EntryStatus.REVOKED}
        if action == "approve" and getattr(args, "password", None):
            from dataclasses import replace

            current = await store.get(device_id)
            if current is None:
                return _fail(f"device_id: no whitelist entry for {device_id}")
            credential = Credential.from_password(device_id, settings.sip.domain, args.password)
            await store.save_entry(replace(current, credential=credential, status=EntryStatus.APPROVED),
                                   actor=cli_actor(), action="approve", reason=args.reason or "cli approve")
            print(f"{device_id} approved")
            return 0
        entry = await store.set_status(device_id, status[action], actor=cli_actor(), reason=args.reason)
        if action == "approve" and entry.credential is None:
            print(f"warning: {device_id} has no credential yet; set one with `gbgate whitelist add`", file=sys.stderr)
        print(f"{device_id} {entry.status.value}")
        return 0
    if action == "import":
        return await _import(store, settings, args)
    if action == "export":
        return await _export(store, settings, args)
    return _fail(f"unknown whitelist action {action}")


async def _import(store: Any, settings: Any, args: argparse.Namespace) -> int:
    """An operator's import: CSV/JSON rows, or a bundle only when signed by the trusted key."""
    from gateway.progress import ProgressLine
    from whitelist import bundle

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {path}: {exc.strerror}")
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


async def _export(store: Any, settings: Any, args: argparse.Namespace) -> int:
    from whitelist import bundle

    policy = await store.load_policy()
    if args.signed:
        from certs.signing import load_private

        try:
            key = load_private(settings.whitelist.signing_key)
        except Exception as exc:
            return _fail(f"no signing key at {settings.whitelist.signing_key} ({exc}); run `gbgate certs signing-key`")
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


async def _audit(store: Any, args: argparse.Namespace) -> int:
    if args.action == "verify":
        result = await store.verify_audit()
        records = await store.audit_records()
        if result.ok:
            print(f"audit chain OK: {len(records)} records")
            return 0
        print(f"audit chain BROKEN at record {result.first_bad_seq}: {result.problem}", file=sys.stderr)
        return 1
    if args.limit < 1:
        return _fail("--limit must be at least 1")
    records = await store.audit_records()
    for r in records[-args.limit :]:
        print(f"{r.seq:>6}  {r.ts.isoformat()}  {r.actor:<20}  {r.action:<12}  {r.target}  {r.reason}")
    return 0
