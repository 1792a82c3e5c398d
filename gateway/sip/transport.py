"""asyncio shell around the sans-IO SIP core: UDP + TCP (+ TLS) sockets, one timer (house rule 1).

The only module of gateway.sip that imports asyncio. It moves bytes between sockets and the
TransactionLayer, calls the application, and re-arms a single timer from next_timer().
Whatever a peer sends, nothing raises out of a protocol callback: malformed input is
counted (`stats["parse_error:<reason>"]`), answered "400 <reason>" statelessly when a Via
can be recovered from the raw bytes (RFC 3261 §8.2.2, §18.2.1; RFC 3581), else dropped.

SIP over TLS (RFC 3261 §26.2.1; GB 35114 class A approximated with X.509 client certificates)
is framed exactly like TCP. The TLS port is served by our own accept loop, each socket handed to
loop.connect_accepted_socket(ssl=...) rather than create_server(ssl=...): only then does a failed
or stalled handshake reach us, to be counted (`tls_handshake_failed`, `tls_handshake_error:<reason>`)
instead of vanishing into the loop. (An earlier start_tls() on an accepted plain transport lost
ClientHellos on uvloop, which ignores pause_reading() inside connection_made.) The client
certificate's SHA-256 (DER) is kept per connection for the whitelist's pin.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
import ssl
import sys
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Protocol, cast

from gateway.tasks import TaskSet

from .errors import MessageTooLarge, SipError, SipParseError, SipTimeout, TransactionError
from .events import (
    AckReceived,
    Event,
    Peer,
    RequestReceived,
    ResponseReceived,
    Send,
    StrayResponse,
    TransactionTimeout,
)
from .fastpath import FastAnswer, Scan, scan
from .framer import Ping, StreamFramer, parse_datagram
from .message import (
    KNOWN_METHODS,
    Request,
    Response,
    make_response,
    new_branch,
    new_tag,
    parse_message,
    serialize,
    with_received,
)
from .transaction import TransactionLayer

log = logging.getLogger("gateway.sip")

_MAX_WRITE_BUFFER = 4 * 1024 * 1024  # a peer that stops reading this much is dropped
_TLS_BACKLOG = 1024
_MAX_TLS_HANDSHAKES = 1024  # concurrent handshakes in progress; more are refused (slowloris)
_TLS_SHUTDOWN_TIMEOUT = 2.0  # close_notify wait on close; a silent peer must not pin a socket
_PEER_CACHE = 65536  # UDP source addresses whose Peer is kept (more than the devices of a node)


class SipApplication(Protocol):
    def on_request(self, request: Request, peer: Peer, key: Hashable) -> None: ...
    def on_ack(self, request: Request, peer: Peer) -> None: ...
    def on_stray_response(self, response: Response, peer: Peer) -> None: ...
    def on_connection_closed(self, peer: Peer) -> None: ...


class SipEndpoint:
    """One SIP listening point (UDP, TCP and optionally TLS on one host) with its transaction layer."""

    def __init__(self, app: SipApplication, *, max_message: int, t1: float, t2: float, t4: float,
                 advertise: str) -> None:
        self.app = app
        self.max_message = max_message
        self.transactions = TransactionLayer(t1=t1, t2=t2, t4=t4)
        self.stats: Counter[str] = Counter()
        self.advertise = advertise
        self.udp_port = 0
        self.tcp_port = 0
        self.udp_rcvbuf = 0
        self._loop = asyncio.get_running_loop()
        self._udp: asyncio.DatagramTransport | None = None
        self.udp_socket: socket.socket | None = None
        #: Sees every UDP datagram first; True means it took it (a SIP worker forwarding to main).
        self.datagram_hook: Callable[[bytes, Peer], bool] | None = None
        self._server: asyncio.Server | None = None
        self._tls_listener: socket.socket | None = None
        self._tls_accepting: asyncio.Task[None] | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._tls_port: int | None = None
        self.tls_handshake_timeout = 10.0
        self._handshakes = TaskSet("sip-tls-handshake", logger=log)  # counted against _MAX_TLS_HANDSHAKES
        self._conns: dict[int, _TcpConnection] = {}
        self._by_addr: dict[tuple[str, str, int], int] = {}  # (transport, host, port) -> conn_id
        self._next_conn = 0
        self._pending: dict[Hashable, tuple[asyncio.Future[Response], Peer]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._tasks = TaskSet("sip-connect", logger=log)  # outbound TCP/TLS connects carrying a message
        #: Offered every plain request first (router.on_fast; gateway/sip/fastpath.py); None: off.
        self.fast_path: Callable[[Scan, Peer], FastAnswer | None] | None = None
        #: Offer REGISTERs with credentials to `fast_path` too (logins and refreshes answered from
        #: the scan: adapters/gb_device/scanned.py).
        self.fast_credentials = False
        #: Sends UDP datagrams in place of the transport's sendto (a SIP worker's SendBatch).
        self.udp_sendto: Callable[[bytes, tuple[str, int]], None] | None = None

    # ------------------------------------------------------------ lifecycle
    @classmethod
    async def start(
        cls, host: str, port: int, app: SipApplication, *, rcvbuf: int = 8 * 1024 * 1024,
        sndbuf: int = 4 * 1024 * 1024, max_message: int = 65536, t1: float = 0.5, t2: float = 4.0,
        t4: float = 5.0, tcp: bool = True, advertise: str | None = None,
        tls_port: int | None = None, tls_context: ssl.SSLContext | None = None,
        tls_handshake_timeout: float = 10.0, reuseport: bool = False,
    ) -> SipEndpoint:
        """Bind UDP (and TCP) on host:port; port 0 picks free ports (UDP and TCP may differ).

        `advertise` is the address put in our own Via headers (defaults to `host`, or
        127.0.0.1 when binding a wildcard address). With `tls_port` (0 = any free port) and a
        server-side `tls_context`, SIP over TLS is also served on host:tls_port; a handshake
        not finished within `tls_handshake_timeout` seconds is aborted. `reuseport`: the UDP socket
        shares its port with other processes' (SO_REUSEPORT; the SIP workers, gateway/app/sip_workers.py)."""
        if tls_port is not None and tls_context is None:
            raise SipError("tls_port given without a tls_context")
        if advertise is None:
            advertise = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self = cls(app, max_message=max_message, t1=t1, t2=t2, t4=t4, advertise=advertise)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.udp_rcvbuf = _raise_buffer(sock, socket.SO_RCVBUF, rcvbuf)
            _raise_buffer(sock, socket.SO_SNDBUF, sndbuf)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._udp, _ = await self._loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=sock)
        self.udp_port = sock.getsockname()[1]
        self.udp_socket = sock
        try:
            if tcp:
                tsock = None
                for p in dict.fromkeys((port or self.udp_port, 0)):
                    try:
                        tsock = _stream_socket(family, host, p)
                        break
                    except OSError:
                        if port:
                            raise
                assert tsock is not None
                self._server = await self._loop.create_server(lambda: _TcpConnection(self), sock=tsock)
                self.tcp_port = tsock.getsockname()[1]
            if tls_port is not None and tls_context is not None:
                self._tls_context = tls_context
                self.tls_handshake_timeout = tls_handshake_timeout
                lsock = _stream_socket(family, host, tls_port)
                lsock.listen(_TLS_BACKLOG)
                lsock.setblocking(False)
                self._tls_listener = lsock
                self._tls_port = lsock.getsockname()[1]
                self._tls_accepting = self._loop.create_task(self._tls_accept_loop(lsock), name="sip-tls-accept")
        except BaseException:
            await self.stop()
            raise
        return self

    @property
    def serving(self) -> bool:
        """The UDP socket is open (between start() and stop()), for the node's /healthz."""
        return self._udp is not None and not self._udp.is_closing()

    @property
    def udp_transport(self) -> asyncio.DatagramTransport | None:
        """The UDP transport (None before start): a `udp_sendto` falls back to it."""
        return self._udp

    @property
    def tls_port(self) -> int | None:
        """The bound TLS port, or None when TLS is off."""
        return self._tls_port

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut, _ in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(SipError("endpoint stopped"))
        self._pending.clear()
        servers = [s for s in (self._server,) if s is not None]
        for server in servers:
            server.close()
        if self._tls_accepting is not None:
            self._tls_accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tls_accepting
            self._tls_accepting = None
        if self._tls_listener is not None:
            self._tls_listener.close()
            self._tls_listener = None
        for conn in list(self._conns.values()):
            conn.close()
        for handshake in self._handshakes:
            handshake.cancel()
        if self._udp is not None:
            self._udp.close()
        for t in self._tasks:
            t.cancel()
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    # ------------------------------------------------------------ public API
    def respond(self, key: Hashable, response: Response, *, stateless: bool = False) -> None:
        """Answer server transaction `key` (To tag and received/rport are added if missing);
        `stateless`: see TransactionLayer.respond."""
        self._final(key, response.status,
                    lambda now: self.transactions.respond(key, response, now, stateless=stateless))

    def respond_raw(self, key: Hashable, data: bytes, status: int) -> None:
        """Answer server transaction `key`, held by the fast path (`FastAnswer(None)`), with the
        final response `data` (wire bytes, status `status`), kept for Timer J as `respond` keeps it."""
        self._final(key, status, lambda now: self.transactions.answer(key, data, now))

    def _final(self, key: Hashable, status: int, answer: Callable[[float], list[Event]]) -> None:
        """Run `answer` (the transaction layer's respond/answer) now; a transaction that is gone
        or already answered is counted, not raised."""
        try:
            events = answer(self._loop.time())
        except TransactionError as e:
            self.stats["respond_failed"] += 1
            log.debug("answer to %r failed: %s", key, e)
            return
        self.stats[f"responses_sent:{status}"] += 1
        self._handle(events)
        self._rearm()

    async def request(self, request: Request, peer: Peer, *, timeout: float | None = None) -> Response:
        """Send `request` in a client transaction and return its final response.

        Provisional responses are skipped. A missing top Via (with a fresh branch) and
        Max-Forwards are added. For INVITE the 2xx is returned and the caller sends the ACK
        with send_stateless(). Raises SipTimeout (Timer B/F, `timeout`, or connection loss)."""
        if peer.reliable:
            peer = await self._connection_for(peer)
        self._complete(request, peer)
        key, events = self.transactions.send_request(request, peer, self._loop.time())
        fut: asyncio.Future[Response] = self._loop.create_future()
        self._pending[key] = (fut, peer)
        self.stats[f"requests_sent:{request.method}"] += 1
        self._handle(events)
        self._rearm()
        try:
            if timeout is None:
                return await fut
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise SipTimeout(f"{request.method} to {peer.host}:{peer.port}: no final response") from None
        finally:
            self._pending.pop(key, None)

    def send_stateless(self, msg: Request | Response, peer: Peer) -> None:
        """Send without a transaction (the ACK for a 2xx, RFC 3261 §13.2.2.4; direct sends)."""
        if isinstance(msg, Request):
            self._complete(msg, peer)
        self._send(serialize(msg), peer)

    def send_raw(self, data: bytes, peer: Peer) -> None:
        """Send bytes already built (a fast-path answer, gateway/sip/fastpath.py) without a transaction."""
        self._send(data, peer)

    def peer_fingerprint(self, peer: Peer) -> str | None:
        """SHA-256 hex (DER) of the client certificate on `peer`'s TLS connection.

        None for UDP/TCP peers, a TLS client that presented no certificate, or a connection
        that is gone. This is the value a whitelist entry pins (certs.fingerprint form)."""
        if peer.transport != "tls":
            return None
        conn = self._conn_for(peer)
        return conn.fingerprint if conn is not None and conn.peer.transport == "tls" else None

    def via_for(self, peer: Peer) -> str:
        """A fresh top Via value for a request we originate to `peer`."""
        port = {"udp": self.udp_port, "tls": self._tls_port or 0}.get(peer.transport, self.tcp_port)
        host = f"[{self.advertise}]" if ":" in self.advertise else self.advertise
        return f"SIP/2.0/{peer.transport.upper()} {host}:{port};rport;branch={new_branch()}"

    # ------------------------------------------------------------ internals
    def _complete(self, request: Request, peer: Peer) -> None:
        h = request.headers
        if "Via" not in h:
            h.prepend("Via", self.via_for(peer))
        if "Max-Forwards" not in h:
            h.add("Max-Forwards", "70")

    def feed_datagram(self, data: bytes, peer: Peer) -> None:
        """A UDP datagram received on our port by another process (a SIP worker forwarding it):
        handled as if it had arrived on our own socket."""
        self._on_bytes(data, peer, True)

    def receive_message(self, msg: Request | Response, peer: Peer, data: bytes) -> None:
        """A message a `datagram_hook` already parsed from `data` enters the transaction layer
        as if `_on_bytes` had parsed it. Never raises."""
        self._on_message(msg, peer, data)

    def _on_bytes(self, data: bytes, peer: Peer, datagram: bool) -> None:
        """One datagram or one framed stream message from `peer`. Never raises."""
        if self.fast_path is not None and self._fast(self.fast_path, data, peer):
            return
        try:
            msg = parse_datagram(data, max_size=self.max_message) if datagram else parse_message(
                data, max_size=self.max_message)
            if msg is None:
                self.stats["crlf_keepalive"] += 1
                return
        except SipParseError as e:
            self._reject(data, e, peer)
            return
        except Exception:
            self.stats["internal_error"] += 1
            log.debug("error handling message from %s", peer, exc_info=True)
            return
        self._on_message(msg, peer, data)

    def _on_message(self, msg: Request | Response, peer: Peer, data: bytes) -> None:
        try:
            if isinstance(msg, Request):
                self.stats[f"requests:{msg.method if msg.method in KNOWN_METHODS else 'other'}"] += 1
            else:
                self.stats[f"responses:{msg.status}"] += 1
            events = self.transactions.receive(msg, peer, self._loop.time())
        except SipParseError as e:
            self._reject(data, e, peer)
            return
        except Exception:
            self.stats["internal_error"] += 1
            log.debug("error handling message from %s", peer, exc_info=True)
            return
        self._handle(events)
        self._rearm()

    def _fast(self, handler: Callable[[Scan, Peer], FastAnswer | None], data: bytes, peer: Peer) -> bool:
        """A plain request answered without the parser or a transaction (stateless, as the full
        path answers keepalives and challenges); False: take the full path, nothing was changed.
        A retransmission of a request the full path holds a transaction for goes to it."""
        s = scan(data, credentials=self.fast_credentials) if len(data) <= self.max_message else None  # else 513/400
        if s is None or s.server_key in self.transactions:
            return False
        try:
            answer = handler(s, peer)
        except Exception:
            self.stats["app_error"] += 1
            log.debug("fast path raised", exc_info=True)
            return True
        if answer is None:
            return False
        self.stats[f"requests:{s.method}"] += 1
        if answer.status is None:
            # ignored (flood guard), or answered later (`respond_raw`): hold the unanswered
            # transaction the full path would hold, so retransmissions are absorbed by it and not
            # judged again
            self.transactions.hold(s.server_key, peer, self._loop.time())
            self._rearm()
            return True
        self.stats[f"responses_sent:{answer.status}"] += 1
        if answer.keep:
            self.transactions.answered(s.server_key, peer, answer.data, self._loop.time())
            self._rearm()
        else:
            self.transactions.stats["server_transactions"] += 1
            self.transactions.stats["stateless_responses"] += 1
        self._send(answer.data, peer)
        return True

    def _reject(self, data: bytes, err: SipParseError, peer: Peer) -> None:
        self.stats[f"parse_error:{err.reason}"] += 1
        log.debug("bad message from %s:%s: %s", peer.host, peer.port, err.reason)
        try:
            out = stateless_error(data, err, (peer.host, peer.port))
        except Exception:
            out = None
        if out is None:
            self.stats["parse_error_dropped"] += 1
            return
        self._send(out, peer)

    def _handle(self, events: list[Event]) -> None:
        for ev in events:
            try:
                if isinstance(ev, Send):
                    self._send(ev.data, ev.peer)
                elif isinstance(ev, RequestReceived):
                    self._deliver_request(ev)
                elif isinstance(ev, ResponseReceived):
                    self._deliver_response(ev)
                elif isinstance(ev, AckReceived):
                    self.app.on_ack(ev.request, ev.peer)
                elif isinstance(ev, StrayResponse):
                    self.app.on_stray_response(ev.response, ev.peer)
                elif isinstance(ev, TransactionTimeout):
                    self._deliver_timeout(ev)
            except Exception:
                self.stats["app_error"] += 1
                log.debug("application raised on %r", type(ev).__name__, exc_info=True)

    def _deliver_request(self, ev: RequestReceived) -> None:
        try:
            self.app.on_request(ev.request, ev.peer, ev.key)
        except Exception as e:
            self.stats["app_error"] += 1
            log.debug("on_request raised", exc_info=True)
            if not self.transactions.has_final(ev.key):
                if isinstance(e, SipParseError):  # the app touched a malformed header
                    self.respond(ev.key, make_response(ev.request, e.status, e.reason))
                else:
                    self.respond(ev.key, make_response(ev.request, 500))

    def _deliver_response(self, ev: ResponseReceived) -> None:
        pending = self._pending.get(ev.key)
        if pending is not None:
            if ev.final and not pending[0].done():
                pending[0].set_result(ev.response)
        elif ev.final and ev.peer is not None:
            self.app.on_stray_response(ev.response, ev.peer)  # e.g. a retransmitted 2xx: re-ACK

    def _deliver_timeout(self, ev: TransactionTimeout) -> None:
        self.stats["server_ack_timeouts" if ev.server else "client_timeouts"] += 1
        pending = self._pending.get(ev.key)
        if pending is not None and not pending[0].done():
            pending[0].set_exception(SipTimeout("no final response (Timer B/F)"))

    def count_send_error(self) -> None:
        """A datagram the socket refused; also called by `udp_sendto` hooks (SendBatch)."""
        self.stats["send_error"] += 1

    def _send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "udp":
            if self._udp is None or self._udp.is_closing():
                return
            try:
                (self.udp_sendto or self._udp.sendto)(data, (peer.host, peer.port))
            except OSError:
                self.count_send_error()
            return
        conn = self._conn_for(peer)
        if conn is not None:
            conn.write(data)
            return
        self._tasks.spawn(self._connect_and_send(peer, data))

    async def _connect_and_send(self, peer: Peer, data: bytes) -> None:
        try:
            p = await self._connection_for(peer)
        except SipError:
            self.stats[f"{peer.transport}_connect_failed"] += 1
            return
        conn = self._conns.get(p.conn_id) if p.conn_id is not None else None
        if conn is not None:
            conn.write(data)

    def _conn_for(self, peer: Peer) -> _TcpConnection | None:
        if peer.conn_id is not None:
            return self._conns.get(peer.conn_id)
        cid = self._by_addr.get((peer.transport, peer.host, peer.port))
        return self._conns.get(cid) if cid is not None else None

    async def _connection_for(self, peer: Peer) -> Peer:
        """A Peer pinned to a live connection to `peer`, connecting if there is none.

        TLS peers are only reached over the connection they opened (devices dial us; we hold
        no client certificate to dial them)."""
        conn = self._conn_for(peer)
        if conn is None and peer.conn_id is not None:
            conn = self._conns.get(self._by_addr.get((peer.transport, peer.host, peer.port), -1))
        if conn is not None:
            return conn.peer
        if peer.transport != "tcp":
            raise SipError(f"no {peer.transport} connection to {peer.host}:{peer.port}")
        try:
            _, proto = await self._loop.create_connection(lambda: _TcpConnection(self), peer.host, peer.port)
        except OSError as e:
            raise SipTimeout(f"cannot connect to {peer.host}:{peer.port}: {e}") from None
        return proto.peer

    def _register(self, conn: _TcpConnection, host: str, port: int) -> Peer:
        self._next_conn += 1
        cid = self._next_conn
        self._conns[cid] = conn
        self._by_addr[(conn.kind, host, port)] = cid
        self.stats[f"{conn.kind}_connections"] += 1
        return Peer(conn.kind, host, port, cid)

    def _unregister(self, conn: _TcpConnection) -> None:
        peer = conn.peer
        if peer.conn_id is None or self._conns.pop(peer.conn_id, None) is None:
            return
        addr = (peer.transport, peer.host, peer.port)
        if self._by_addr.get(addr) == peer.conn_id:
            del self._by_addr[addr]
        events = self.transactions.connection_lost(peer.conn_id, self._loop.time())
        self._handle(events)
        try:
            self.app.on_connection_closed(peer)
        except Exception:
            self.stats["app_error"] += 1
            log.debug("on_connection_closed raised", exc_info=True)

    async def _tls_accept_loop(self, lsock: socket.socket) -> None:
        """Accept on the TLS port for the endpoint's life; an accept error never ends the loop."""
        while True:
            try:
                sock, _addr = await self._loop.sock_accept(lsock)
            except asyncio.CancelledError:
                raise
            except OSError:  # EMFILE and friends: count, back off a little, keep serving
                self.stats["tls_accept_error"] += 1
                await asyncio.sleep(0.05)
                continue
            self._accept_tls(sock)

    def _accept_tls(self, sock: socket.socket) -> None:
        """A TCP connection reached the TLS port: run its handshake in a task (never raises)."""
        if len(self._handshakes) >= _MAX_TLS_HANDSHAKES:
            self._tls_failed("busy")
            sock.close()
            return
        self._handshakes.spawn(self._tls_handshake(sock))

    async def _tls_handshake(self, sock: socket.socket) -> None:
        assert self._tls_context is not None
        conn = _TcpConnection(self, "tls")
        try:
            await self._loop.connect_accepted_socket(
                lambda: conn, sock, ssl=self._tls_context,
                ssl_handshake_timeout=self.tls_handshake_timeout, ssl_shutdown_timeout=_TLS_SHUTDOWN_TIMEOUT)
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception as e:  # peer garbage never kills the server (house rule 8)
            self._tls_failed(_tls_reason(e))
            with contextlib.suppress(OSError):
                log.debug("TLS handshake failed from %s: %r", sock.getpeername(), e)
            sock.close()
            return
        self.stats["tls_handshake_ok"] += 1  # conn.connection_made ran when the handshake completed

    def _tls_failed(self, reason: str) -> None:
        self.stats["tls_handshake_failed"] += 1
        self.stats[f"tls_handshake_error:{reason}"] += 1

    def _rearm(self) -> None:
        nt = self.transactions.next_timer()
        if nt is None or (self._timer is not None and self._timer_at <= nt):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = nt
        self._timer = self._loop.call_at(nt, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            # asyncio may fire up to one clock tick early; never let that become a busy loop.
            events = self.transactions.handle_timer(max(self._loop.time(), self._timer_at))
            self._handle(events)
        except Exception:
            self.stats["internal_error"] += 1
            log.debug("timer handling failed", exc_info=True)
        self._rearm()


def _stream_socket(family: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _tls_reason(exc: BaseException) -> str:
    """A short, label-safe reason for a failed handshake (OpenSSL's reason code when there is one)."""
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
    elif isinstance(exc, (TimeoutError, ConnectionAbortedError)):
        reason = "timeout"  # asyncio aborts a handshake past ssl_handshake_timeout this way
    elif isinstance(exc, ConnectionError):
        reason = "connection_lost"
    else:
        reason = type(exc).__name__
    return re.sub(r"[^a-z0-9_]", "_", str(reason).lower())[:64]


def _raise_buffer(sock: socket.socket, opt: int, size: int) -> int:
    """Raise a socket buffer; try the privileged FORCE variant first (ignores rmem_max)."""
    # Python's socket module does not export the FORCE options: Linux's values (asm-generic/socket.h)
    linux = sys.platform.startswith("linux")
    force = {socket.SO_RCVBUF: getattr(socket, "SO_RCVBUFFORCE", 33 if linux else None),
             socket.SO_SNDBUF: getattr(socket, "SO_SNDBUFFORCE", 32 if linux else None)}[opt]
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return int(sock.getsockopt(socket.SOL_SOCKET, opt))
        except OSError:
            pass
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, opt, size)
    return int(sock.getsockopt(socket.SOL_SOCKET, opt))


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        # A device sends from the same address all day: its Peer (a frozen dataclass, ~2 µs to
        # build) is reused. Bounded; forgotten all at once when full (a spoofed-source flood only
        # costs the rebuilds).
        self._peers: dict[tuple[str | int, ...], Peer] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        peer = self._peers.get(addr)
        if peer is None:
            if len(self._peers) >= _PEER_CACHE:
                self._peers.clear()
            peer = self._peers[addr] = Peer("udp", str(addr[0]), int(addr[1]))
        hook = self.endpoint.datagram_hook
        if hook is not None and hook(data, peer):
            return
        self.endpoint._on_bytes(data, peer, True)

    def error_received(self, exc: Exception) -> None:
        self.endpoint.stats["udp_error"] += 1  # ICMP port unreachable and the like


class _TcpConnection(asyncio.Protocol):
    """One stream connection ("tcp", or "tls" above an SSL transport), framed by StreamFramer."""

    def __init__(self, endpoint: SipEndpoint, kind: str = "tcp") -> None:
        self.endpoint = endpoint
        self.kind = kind
        self.framer = StreamFramer(endpoint.max_message)
        self.transport: asyncio.Transport | None = None
        self.peer = Peer(kind, "", 0, None)
        self.fingerprint: str | None = None
        # Defensive: bytes delivered before connection_made (a loop's TLS layer may read right
        # after the handshake) are kept and replayed in order, never dropped.
        self._early: list[bytes] = []
        self._lost = False

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop's transports are not asyncio.Transport subclasses
        if self._lost:
            return
        self.transport = transport
        if self.kind == "tls":
            sslobj = transport.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
            self.fingerprint = hashlib.sha256(der).hexdigest() if der else None
        addr = transport.get_extra_info("peername") or ("", 0)
        self.peer = self.endpoint._register(self, str(addr[0]), int(addr[1]))
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            self._early.append(data)
            return
        ep = self.endpoint
        try:
            events = self.framer.feed(data)
        except SipParseError as e:
            ep.stats[f"{self.kind}_closed_oversize" if isinstance(e, MessageTooLarge)
                     else f"{self.kind}_closed_framing"] += 1
            ep.stats[f"parse_error:{e.reason}"] += 1
            self.close()
            return
        for ev in events:
            if isinstance(ev, Ping):
                self.write(b"\r\n")  # RFC 5626 §4.4.1 pong
            else:
                ep._on_bytes(ev.data, self.peer, False)

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(data)
        if t.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            self.endpoint.stats[f"{self.kind}_closed_slow_reader"] += 1
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.endpoint._unregister(self)


# --------------------------------------------------------------------- stateless errors
_RAW_HEADER = {
    name: re.compile(rb"^(?:" + pat + rb")[ \t]*:[ \t]*([^\r\n]*)", re.M | re.I)
    for name, pat in (("Via", rb"via|v"), ("From", rb"from|f"), ("To", rb"to|t"),
                      ("Call-ID", rb"call-id|i"), ("CSeq", rb"cseq"))
}


def stateless_error(data: bytes, err: SipParseError, source: tuple[str, int]) -> bytes | None:
    """Best-effort "400 <reason>" for bytes that did not parse, or None to drop.

    Needs a recoverable Via; never answers a response or an ACK (RFC 3261 §17.1.1.3)."""
    first = data.lstrip(b"\r\n")[:16].upper()
    if first.startswith(b"SIP/") or first.startswith(b"ACK "):
        return None
    found: dict[str, str] = {}
    for name, rx in _RAW_HEADER.items():
        m = rx.search(data, 0, data.find(b"\r\n\r\n") if b"\r\n\r\n" in data else len(data))
        if m is not None:
            found[name] = m.group(1).decode("utf-8", "replace").strip()
    via = found.get("Via")
    if not via:
        return None
    try:
        via = with_received(via.split(",")[0], source)
    except SipParseError:
        via = via.split(",")[0]
    reason = "".join(c for c in err.reason if c.isprintable() and c.isascii())[:100] or "Bad Request"
    lines = [f"SIP/2.0 {err.status} {reason}", f"Via: {via}"]
    for name in ("From", "To", "Call-ID", "CSeq"):
        v = found.get(name)
        if v is None:
            continue
        if name == "To" and ";tag=" not in v.lower().replace(" ", ""):
            v = f"{v};tag={new_tag()}"
        lines.append(f"{name}: {v}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace")
