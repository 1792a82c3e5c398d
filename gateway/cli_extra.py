"""`gbgate certs …` and `gbgate report …` (contract.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPORT_KINDS = (
    "daily-faults",
    "availability",
    "link-fees",
    "deductions",
    "reconciliation",
    "annual-offline",
    "repairs",
)


def add_extra_parsers(sub: Any) -> None:
    c = sub.add_parser("certs", help="local CA, gateway/device certificates, policy signing key")
    cs = c.add_subparsers(dest="action", required=True)
    sk = cs.add_parser("signing-key", help="create the Ed25519 key that signs whitelist bundles")
    sk.add_argument("--force", action="store_true", help="replace an existing key")
    ca = cs.add_parser("ca", help="create the local CA")
    ca.add_argument("--force", action="store_true")
    srv = cs.add_parser("server", help="issue the gateway's TLS certificate")
    srv.add_argument("--host", action="append", default=[], help="DNS name or IP (repeatable)")
    dev = cs.add_parser("device", help="issue a device client certificate (CN = device ID)")
    dev.add_argument("device_id")
    fp = cs.add_parser("fingerprint", help="print a certificate's SHA-256 fingerprint")
    fp.add_argument("file")

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


async def run_extra(settings: Any, args: argparse.Namespace) -> int:
    if args.command == "certs":
        return _certs(settings, args)
    if args.command == "report":
        return await _report(settings, args)
    print(f"gbgate: unknown command {args.command}", file=sys.stderr)
    return 2


def _certs(settings: Any, args: argparse.Namespace) -> int:
    from certs.errors import CertError

    base = Path(settings.data_dir)
    try:
        if args.action == "signing-key":
            from certs.signing import generate_signing_key, key_id, load_public

            key_dir = Path(settings.whitelist.signing_key).parent
            priv, pub = generate_signing_key(key_dir, overwrite=args.force)
            wanted_priv, wanted_pub = Path(settings.whitelist.signing_key), Path(settings.whitelist.signing_pub)
            if priv != wanted_priv:
                priv.replace(wanted_priv)
            if pub != wanted_pub:
                pub.replace(wanted_pub)
            print(f"signing key {wanted_priv} (public {wanted_pub}), key id {key_id(load_public(wanted_pub))}")
            return 0
        if args.action == "fingerprint":
            from certs.fingerprint import fingerprint

            print(fingerprint(Path(args.file).read_bytes()))
            return 0
        from certs.ca import LocalCA

        ca_dir = base / "certs"
        if args.action == "ca":
            LocalCA.create(ca_dir, overwrite=args.force)
            print(f"CA certificate {ca_dir / 'ca.crt'}")
            return 0
        local = LocalCA.load(ca_dir)
        if args.action == "server":
            hosts = args.host or [settings.sip.host]
            ips = [h for h in hosts if _is_ip(h)]
            names = [h for h in hosts if not _is_ip(h)]
            issued = local.issue_server(dns_names=names, ip_addresses=ips, overwrite=True)
            print(f"gateway certificate {issued.cert_path} (key {issued.key_path})")
            return 0
        if args.action == "device":
            issued = local.issue_device(args.device_id, overwrite=True)
            print(f"device certificate {issued.cert_path} fingerprint {issued.fingerprint}")
            return 0
    except (CertError, OSError) as exc:
        print(f"gbgate: {exc}", file=sys.stderr)
        return 2
    return 2


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


async def _report(settings: Any, args: argparse.Namespace) -> int:
    from gateway.cli import _with_store
    from gateway.reports.service import ReportError, build_report

    lang = args.lang or settings.report.language

    async def go(sessions: Any) -> int:
        try:
            if args.reissue is not None:
                import getpass
                import time

                from gateway.reports.service import reissue_report

                out = await reissue_report(
                    sessions,
                    settings,
                    args.kind,
                    args.period,
                    actor=f"cli:{getpass.getuser()}",
                    reason=args.reissue,
                    station=args.station,
                    now=time.time(),
                )
                print(f"re-issued {args.kind} {out['period']} as revision {out['revision']}", file=sys.stderr)
            data = await build_report(
                sessions, settings, args.kind, args.period, fmt=args.format, lang=lang, station=args.station
            )
        except ReportError as exc:
            print(f"gbgate: {exc}", file=sys.stderr)
            return 2
        if args.out:
            Path(args.out).write_bytes(data)
            print(f"wrote {args.out}", file=sys.stderr)
        elif args.format == "csv":
            sys.stdout.buffer.write(data)
        else:
            print("gbgate: --out is required for xlsx and html", file=sys.stderr)
            return 2
        return 0

    return int(await _with_store(settings, go))
