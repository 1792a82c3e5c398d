"""Certificate fingerprints: SHA-256 over the DER encoding, lower-case hex without colons.

This is the form whitelist entries pin (`cert_fingerprint`) and the one `openssl x509 -fingerprint
-sha256` prints once its colons are removed and it is lower-cased.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs.errors import CertFormatError


def load_certificate(data: bytes | str | x509.Certificate) -> x509.Certificate:
    """PEM (str or bytes) or DER bytes → certificate; CertFormatError otherwise."""
    if isinstance(data, x509.Certificate):
        return data
    raw = data.encode("ascii", errors="replace") if isinstance(data, str) else bytes(data)
    try:
        if b"-----BEGIN CERTIFICATE-----" in raw:
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise CertFormatError("certificate", f"not a PEM or DER X.509 certificate ({exc})") from None


def fingerprint(cert: bytes | str | x509.Certificate) -> str:
    """SHA-256 of the certificate's DER bytes as 64 lower-case hex digits."""
    der = load_certificate(cert).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def format_colons(fp: str) -> str:
    """AB:CD:… form for people comparing with openssl output."""
    return ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()
