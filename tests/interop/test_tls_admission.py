"""SIP over TLS admission against a real OpenSSL peer (`openssl s_client`), full Gateway in-process.

The whitelist pins a device to its certificate's SHA-256 fingerprint (issue 3; GB 35114 class A
approximated with X.509, gb28181.md §9.4). Expected behaviour, device by device:
  cert A (pinned)            → 401 challenge, then 200 with the right password;
  cert B (same CA, same ID)  → 401 challenge, then 403 even with the right password (CERT_MISMATCH:
                               the challenge comes first so an unknown ID and a bad pin look alike);
  cert from another CA       → no TLS session at all, counted by the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certs.ca import IssuedCert, LocalCA
from gateway.app import Gateway
from gateway.sip import Peer, Request, Response, digest, parse_message
from tests.interop.conftest import gateway_settings, require_tool, whitelist

pytestmark = [pytest.mark.interop, pytest.mark.requires("openssl")]

CAM = "34020000001320000901"
PW = "Tls-cam-901"


@dataclass
class Pki:
    ca: LocalCA
    cert_a: IssuedCert
    cert_b: IssuedCert
    stranger: IssuedCert


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    require_tool("openssl")  # skipped locally without it, a failure in CI (like sipp)
    ca = LocalCA.create(tmp_path / "ca")
    ca.issue_server(ip_addresses=["127.0.0.1"])
    cert_a = ca.issue_device(CAM)
    cert_b = LocalCA(ca.cert, ca.key, tmp_path / "ca-b").issue_device(CAM)  # same CA, another key pair
    stranger = LocalCA.create(tmp_path / "other", common_name="not our CA").issue_device(CAM)
    return Pki(ca, cert_a, cert_b, stranger)


@pytest.fixture
async def gw(tmp_path: Path, pki: Pki) -> AsyncIterator[Gateway]:
    d = pki.ca.directory
    g = Gateway(gateway_settings(
        tmp_path,
        GBGATE_SIP__TLS_PORT="0",
        GBGATE_SIP__TLS_CERT=str(d / "gateway.crt"),
        GBGATE_SIP__TLS_KEY=str(d / "gateway.key"),
        GBGATE_SIP__TLS_CA=str(pki.ca.cert_path),
        GBGATE_SIP__TLS_REQUIRE_CLIENT_CERT="true",
    ))
    await g.start()
    try:
        yield g
    finally:
        await g.stop()


class OpensslDevice:
    """`openssl s_client` as a camera: REGISTERs piped into its stdin, the gateway's bytes on its stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.cseq = 0

    @classmethod
    async def connect(cls, port: int, ca: Path, cert: IssuedCert) -> OpensslDevice:
        openssl = require_tool("openssl")
        proc = await asyncio.create_subprocess_exec(
            openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-cert", str(cert.cert_path),
            "-key", str(cert.key_path), "-CAfile", str(ca), "-verify_return_error", "-verify_ip", "127.0.0.1",
            "-quiet",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def register(self, authorization: str | None = None) -> None:
        self.cseq += 1
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        msg = (
            f"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:5061;rport;branch=z9hG4bK-ossl-{self.cseq}\r\n"
            f"From: <sip:{CAM}@3402000000>;tag=ossl1\r\n"
            f"To: <sip:{CAM}@3402000000>\r\n"
            f"Call-ID: ossl-reg-{id(self)}\r\n"
            f"CSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:{CAM}@127.0.0.1:5061;transport=tls>\r\n"
            f"Max-Forwards: 70\r\nExpires: 3600\r\nUser-Agent: openssl-s_client\r\n{auth}"
            f"Content-Length: 0\r\n\r\n"
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(msg.encode())
        await self.proc.stdin.drain()

    async def response(self, timeout: float = 5.0) -> Response | None:
        """The next SIP response (requests the gateway sends, e.g. DeviceInfo, are skipped); None at EOF."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                try:
                    head = await self.proc.stdout.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return None
                msg = parse_message(head)
                assert msg is not None
                if isinstance(msg, Request):
                    length = int(msg.headers.get("Content-Length") or 0)
                    if length:
                        await self.proc.stdout.readexactly(length)
                    continue
                return msg

    async def close(self) -> str:
        if self.proc.returncode is None:
            self.proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        assert self.proc.stderr is not None
        return (await self.proc.stderr.read()).decode(errors="replace")


def tls_port(gw: Gateway) -> int:
    assert gw.endpoint is not None
    port = gw.endpoint.tls_port
    assert port, "the gateway does not serve SIP over TLS (app.py must pass tls_port/tls_context)"
    return int(port)


async def register_with_password(dev: OpensslDevice) -> tuple[Response, Response | None]:
    """First REGISTER (expect a challenge), then the same with digest credentials."""
    await dev.register()
    challenge = await dev.response()
    assert challenge is not None, "no answer to the first REGISTER"
    www = challenge.headers.get("WWW-Authenticate") or ""
    if challenge.status != 401 or not www:
        return challenge, None
    value = digest.authorization(www, method="REGISTER", uri="sip:34020000002000000001@3402000000",
                                 username=CAM, password=PW)
    await dev.register(value)
    return challenge, await dev.response()




async def test_pinned_certificate_is_admitted(gw: Gateway, pki: Pki) -> None:
    port = tls_port(gw)
    await whitelist(gw, CAM, PW, cert_fingerprint=pki.cert_a.fingerprint)
    dev = await OpensslDevice.connect(port, pki.ca.cert_path, pki.cert_a)
    try:
        challenge, final = await register_with_password(dev)
        assert challenge.status == 401
        assert final is not None and final.status == 200, final
        assert gw.endpoint is not None and gw.adapter is not None
        rec = gw.adapter.presence.get(CAM)
        assert rec is not None and rec.online and rec.transport == "tls"
        assert gw.endpoint.peer_fingerprint(Peer("tls", rec.host, rec.port, rec.conn_id)) == pki.cert_a.fingerprint
    finally:
        await dev.close()


async def test_other_certificate_with_the_right_password_is_refused(gw: Gateway, pki: Pki) -> None:
    port = tls_port(gw)
    await whitelist(gw, CAM, PW, cert_fingerprint=pki.cert_a.fingerprint)
    assert pki.cert_b.fingerprint != pki.cert_a.fingerprint
    dev = await OpensslDevice.connect(port, pki.ca.cert_path, pki.cert_b)
    try:
        challenge, final = await register_with_password(dev)
        assert challenge.status == 401  # enumeration-safe: nothing is told before credentials
        assert final is not None and final.status == 403, final
        assert gw.adapter is not None
        assert gw.adapter.presence.get(CAM) is None
        assert gw.adapter.stats["refused:CERT_MISMATCH"] == 1
    finally:
        await dev.close()


async def test_certificate_from_another_ca_never_gets_a_session(gw: Gateway, pki: Pki) -> None:
    port = tls_port(gw)
    await whitelist(gw, CAM, PW, cert_fingerprint=pki.stranger.fingerprint)
    dev = await OpensslDevice.connect(port, pki.ca.cert_path, pki.stranger)
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await dev.register()
        assert await dev.response() is None  # the gateway closed the connection; no SIP came back
        assert gw.endpoint is not None and gw.adapter is not None and gw.router is not None
        assert gw.endpoint.stats["tls_handshake_failed"] >= 1
        assert gw.endpoint.stats["tls_handshake_error:certificate_verify_failed"] >= 1
        assert gw.router.stats["requests:REGISTER"] == 0
    finally:
        await dev.close()
