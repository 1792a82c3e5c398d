"""A SIP worker's UDP answers of one event-loop pass, sent with one `sendmmsg` at its end.

In a storm the loop reads many datagrams per wake-up and answers each; sent one by one, every
answer is a syscall, and on loopback each also wakes the peer mid-pass. Queued here and flushed
by a `call_soon` (the Link's pattern: no timer, nothing waits longer than the pass), the same
bytes go to the same addresses in the same order with one `sendmmsg` (Linux, through ctypes, as
gateway/media/udp_batch.py calls recvmmsg). Where a message cannot go that way — no sendmmsg, an
address that is not plain IPv4 on an IPv4 socket, the socket's buffer full, the transport's own
buffer not empty — it goes through the transport's `sendto` as before, in order. A send error
is counted per datagram (`on_error`), as `SipEndpoint._send` counts it.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import socket
import struct
from collections.abc import Callable
from typing import Any

from gateway.media.udp_batch import IOVEC, MMSGHDR, mmsg_call

Addr = tuple[str, int]
MAX_BATCH = 256
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)
_SOCKADDR_CACHE = 4096


_SENDMMSG = mmsg_call("sendmmsg", ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)


def _buffered(t: asyncio.DatagramTransport) -> int:
    """Bytes the transport holds unsent (asyncio's and uvloop's UDP transports both say)."""
    size = getattr(t, "get_write_buffer_size", None)
    return int(size()) if size is not None else 0


class SendBatch:
    """`sendto(data, addr)` queues; the loop pass's queue leaves in one sendmmsg."""

    __slots__ = ("_armed", "_call", "_fd", "_hdr", "_hdr_at", "_iov", "_iov_at", "_loop", "_names", "_queue",
                 "_transport", "on_error", "sent_batches")

    def __init__(self, sock: socket.socket, transport: asyncio.DatagramTransport,
                 on_error: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._fd = sock.fileno() if sock.family == socket.AF_INET else -1
        self.on_error = on_error
        self._queue: list[tuple[bytes, Addr]] = []
        self._armed = False
        self._names: dict[Addr, tuple[Any, int]] = {}  # addr → (its sockaddr_in buffer, the buffer's address)
        self._hdr = ctypes.create_string_buffer(MMSGHDR.size * MAX_BATCH)
        self._iov = ctypes.create_string_buffer(IOVEC.size * MAX_BATCH)
        self._hdr_at = ctypes.addressof(self._hdr)
        self._iov_at = ctypes.addressof(self._iov)
        self._call: Callable[[int, int, int, int], int] | None = _SENDMMSG
        self.sent_batches = 0  # sendmmsg calls made

    @property
    def batched(self) -> bool:
        """sendmmsg is used (False: each datagram goes to the transport's sendto at once)."""
        return self._call is not None and self._fd >= 0

    def sendto(self, data: bytes, addr: Addr) -> None:
        """As `DatagramTransport.sendto`, at the end of this loop pass."""
        if not self.batched:
            self._send_one(data, addr)
            return
        self._queue.append((data, addr))
        if not self._armed:
            self._armed = True
            self._loop.call_soon(self.flush)

    def _send_one(self, data: bytes, addr: Addr) -> None:
        t = self._transport
        if t.is_closing():
            return
        try:
            t.sendto(data, addr)
        except (OSError, ValueError):  # (uvloop: ValueError for an address of another family)
            self.on_error()

    def _name(self, addr: Addr) -> int:
        """The address of a struct sockaddr_in for `addr` (cached; 0: not a plain IPv4 address)."""
        hit = self._names.get(addr)
        if hit is None:
            try:
                raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", addr[1]) + socket.inet_aton(addr[0])
            except (OSError, struct.error, TypeError, IndexError):
                return 0
            if len(self._names) >= _SOCKADDR_CACHE:
                self._names.clear()
            buf = ctypes.create_string_buffer(raw + b"\0" * 8, 16)
            hit = self._names[addr] = (buf, ctypes.addressof(buf))
        return hit[1]

    def flush(self) -> None:
        """Send what is queued (the `call_soon` armed by the first `sendto` of the pass)."""
        self._armed = False
        queue, self._queue = self._queue, []
        t = self._transport
        if not queue or t.is_closing():
            return
        i, n = 0, len(queue)
        while i < n:
            if _buffered(t):  # the transport holds earlier datagrams: keep the order
                for data, addr in queue[i:]:
                    self._send_one(data, addr)
                return
            i = self._send_batch(queue, i, min(n, i + MAX_BATCH))

    def _send_batch(self, queue: list[tuple[bytes, Addr]], start: int, end: int) -> int:
        """Send queue[start:end] (up to the first odd address); returns where to go on."""
        hdr, iov, hdr_at, iov_at = self._hdr, self._iov, self._hdr_at, self._iov_at
        keep: list[Any] = []
        k = 0
        for data, addr in queue[start:end]:
            name = self._name(addr)
            if not name:
                break
            buf = ctypes.c_char_p(data)  # points at the bytes object's own buffer: no copy
            keep.append(buf)
            IOVEC.pack_into(iov, k * IOVEC.size, ctypes.cast(buf, ctypes.c_void_p).value or 0, len(data))
            MMSGHDR.pack_into(hdr, k * MMSGHDR.size, name, 16, iov_at + k * IOVEC.size, 1, 0, 0, 0, 0)
            k += 1
        if k == 0:  # an address sendmmsg is not given here: the transport's way
            self._send_one(*queue[start])
            return start + 1
        assert self._call is not None
        sent = self._call(self._fd, hdr_at, k, 0)
        self.sent_batches += 1
        if sent > 0:
            return start + sent
        err = ctypes.get_errno()
        if err in _AGAIN or err == errno.EINTR:  # the socket buffer is full: let the transport queue it
            self._send_one(*queue[start])
        else:
            self.on_error()  # this datagram failed (sendmmsg reports the first message's error)
        return start + 1
