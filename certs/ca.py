"""A local certificate authority for gbgate: ECDSA P-256 CA, gateway server and device client certs.

Layout under the CA directory: `ca.crt`, `ca.key`; `<name>.crt/.key` for gateway servers;
`devices/<device_id>.crt/.key` for devices (CN = the 20-digit device ID, GB/T 28181-2016 Annex D).
Keys are PEM PKCS#8, unencrypted, mode 0600; nothing is overwritten unless asked. The whitelist pins a
device by its certificate's SHA-256 fingerprint (certs.fingerprint), so re-issuing a device
certificate means updating its entry.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.errors import CertError, CertFormatError
from certs.files import write_private, write_public
from certs.fingerprint import fingerprint, load_certificate

CA_CERT, CA_KEY = "ca.crt", "ca.key"
_DEVICE_ID = re.compile(r"[0-9]{20}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class IssuedCert:
    cert_path: Path
    key_path: Path
    fingerprint: str
    not_after: datetime


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now(now: datetime | None) -> datetime:
    now = now or datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


class LocalCA:
    """The CA certificate and key, able to issue leaf certificates into its directory."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, directory: Path) -> None:
        self.cert, self.key, self.directory = cert, key, Path(directory)

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT

    @property
    def key_path(self) -> Path:
        return self.directory / CA_KEY

    @classmethod
    def create(cls, directory: str | Path, *, common_name: str = "gbgate local CA", days: int = 3650,
               now: datetime | None = None, overwrite: bool = False) -> LocalCA:
        d = Path(directory)
        now = _now(now)
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gbgate")])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        write_private(d / CA_KEY, _key_pem(key), overwrite=overwrite)
        write_public(d / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), overwrite=overwrite)
        return cls(cert, key, d)

    @classmethod
    def load(cls, directory: str | Path) -> LocalCA:
        d = Path(directory)
        try:
            cert = load_certificate((d / CA_CERT).read_bytes())
            key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), password=None)
        except OSError as exc:
            raise CertError(f"no CA in {d}: {exc}") from None
        except ValueError as exc:
            raise CertFormatError(str(d / CA_KEY), f"cannot read CA key ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertFormatError(str(d / CA_KEY), "CA key is not an EC key")
        return cls(cert, key, d)

    def _issue(self, subject: x509.Name, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier,
               cert_path: Path, key_path: Path, days: int, now: datetime | None,
               overwrite: bool) -> IssuedCert:
        now = _now(now)
        key = _new_key()
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True,
                                                key_cert_sign=False, crl_sign=False,
                                                content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        write_private(key_path, _key_pem(key), overwrite=overwrite)
        write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM), overwrite=overwrite)
        return IssuedCert(cert_path, key_path, fingerprint(cert), cert.not_valid_after_utc)

    def issue_server(self, *, name: str = "gateway", dns_names: tuple[str, ...] | list[str] = ("localhost",),
                     ip_addresses: tuple[str, ...] | list[str] = ("127.0.0.1",), days: int = 825,
                     now: datetime | None = None, overwrite: bool = False) -> IssuedCert:
        """Gateway TLS server certificate (SIP over TLS, HTTPS) with DNS and IP SANs."""
        if not _NAME.fullmatch(name):
            raise CertError(f"bad certificate file name {name!r}")
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        try:
            sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        except ValueError as exc:
            raise CertError(f"bad IP address for the server certificate: {exc}") from None
        if not sans:
            raise CertError("a server certificate needs at least one DNS name or IP address")
        cn = dns_names[0] if dns_names else str(ip_addresses[0])
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gbgate")])
        return self._issue(subject, sans, ExtendedKeyUsageOID.SERVER_AUTH, self.directory / f"{name}.crt",
                           self.directory / f"{name}.key", days, now, overwrite)

    def issue_device(self, device_id: str, *, days: int = 3650, now: datetime | None = None,
                     overwrite: bool = False) -> IssuedCert:
        """Device client certificate, CN = the 20-digit device ID."""
        if not _DEVICE_ID.fullmatch(device_id):
            raise CertError(f"device_id must be exactly 20 digits, got {device_id!r}")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
        d = self.directory / "devices"
        return self._issue(subject, [], ExtendedKeyUsageOID.CLIENT_AUTH, d / f"{device_id}.crt",
                           d / f"{device_id}.key", days, now, overwrite)


def create_ca(directory: str | Path, *, common_name: str = "gbgate local CA", days: int = 3650,
              now: datetime | None = None, overwrite: bool = False) -> LocalCA:
    return LocalCA.create(directory, common_name=common_name, days=days, now=now, overwrite=overwrite)


def device_id_of(cert: bytes | str | x509.Certificate) -> str | None:
    """The CN of a device certificate when it is a 20-digit ID, else None."""
    names = load_certificate(cert).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) and _DEVICE_ID.fullmatch(value) else None
