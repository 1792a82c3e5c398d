"""certs: local CA, server/device certificates, fingerprints, signing keys and TLS contexts.

TLS handshakes run over in-memory BIOs (no sockets)."""

from __future__ import annotations

import hashlib
import ssl
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs.ca import LocalCA, create_ca, device_id_of
from certs.errors import CertError, CertExistsError, CertFormatError
from certs.fingerprint import fingerprint, format_colons, load_certificate
from certs.signing import generate_signing_key, key_id, load_private, load_public
from certs.tls import client_context, peer_fingerprint, server_context

DEVICE = "34020000001320000001"


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return create_ca(tmp_path / "ca")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_ca_files_and_key_mode(ca: LocalCA) -> None:
    assert _mode(ca.key_path) == 0o600
    cert = load_certificate(ca.cert_path.read_bytes())
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True
    again = LocalCA.load(ca.directory)
    assert again.cert == ca.cert


def test_ca_refuses_overwrite(ca: LocalCA) -> None:
    with pytest.raises(CertExistsError):
        create_ca(ca.directory)
    create_ca(ca.directory, overwrite=True)
    assert _mode(ca.key_path) == 0o600


def test_server_cert_sans_and_chain(ca: LocalCA) -> None:
    issued = ca.issue_server(dns_names=["gbgate.local", "localhost"], ip_addresses=["127.0.0.1", "::1"])
    assert _mode(issued.key_path) == 0o600
    cert = load_certificate(issued.cert_path.read_text())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gbgate.local", "localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    cert.verify_directly_issued_by(ca.cert)
    assert issued.fingerprint == fingerprint(cert)


def test_server_cert_rejects_bad_input(ca: LocalCA) -> None:
    with pytest.raises(CertError):
        ca.issue_server(ip_addresses=["300.1.1.1"])
    with pytest.raises(CertError):
        ca.issue_server(name="../evil")
    with pytest.raises(CertError):
        ca.issue_server(dns_names=[], ip_addresses=[])


def test_device_cert_cn_is_device_id(ca: LocalCA) -> None:
    issued = ca.issue_device(DEVICE)
    assert issued.cert_path == ca.directory / "devices" / f"{DEVICE}.crt"
    assert device_id_of(issued.cert_path.read_bytes()) == DEVICE
    eku = load_certificate(issued.cert_path.read_bytes()).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    with pytest.raises(CertError):
        ca.issue_device("3402000000132000000")
    with pytest.raises(CertError):
        ca.issue_device("3402000000132000000١")   # Arabic-Indic digit is not an ASCII digit


def test_validity_uses_given_now(ca: LocalCA) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    issued = ca.issue_device(DEVICE, days=10, now=now)
    assert issued.not_after == now + timedelta(days=10)


def test_fingerprint_pem_der_equal_and_matches_sha256(ca: LocalCA) -> None:
    pem = ca.cert_path.read_bytes()
    der = load_certificate(pem).public_bytes(Encoding.DER)
    assert fingerprint(pem) == fingerprint(der) == fingerprint(pem.decode()) == hashlib.sha256(der).hexdigest()
    assert len(fingerprint(der)) == 64
    assert format_colons("abcd") == "AB:CD"


@pytest.mark.requires("openssl")
def test_fingerprint_matches_openssl(ca: LocalCA) -> None:
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                          str(ca.cert_path)], capture_output=True, text=True, check=True).stdout
    assert out.strip().split("=", 1)[1].replace(":", "").lower() == fingerprint(ca.cert_path.read_bytes())


@pytest.mark.parametrize("garbage", [b"", b"hello", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_fingerprint_garbage(garbage: bytes) -> None:
    with pytest.raises(CertFormatError):
        fingerprint(garbage)


def test_signing_keys(tmp_path: Path) -> None:
    priv_path, pub_path = generate_signing_key(tmp_path)
    assert _mode(priv_path) == 0o600
    priv, pub = load_private(priv_path), load_public(pub_path)
    pub.verify(priv.sign(b"x"), b"x")
    assert key_id(pub) == key_id(priv.public_key()) and len(key_id(pub)) == 64
    with pytest.raises(CertExistsError):
        generate_signing_key(tmp_path)
    with pytest.raises(CertFormatError):
        load_private(pub_path)
    with pytest.raises(CertFormatError):
        load_public(tmp_path / "missing.pub")


def test_signing_key_id_matches_whitelist_bundle(tmp_path: Path) -> None:
    from whitelist.bundle import key_id as bundle_key_id
    _, pub_path = generate_signing_key(tmp_path)
    assert key_id(load_public(pub_path)) == bundle_key_id(load_public(pub_path))


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str = "localhost") \
        -> tuple[ssl.SSLObject, ssl.SSLObject]:
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj in (("c", cli), ("s", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server learns about a rejected client cert on the first read
            cli.write(b"ping")
            s_in.write(c_out.read())
            assert srv.read(4) == b"ping"
            return srv, cli
    raise AssertionError("handshake did not finish")


def test_tls_mutual_auth_and_peer_fingerprint(ca: LocalCA) -> None:
    server = ca.issue_server()
    device = ca.issue_device(DEVICE)
    sctx = server_context(server.cert_path, server.key_path, ca.cert_path, require_client_cert=True)
    cctx = client_context(ca.cert_path, device.cert_path, device.key_path)
    srv, cli = _handshake(sctx, cctx)
    assert peer_fingerprint(srv) == device.fingerprint
    assert peer_fingerprint(cli) == server.fingerprint
    assert sctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_tls_required_client_cert_missing_fails(ca: LocalCA) -> None:
    server = ca.issue_server()
    sctx = server_context(server.cert_path, server.key_path, ca.cert_path, require_client_cert=True)
    with pytest.raises(ssl.SSLError):
        _handshake(sctx, client_context(ca.cert_path))


def test_tls_client_cert_from_other_ca_rejected(ca: LocalCA, tmp_path: Path) -> None:
    other = create_ca(tmp_path / "other")
    rogue = other.issue_device(DEVICE)
    server = ca.issue_server()
    sctx = server_context(server.cert_path, server.key_path, ca.cert_path, require_client_cert=True)
    with pytest.raises(ssl.SSLError):
        _handshake(sctx, client_context(ca.cert_path, rogue.cert_path, rogue.key_path))


def test_tls_optional_client_cert(ca: LocalCA) -> None:
    server = ca.issue_server()
    sctx = server_context(server.cert_path, server.key_path, ca.cert_path, require_client_cert=False)
    srv, _ = _handshake(sctx, client_context(ca.cert_path))
    assert peer_fingerprint(srv) is None
    assert peer_fingerprint(None) is None


def test_tls_wrong_hostname_rejected_by_client(ca: LocalCA) -> None:
    server = ca.issue_server(dns_names=["gbgate.local"], ip_addresses=[])
    sctx = server_context(server.cert_path, server.key_path, None, require_client_cert=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(sctx, client_context(ca.cert_path), hostname="evil.example")


def test_tls_errors(ca: LocalCA, tmp_path: Path) -> None:
    server = ca.issue_server()
    with pytest.raises(CertError):
        server_context(server.cert_path, server.key_path, None, require_client_cert=True)
    with pytest.raises(CertError):
        server_context(tmp_path / "nope.crt", server.key_path, None, require_client_cert=False)
    with pytest.raises(CertError):
        client_context(tmp_path / "nope.crt")


def test_certs_never_imports_gateway_or_whitelist() -> None:
    import ast
    root = Path(__file__).resolve().parents[2] / "certs"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert not n.startswith(("gateway", "whitelist", "adapters")), f"{path.name} imports {n}"
