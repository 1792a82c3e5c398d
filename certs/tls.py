"""TLS contexts for SIP over TLS (RFC 3261 §26.2.1 / GB/T 28181-2016 §C) and device client certs.

Devices presenting a client certificate are identified by its SHA-256 fingerprint
(`peer_fingerprint`), which the whitelist compares with the entry's pinned value.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from certs.errors import CertError


def server_context(cert: str | Path, key: str | Path, ca: str | Path | None,
                   require_client_cert: bool) -> ssl.SSLContext:
    """TLS ≥ 1.2 server context; with `ca`, client certificates are requested (required if asked)."""
    if require_client_cert and ca is None:
        raise CertError("require_client_cert needs a CA to verify client certificates against")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
        if ca is not None:
            ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise CertError(f"cannot load TLS material: {exc}") from None
    if ca is None:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: str | Path, cert: str | Path | None = None, key: str | Path | None = None, *,
                   check_hostname: bool = True) -> ssl.SSLContext:
    """Client side (tests, cascade uplinks, simulated devices): verify the server against `ca`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    try:
        ctx.load_verify_locations(cafile=str(ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise CertError(f"cannot load TLS material: {exc}") from None
    return ctx


def peer_fingerprint(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """SHA-256 hex of the peer's certificate (DER), or None when it presented none."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None
