"""Transaction table and transports for the device swarm (asyncio shell around messages.py).

Client transactions are matched by Via branch. UDP retransmission follows RFC 3261 Timer E
(T1 = 0.5 s, doubling) for at most `MAX_TRIES` sends; instead of one timer per transaction
the table keeps one deque per retransmission level: every entry of a level waits the same
interval, so each deque stays sorted by deadline and a 20 ms tick only looks at its heads.
That keeps 20,000 devices' worth of pending requests cheap.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

T1 = 0.5
MAX_TRIES = 4
TCP_TIMEOUT = 8.0
TICK = 0.02

Callback = Callable[[int, bytes | None], None]  # (status or 0 on timeout, response bytes)


class Tx:
    """One pending client transaction."""

    __slots__ = ("branch", "callback", "data", "done", "send", "t0", "tries")

    def __init__(self, branch: str, data: bytes, send: Callable[[bytes], None], callback: Callback, t0: float):
        self.branch = branch
        self.data = data
        self.send = send
        self.callback = callback
        self.t0 = t0
        self.tries = 1
        self.done = False


class TxTable:
    """Pending client transactions with level-deque retransmission (see module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[str, Tx] = {}
        self._levels: list[deque[tuple[float, Tx]]] = [deque() for _ in range(MAX_TRIES)]
        self._tcp: deque[tuple[float, Tx]] = deque()
        self.retransmissions = 0
        self.timeouts = 0
        self.strays = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self.loop.create_task(self._ticker())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for tx in list(self.pending.values()):
            tx.done = True
        self.pending.clear()

    def send(self, branch: str, data: bytes, send: Callable[[bytes], None], callback: Callback,
             *, reliable: bool = False) -> Tx:
        now = self.loop.time()
        tx = Tx(branch, data, send, callback, now)
        self.pending[branch] = tx
        send(data)
        if reliable:
            self._tcp.append((now + TCP_TIMEOUT, tx))
        else:
            self._levels[0].append((now + T1, tx))
        return tx

    def complete(self, branch: str, status: int, data: bytes) -> bool:
        """A final response arrived; False if nobody waits for it (a retransmitted response)."""
        tx = self.pending.pop(branch, None)
        if tx is None:
            self.strays += 1
            return False
        tx.done = True
        tx.callback(status, data)
        return True

    def _timeout(self, tx: Tx) -> None:
        if self.pending.pop(tx.branch, None) is not None:
            tx.done = True
            self.timeouts += 1
            tx.callback(0, None)

    def poll(self, now: float) -> None:
        levels = self._levels
        for i in range(MAX_TRIES - 1, -1, -1):  # highest level first: an entry moves up only once per poll
            q = levels[i]
            while q and q[0][0] <= now:
                _, tx = q.popleft()
                if tx.done:
                    continue
                if i == MAX_TRIES - 1:
                    self._timeout(tx)
                    continue
                tx.tries += 1
                self.retransmissions += 1
                try:
                    tx.send(tx.data)
                except Exception:  # a closed transport: let the timeout report it
                    pass
                interval = T1 * (2 ** (i + 1))
                levels[i + 1].append((now + interval, tx))
        q = self._tcp
        while q and q[0][0] <= now:
            _, tx = q.popleft()
            if not tx.done:
                self._timeout(tx)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.poll(self.loop.time())


class UdpEndpoint(asyncio.DatagramProtocol):
    """One UDP socket of the swarm; hands every datagram to `on_data(data, addr, reply)`."""

    def __init__(self, on_data: Callable[[bytes, Any, Callable[[bytes], None]], None]) -> None:
        self.on_data = on_data
        self.transport: asyncio.DatagramTransport | None = None
        self.errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        tr = self.transport
        assert tr is not None
        self.on_data(data, addr, lambda b: tr.sendto(b, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors += 1


async def open_udp(loop: asyncio.AbstractEventLoop, host: str, port: int, on_data: Any,
                   rcvbuf: int) -> tuple[asyncio.DatagramTransport, UdpEndpoint]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
        except OSError:
            pass
    sock.bind((host, port))
    sock.setblocking(False)
    tr, proto = await loop.create_datagram_endpoint(lambda: UdpEndpoint(on_data), sock=sock)
    return tr, proto


_CL = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I | re.M)


class SipStreamProtocol(asyncio.Protocol):
    """SIP over TCP for one device: Content-Length framing (RFC 3261 §18.3), CRLF keep-alives skipped."""

    MAX_BUFFER = 1 << 20

    def __init__(self, on_data: Any, on_lost: Callable[[], None] | None = None) -> None:
        self.on_data = on_data
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self.local: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.local = transport.get_extra_info("sockname")[:2]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while buf:
            while buf[:2] == b"\r\n":
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.MAX_BUFFER and self.transport is not None:
                    self.transport.close()
                return
            m = _CL.search(bytes(buf[:end]))
            total = end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) < total:
                return
            msg = bytes(buf[:total])
            del buf[:total]
            self.on_data(msg, None, self.write)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.on_lost is not None:
            self.on_lost()
