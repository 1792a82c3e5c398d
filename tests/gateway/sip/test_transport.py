"""SipEndpoint over loopback: UDP answers, retransmission absorption, 400s, TCP framing, client side."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Hashable

import pytest

from gateway.sip import Peer, Request, Response, SipTimeout, make_response, parse_message
from gateway.sip.message import Headers
from gateway.sip.transport import SipEndpoint

KEEPALIVE = (
    b"MESSAGE sip:44010600002000000001@4401060000 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK3306184729\r\n"
    b"From: <sip:44010600001320000101@4401060000>;tag=1739004528\r\n"
    b"To: <sip:44010600002000000001@4401060000>\r\n"
    b"Call-ID: 2084736615\r\n"
    b"CSeq: 20 MESSAGE\r\n"
    b"Content-Type: Application/MANSCDP+xml\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 9\r\n"
    b"\r\n"
    b"<Notify/>"
)


class App:
    def __init__(self) -> None:
        self.endpoint: SipEndpoint | None = None
        self.requests: list[tuple[Request, Peer]] = []
        self.acks: list[Request] = []
        self.strays: list[Response] = []
        self.closed: list[Peer] = []
        self.status = 200

    def on_request(self, request: Request, peer: Peer, key: Hashable) -> None:
        self.requests.append((request, peer))
        assert self.endpoint is not None
        self.endpoint.respond(key, make_response(request, self.status))

    def on_ack(self, request: Request, peer: Peer) -> None:
        self.acks.append(request)

    def on_stray_response(self, response: Response, peer: Peer) -> None:
        self.strays.append(response)

    def on_connection_closed(self, peer: Peer) -> None:
        self.closed.append(peer)


@pytest.fixture
async def server():
    app = App()
    ep = await SipEndpoint.start("127.0.0.1", 0, app)
    app.endpoint = ep
    yield app, ep
    await ep.stop()


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)


async def udp_client(port: int) -> tuple[asyncio.DatagramTransport, UdpClient]:
    loop = asyncio.get_running_loop()
    t, p = await loop.create_datagram_endpoint(UdpClient, remote_addr=("127.0.0.1", port))
    return t, p


async def test_udp_request_answered_and_retransmission_absorbed(server) -> None:
    app, ep = server
    t, c = await udp_client(ep.udp_port)
    try:
        t.sendto(KEEPALIVE)
        first = await asyncio.wait_for(c.queue.get(), 2)
        t.sendto(KEEPALIVE)  # retransmission: same branch
        second = await asyncio.wait_for(c.queue.get(), 2)
    finally:
        t.close()
    resp = parse_message(first)
    assert isinstance(resp, Response) and resp.status == 200
    assert resp.to.tag  # gb28181 §2.2: always a To tag
    local_port = app.requests[0][1].port
    assert resp.top_via.received == "127.0.0.1" and resp.top_via.rport == local_port
    assert second == first  # cached response, byte for byte
    assert len(app.requests) == 1  # the body was processed once
    assert ep.stats["requests:MESSAGE"] == 2
    assert ep.transactions.stats["retransmissions_absorbed"] == 1


async def test_garbage_with_via_gets_400(server) -> None:
    app, ep = server
    bad = KEEPALIVE.replace(b"Call-ID: 2084736615\r\n", b"")
    t, c = await udp_client(ep.udp_port)
    try:
        t.sendto(bad)
        data = await asyncio.wait_for(c.queue.get(), 2)
        t.sendto(b"\x00\x01garbage without any via\r\n\r\n")
        await asyncio.sleep(0.1)
        assert c.queue.empty()
    finally:
        t.close()
    assert data.startswith(b"SIP/2.0 400 Missing Call-ID\r\n")
    resp = parse_message(data.replace(b"Content-Length", b"Call-ID: x\r\nContent-Length"))
    assert isinstance(resp, Response) and resp.to.tag and resp.top_via.received == "127.0.0.1"
    assert ep.stats["parse_error:Missing Call-ID"] == 1
    assert ep.stats["parse_error_dropped"] == 1
    assert app.requests == []


async def test_tcp_split_chunks_and_pings(server) -> None:
    app, ep = server
    reader, writer = await asyncio.open_connection("127.0.0.1", ep.tcp_port)
    try:
        stream = b"\r\n\r\n" + KEEPALIVE.replace(b"z9hG4bK33", b"z9hG4bK44") + KEEPALIVE
        for i in range(0, len(stream), 7):
            writer.write(stream[i : i + 7])
            await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"  # pong
        got = []
        for _ in range(2):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            got.append(parse_message(head))
    finally:
        writer.close()
    assert [r.status for r in got] == [200, 200]
    assert len(app.requests) == 2 and app.requests[0][1].transport == "tcp"
    assert app.requests[0][1].conn_id is not None


async def test_oversized_tcp_message_closes_connection() -> None:
    app = App()
    ep = await SipEndpoint.start("127.0.0.1", 0, app, max_message=2048)
    app.endpoint = ep
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.tcp_port)
        writer.write(KEEPALIVE.replace(b"Content-Length: 9", b"Content-Length: 999999"))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the server
        writer.close()
        await asyncio.sleep(0.05)
        assert ep.stats["tcp_closed_oversize"] == 1
        assert len(app.closed) == 1
        assert app.requests == []
    finally:
        await ep.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_client_request_against_second_endpoint(server, transport: str) -> None:
    app, ep = server
    client_app = App()
    client = await SipEndpoint.start("127.0.0.1", 0, client_app)
    client_app.endpoint = client
    try:
        h = Headers([
            ("From", "<sip:44010600002000000001@4401060000>;tag=abc"),
            ("To", "<sip:44010600001320000101@4401060000>"),
            ("Call-ID", "c1@127.0.0.1"),
            ("CSeq", "1 MESSAGE"),
            ("Content-Type", "Application/MANSCDP+xml"),
        ])
        port = ep.udp_port if transport == "udp" else ep.tcp_port
        req = Request("MESSAGE", "sip:44010600001320000101@127.0.0.1", h, b"<Query/>")
        resp = await client.request(req, Peer(transport, "127.0.0.1", port), timeout=3)
        assert resp.status == 200 and resp.call_id == "c1@127.0.0.1"
        assert app.requests[0][0].body == b"<Query/>"
        app.status = 486
        h2 = Headers([(n, v) for n, v in h.items() if n != "Via"])
        h2.set("CSeq", "2 MESSAGE")
        resp2 = await client.request(Request("MESSAGE", req.uri, h2), Peer(transport, "127.0.0.1", port))
        assert resp2.status == 486
    finally:
        await client.stop()


async def test_client_timeout_against_silent_peer() -> None:
    app = App()
    client = await SipEndpoint.start("127.0.0.1", 0, app, t1=0.01)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        h = Headers([("From", "<sip:a@b>;tag=1"), ("To", "<sip:c@d>"), ("Call-ID", "x"), ("CSeq", "1 OPTIONS")])
        with pytest.raises(SipTimeout):
            await client.request(Request("OPTIONS", "sip:c@d", h), Peer("udp", "127.0.0.1", silent.getsockname()[1]))
        assert client.stats["client_timeouts"] == 1
    finally:
        silent.close()
        await client.stop()


# -- the fast path hook (gateway/sip/fastpath.py): answered without a transaction, or handed back --

PLAIN = (
    b"MESSAGE sip:44010600002000000001@4401060000 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKfast1\r\n"
    b"From: <sip:44010600001320000101@4401060000>;tag=1739004528\r\n"
    b"To: <sip:44010600002000000001@4401060000>\r\nCall-ID: fast1\r\nCSeq: 20 MESSAGE\r\n"
    b"Content-Length: 9\r\n\r\n<Notify/>"
)


async def test_fast_path_answers_declines_and_ignores(server) -> None:
    """A fast handler's answer is sent as is (no transaction, counted like the full path's); a
    declined request takes the full path; an ignored one (flood) leaves the unanswered transaction
    the full path would, so its retransmission is absorbed instead of offered again."""
    from gateway.sip import fastpath

    app, ep = server
    mode = ["answer"]
    offered: list[str] = []

    def fast(s: fastpath.Scan, peer: Peer) -> fastpath.FastAnswer | None:
        offered.append(s.headers["Call-ID"])
        if mode[0] == "answer":
            return fastpath.FastAnswer(200, fastpath.respond(s, 200, (peer.host, peer.port), to_tag="f"))
        return None if mode[0] == "decline" else fastpath.FastAnswer(None)

    ep.fast_path = fast
    t, c = await udp_client(ep.udp_port)
    try:
        t.sendto(PLAIN)
        answer = await asyncio.wait_for(c.queue.get(), 2)
        assert answer.startswith(b"SIP/2.0 200 OK\r\n") and b";tag=f\r\n" in answer
        assert not app.requests and len(ep.transactions) == 0
        assert ep.stats["requests:MESSAGE"] == 1 and ep.stats["responses_sent:200"] == 1

        mode[0] = "decline"
        t.sendto(PLAIN.replace(b"fast1", b"fast2"))
        answer = await asyncio.wait_for(c.queue.get(), 2)
        assert answer.startswith(b"SIP/2.0 200 OK\r\n") and len(app.requests) == 1  # the full path's App

        mode[0] = "ignore"
        ignored = PLAIN.replace(b"fast1", b"fast3")
        t.sendto(ignored)
        t.sendto(ignored)  # its retransmission: the held transaction absorbs it
        await asyncio.sleep(0.2)
        assert c.queue.empty() and offered.count("fast3") == 1 and len(app.requests) == 1
        assert ep.transactions.stats["retransmissions_absorbed"] == 1
    finally:
        t.close()
