"""SipEndpoint over TLS on loopback: client certificates from a local CA, fingerprints, failed handshakes.

The pin the whitelist compares (certs.fingerprint form) must be what the endpoint reports for the
connection a request arrived on; a peer without an acceptable certificate, or not speaking TLS at
all, is counted and dropped and never reaches the application (RFC 3261 §26.2.1).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from pathlib import Path

import pytest

from certs.ca import IssuedCert, LocalCA
from certs.fingerprint import fingerprint
from certs.tls import client_context, server_context
from gateway.sip import Peer, Request, Response, SipError, make_response, parse_message
from gateway.sip.message import Headers, serialize
from gateway.sip.transport import SipEndpoint

DEVICE_A = "44010600001320000101"
DEVICE_B = "44010600001320000102"


def register(device_id: str, branch: str = "z9hG4bK-tls-1", extra: bytes = b"") -> bytes:
    return (
        f"REGISTER sip:44010600002000000001@4401060000 SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:5061;rport;branch={branch}\r\n"
        f"From: <sip:{device_id}@4401060000>;tag=77\r\n"
        f"To: <sip:{device_id}@4401060000>\r\n"
        f"Call-ID: reg-{device_id}-{branch}\r\n"
        f"CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{device_id}@127.0.0.1:5061;transport=tls>\r\n"
        f"Max-Forwards: 70\r\nExpires: 3600\r\n"
    ).encode() + extra + b"Content-Length: 0\r\n\r\n"


class App:
    def __init__(self) -> None:
        self.endpoint: SipEndpoint | None = None
        self.requests: list[tuple[Request, Peer, str | None]] = []
        self.closed: list[Peer] = []

    def on_request(self, request: Request, peer: Peer, key: Hashable) -> None:
        assert self.endpoint is not None
        # What the adapter will do: read the pin while the request's connection is alive.
        self.requests.append((request, peer, self.endpoint.peer_fingerprint(peer)))
        self.endpoint.respond(key, make_response(request, 200))

    def on_ack(self, request: Request, peer: Peer) -> None:
        pass

    def on_stray_response(self, response: Response, peer: Peer) -> None:
        pass

    def on_connection_closed(self, peer: Peer) -> None:
        self.closed.append(peer)


@dataclass
class Pki:
    ca: LocalCA
    server: IssuedCert
    device_a: IssuedCert
    device_b: IssuedCert
    stranger: IssuedCert  # same device ID as A, issued by another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = LocalCA.create(root / "ca")
    other = LocalCA.create(root / "other", common_name="not our CA")
    return Pki(ca, ca.issue_server(ip_addresses=["127.0.0.1"]), ca.issue_device(DEVICE_A),
               ca.issue_device(DEVICE_B), other.issue_device(DEVICE_A))


async def start(pki: Pki, *, require: bool = True, **kw: object) -> tuple[App, SipEndpoint]:
    app = App()
    ctx = server_context(pki.server.cert_path, pki.server.key_path, pki.ca.cert_path, require)
    ep = await SipEndpoint.start("127.0.0.1", 0, app, tls_port=0, tls_context=ctx, **kw)  # type: ignore[arg-type]
    app.endpoint = ep
    return app, ep


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[tuple[App, SipEndpoint]]:
    app, ep = await start(pki)
    yield app, ep
    await ep.stop()


def device_ctx(pki: Pki, cert: IssuedCert | None) -> ssl.SSLContext:
    if cert is None:
        return client_context(pki.ca.cert_path)
    return client_context(pki.ca.cert_path, cert.cert_path, cert.key_path)


async def connect(ep: SipEndpoint, ctx: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert ep.tls_port
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", ep.tls_port, ssl=ctx, server_hostname="127.0.0.1"), 5)


async def read_message(reader: asyncio.StreamReader) -> Request | Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    msg = parse_message(head)
    assert msg is not None
    return msg


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (OSError, TimeoutError, ssl.SSLError):
        pass


async def wait_for_stat(ep: SipEndpoint, key: str, n: int = 1) -> None:
    for _ in range(200):
        if ep.stats[key] >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"stats[{key!r}] = {ep.stats[key]}, wanted {n}: {dict(ep.stats)}")


async def refused(ep: SipEndpoint, ctx: ssl.SSLContext) -> bool:
    """True when a client with `ctx` gets no SIP answer (handshake refused, now or at first read)."""
    try:
        reader, writer = await connect(ep, ctx)
    except (ssl.SSLError, ConnectionError):
        return True  # TLS 1.2 style: the client sees the alert during the handshake
    try:
        writer.write(register(DEVICE_A))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), 3)  # TLS 1.3: the alert comes after
        return data == b""
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        await close(writer)


async def test_register_over_tls_carries_the_device_fingerprint(server, pki: Pki) -> None:
    app, ep = server
    assert ep.tls_port and ep.tls_port not in (ep.udp_port, ep.tcp_port)
    reader_a, writer_a = await connect(ep, device_ctx(pki, pki.device_a))
    reader_b, writer_b = await connect(ep, device_ctx(pki, pki.device_b))
    try:
        writer_a.write(register(DEVICE_A))
        writer_b.write(register(DEVICE_B))
        resp_a, resp_b = await read_message(reader_a), await read_message(reader_b)
    finally:
        await close(writer_a)
        await close(writer_b)
    assert isinstance(resp_a, Response) and resp_a.status == 200 and resp_a.call_id.startswith(f"reg-{DEVICE_A}")
    assert isinstance(resp_b, Response) and resp_b.status == 200 and resp_b.call_id.startswith(f"reg-{DEVICE_B}")
    by_id = {req.from_.uri.user: (peer, fp) for req, peer, fp in app.requests}
    peer_a, fp_a = by_id[DEVICE_A]
    peer_b, fp_b = by_id[DEVICE_B]
    assert peer_a.transport == peer_b.transport == "tls"
    assert peer_a.conn_id is not None and peer_a.conn_id != peer_b.conn_id
    assert fp_a == fingerprint(pki.device_a.cert_path.read_bytes()) == pki.device_a.fingerprint
    assert fp_b == fingerprint(pki.device_b.cert_path.read_bytes()) != fp_a
    assert ep.stats["tls_connections"] == 2 and ep.stats["tls_handshake_ok"] == 2
    assert ep.stats["tls_handshake_failed"] == 0
    await wait_for_stat(ep, "tls_connections", 2)
    for _ in range(100):
        if len(app.closed) == 2:
            break
        await asyncio.sleep(0.01)
    assert {p.conn_id for p in app.closed} == {peer_a.conn_id, peer_b.conn_id}
    assert ep.peer_fingerprint(peer_a) is None  # the connection is gone: nothing to vouch for


def coalesced_register(port: int, ctx: ssl.SSLContext, payload: bytes) -> bytes:
    """Blocking client that sends its last handshake flight and `payload` in one segment.

    The server then sees the request in the same read that completes the handshake, before
    start_tls() has returned (the race the connection's early buffer exists for)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if pending := outgoing.read():
                    sock.sendall(pending)
                incoming.write(sock.recv(65536))
        tls.write(payload)
        sock.sendall(outgoing.read())  # Finished (+ client certificate) and the REGISTER together
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                answer += tls.read(65536)
            except ssl.SSLWantReadError:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                incoming.write(chunk)
        return answer
    finally:
        sock.close()


async def test_request_in_the_handshake_segment_is_not_lost(server, pki: Pki) -> None:
    app, ep = server
    assert ep.tls_port
    answer = await asyncio.wait_for(asyncio.to_thread(
        coalesced_register, ep.tls_port, device_ctx(pki, pki.device_a), register(DEVICE_A)), 10)
    assert answer.startswith(b"SIP/2.0 200 OK\r\n")
    (_, peer, fp), = app.requests
    assert peer.conn_id is not None and fp == pki.device_a.fingerprint


async def test_split_writes_and_pings_framed_like_tcp(server, pki: Pki) -> None:
    app, ep = server
    reader, writer = await connect(ep, device_ctx(pki, pki.device_a))
    try:
        stream = b"\r\n\r\n" + register(DEVICE_A, "z9hG4bK-a") + register(DEVICE_A, "z9hG4bK-b")
        for i in range(0, len(stream), 11):
            writer.write(stream[i : i + 11])
            await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 3) == b"\r\n"  # RFC 5626 pong
        got = [await read_message(reader), await read_message(reader)]
    finally:
        await close(writer)
    assert [getattr(r, "status", None) for r in got] == [200, 200]
    assert len(app.requests) == 2


async def test_request_from_us_reuses_the_device_connection(server, pki: Pki) -> None:
    app, ep = server
    reader, writer = await connect(ep, device_ctx(pki, pki.device_a))
    try:
        writer.write(register(DEVICE_A))
        assert isinstance(await read_message(reader), Response)
        _, peer, _ = app.requests[0]
        h = Headers([
            ("From", "<sip:44010600002000000001@4401060000>;tag=gw1"),
            ("To", f"<sip:{DEVICE_A}@4401060000>"),
            ("Call-ID", "query-1"),
            ("CSeq", "1 MESSAGE"),
            ("Content-Type", "Application/MANSCDP+xml"),
        ])
        # A Peer without conn_id (as stored from a registration's host/port) still finds the connection.
        target = Peer("tls", peer.host, peer.port)
        pending = asyncio.ensure_future(ep.request(Request("MESSAGE", f"sip:{DEVICE_A}@127.0.0.1", h, b"<Q/>"),
                                                   target, timeout=3))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        body = await reader.readexactly(4)
        query = parse_message(head + body)
        assert isinstance(query, Request) and query.method == "MESSAGE" and query.body == b"<Q/>"
        assert (query.headers.get("Via") or "").startswith(f"SIP/2.0/TLS 127.0.0.1:{ep.tls_port};")
        writer.write(serialize(make_response(query, 200)))
        resp = await pending
    finally:
        await close(writer)
    assert resp.status == 200 and resp.call_id == "query-1"
    assert ep.stats["tls_connections"] == 1  # no second connection was opened


async def test_no_connection_to_a_tls_peer_is_an_error_not_a_dial(server) -> None:
    _, ep = server
    with pytest.raises(SipError):
        h = Headers([("From", "<sip:a@b>;tag=1"), ("To", "<sip:c@d>"), ("Call-ID", "x"), ("CSeq", "1 OPTIONS")])
        await ep.request(Request("OPTIONS", "sip:c@d", h), Peer("tls", "127.0.0.1", 9), timeout=1)
    assert ep.stats["tls_connections"] == 0


async def test_client_without_certificate_is_refused_and_counted(server, pki: Pki) -> None:
    app, ep = server
    assert await refused(ep, device_ctx(pki, None))
    await wait_for_stat(ep, "tls_handshake_failed")
    assert ep.stats["tls_handshake_error:peer_did_not_return_a_certificate"] == 1
    assert app.requests == [] and ep.stats["tls_connections"] == 0


async def test_certificate_from_another_ca_is_refused_and_counted(server, pki: Pki) -> None:
    app, ep = server
    assert await refused(ep, device_ctx(pki, pki.stranger))
    await wait_for_stat(ep, "tls_handshake_failed")
    assert ep.stats["tls_handshake_error:certificate_verify_failed"] == 1
    assert app.requests == [] and ep.stats["tls_connections"] == 0


async def test_plain_sip_to_the_tls_port_is_counted_and_closed(server) -> None:
    app, ep = server
    assert ep.tls_port
    reader, writer = await asyncio.open_connection("127.0.0.1", ep.tls_port)
    try:
        writer.write(register(DEVICE_A))
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(65536), 3)
        except ConnectionError:
            data = b""
        # Whatever comes back is at most a TLS alert record (content type 21), never SIP.
        assert data == b"" or data[:1] == b"\x15"
        if data:
            assert await asyncio.wait_for(reader.read(), 3) == b""
    finally:
        writer.close()
    await wait_for_stat(ep, "tls_handshake_failed")
    assert app.requests == [] and ep.stats["tls_connections"] == 0
    # The server is still serving: the counter of another failure moves too.
    reader, writer = await asyncio.open_connection("127.0.0.1", ep.tls_port)
    writer.write(b"\x00" * 64)
    await wait_for_stat(ep, "tls_handshake_failed", 2)
    writer.close()


async def test_silent_peer_times_out_in_handshake(pki: Pki) -> None:
    app, ep = await start(pki, tls_handshake_timeout=0.3)
    try:
        assert ep.tls_port
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.tls_port)
        try:
            assert await asyncio.wait_for(reader.read(), 3) == b""  # dropped by the server
        except ConnectionError:
            pass
        finally:
            writer.close()
        await wait_for_stat(ep, "tls_handshake_error:timeout")
        assert ep.stats["tls_handshake_failed"] == 1 and app.requests == []
    finally:
        await ep.stop()


async def test_oversized_message_over_tls_closes_the_connection(pki: Pki) -> None:
    app, ep = await start(pki, max_message=2048)
    try:
        reader, writer = await connect(ep, device_ctx(pki, pki.device_a))
        try:
            writer.write(register(DEVICE_A, extra=b"X-Pad: " + b"p" * 4000 + b"\r\n"))
            await writer.drain()
            try:
                assert await asyncio.wait_for(reader.read(), 3) == b""
            except (ConnectionError, ssl.SSLError):
                pass
        finally:
            await close(writer)
        await wait_for_stat(ep, "tls_closed_oversize")
        assert app.requests == []
        for _ in range(100):
            if app.closed:
                break
            await asyncio.sleep(0.01)
        assert [p.transport for p in app.closed] == ["tls"]
    finally:
        await ep.stop()


async def test_optional_client_certificate_gives_no_fingerprint(pki: Pki) -> None:
    app, ep = await start(pki, require=False)
    try:
        reader, writer = await connect(ep, device_ctx(pki, None))
        try:
            writer.write(register(DEVICE_A))
            resp = await read_message(reader)
        finally:
            await close(writer)
        assert isinstance(resp, Response) and resp.status == 200
        (_, peer, fp), = app.requests
        assert peer.transport == "tls" and fp is None
    finally:
        await ep.stop()


async def test_handshake_failures_do_not_disturb_established_devices(server, pki: Pki) -> None:
    app, ep = server
    reader, writer = await connect(ep, device_ctx(pki, pki.device_a))
    try:
        results = await asyncio.gather(*(refused(ep, device_ctx(pki, pki.stranger)) for _ in range(5)))
        assert all(results)
        writer.write(register(DEVICE_A))
        resp = await read_message(reader)
    finally:
        await close(writer)
    assert isinstance(resp, Response) and resp.status == 200
    await wait_for_stat(ep, "tls_handshake_failed", 5)
    assert [fp for _, _, fp in app.requests] == [pki.device_a.fingerprint]


async def test_tls_is_off_by_default_and_needs_a_context(tmp_path: Path) -> None:
    app = App()
    ep = await SipEndpoint.start("127.0.0.1", 0, app)
    try:
        assert ep.tls_port is None
        assert ep.peer_fingerprint(Peer("udp", "127.0.0.1", 5060)) is None
        assert ep.peer_fingerprint(Peer("tls", "127.0.0.1", 5061, 99)) is None
    finally:
        await ep.stop()
    with pytest.raises(SipError):
        await SipEndpoint.start("127.0.0.1", 0, app, tls_port=0)


async def test_busy_tls_port_fails_start_and_releases_the_others(pki: Pki) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        ctx = server_context(pki.server.cert_path, pki.server.key_path, pki.ca.cert_path, True)
        with pytest.raises(OSError):
            await SipEndpoint.start("127.0.0.1", 0, App(), tls_port=busy.getsockname()[1], tls_context=ctx)
        # Nothing left bound by the failed start: a normal endpoint still starts and stops.
        ep = await SipEndpoint.start("127.0.0.1", 0, App(), tls_port=0, tls_context=ctx)
        assert ep.tls_port and ep.tls_port != busy.getsockname()[1]
        await ep.stop()
    finally:
        busy.close()
