"""`gbgate certs signing-key|ca|server|device|fingerprint`: the local CA and the policy signing key."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from certs.errors import CertError
from gateway.cli.common import Invocation, reasons


def add_parsers(sub: Any) -> None:
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


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def ca_dir(settings: Any) -> Path:
    return Path(settings.data_dir) / "certs"


def signing_key(inv: Invocation) -> int:
    from certs.signing import generate_signing_key, key_id, load_public

    settings = inv.settings
    with reasons(CertError, OSError):
        key_dir = Path(settings.whitelist.signing_key).parent
        priv, pub = generate_signing_key(key_dir, overwrite=inv.args.force)
        wanted_priv, wanted_pub = Path(settings.whitelist.signing_key), Path(settings.whitelist.signing_pub)
        if priv != wanted_priv:
            priv.replace(wanted_priv)
        if pub != wanted_pub:
            pub.replace(wanted_pub)
        print(f"signing key {wanted_priv} (public {wanted_pub}), key id {key_id(load_public(wanted_pub))}")
    return 0


def fingerprint(inv: Invocation) -> int:
    from certs.fingerprint import fingerprint as sha256_fingerprint

    with reasons(CertError, OSError):
        print(sha256_fingerprint(Path(inv.args.file).read_bytes()))
    return 0


def create_ca(inv: Invocation) -> int:
    from certs.ca import LocalCA

    where = ca_dir(inv.settings)
    with reasons(CertError, OSError):
        LocalCA.create(where, overwrite=inv.args.force)
    print(f"CA certificate {where / 'ca.crt'}")
    return 0


def issue_server(inv: Invocation) -> int:
    from certs.ca import LocalCA

    hosts = inv.args.host or [inv.settings.sip.host]
    with reasons(CertError, OSError):
        issued = LocalCA.load(ca_dir(inv.settings)).issue_server(
            dns_names=[h for h in hosts if not is_ip(h)], ip_addresses=[h for h in hosts if is_ip(h)], overwrite=True
        )
    print(f"gateway certificate {issued.cert_path} (key {issued.key_path})")
    return 0


def issue_device(inv: Invocation) -> int:
    from certs.ca import LocalCA

    with reasons(CertError, OSError):
        issued = LocalCA.load(ca_dir(inv.settings)).issue_device(inv.args.device_id, overwrite=True)
    print(f"device certificate {issued.cert_path} fingerprint {issued.fingerprint}")
    return 0
