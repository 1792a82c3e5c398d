"""Read many UDP datagrams per wake-up into one preallocated buffer (issue 15, media CPU).

A DatagramProtocol costs one Python callback, one `bytes` and one address tuple per datagram; a
camera sends each frame's 5–50 packets back to back, so one wake-up usually finds several
queued. `BatchReader.recv` drains up to `slots` of them with one `recvmmsg` (Linux, through
ctypes, as load_tests/rtp_blast.py calls sendmmsg) into fixed slots of one anonymous mapping,
and leaves the sizes, the flags and the raw source addresses for the caller; where recvmmsg is
missing it loops `socket.recvmsg_into` into the same slots. The source of a batch is decoded to a
`(host, port)` tuple only when it differs from the last one decoded (one camera sends the whole
batch): `common()` compares the raw sockaddr bytes of all messages at once.

A reader is shared by every socket of a thread (`shared_reader`): the loop runs one callback at a
time and the caller copies out what it keeps before the next `recv`, so one buffer serves all
streams and the resident memory stays that of a few pages per slot.

`UdpPoller` watches a loop's RTP sockets through one epoll set, registered with the loop as one
reader: at 25 fps each stream's socket turns readable once a frame, so 150 streams woke the loop
3,750 times a second, and a wake-up costs more than the datagrams it reads. After a wake-up the
poller leaves the loop's epoll for `window` seconds (the first burst is read at once, the ones
arriving meanwhile at most `window` later) and then reads every socket that became readable in
one pass: at most one wake-up per window, whatever the number of streams. After that pass the
epoll set rejoins the loop's even when it found datagrams, so a frame arriving later is read at
once: staying on the timer while busy saved no CPU measurably (bench_media at 150, 300 and 400
streams) but made every frame wait for the next window (mean added latency 1.1 → 3.0 ms at 150).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import mmap
import select
import socket
import struct
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

Addr = tuple[str, int]
MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)
DEFAULT_SLOTS = 64
DEFAULT_SLOT_SIZE = 65536  # any UDP datagram: nothing a DatagramProtocol read is truncated here
MMSGHDR = struct.Struct("@PI4xPNPNi4xI4x")  # struct mmsghdr (msghdr + msg_len), x86-64/aarch64 layout
_MMSG_OUT = struct.Struct("=48xi4xI4x")  # msg_flags, msg_len of one mmsghdr
IOVEC = struct.Struct("@PN")  # struct iovec
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
_NAMELEN: dict[int, int] = {socket.AF_INET: 16, socket.AF_INET6: 28}


def mmsg_call(name: str, *argtypes: Any) -> Any:
    """libc's `name` (recvmmsg, sendmmsg) with its argument types, or None (not Linux, no libc,
    too old, or an mmsghdr layout other than the one packed here)."""
    if not sys.platform.startswith("linux") or MMSGHDR.size != 64:
        return None
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn


_RECVMMSG = mmsg_call("recvmmsg", ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)


def decode_sockaddr(raw: bytes) -> Addr:
    """A struct sockaddr_in / sockaddr_in6 as the (host, port) a DatagramProtocol reports."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
    scope = int.from_bytes(raw[24:28], sys.byteorder)
    if scope:  # link-local: the interface name after %, as the socket module writes it
        host = socket.getnameinfo((host, port, 0, scope), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
    return host, port


class BatchReader:
    """Up to `slots` datagrams per `recv`; datagram i is `buf[i * slot_size:][:sizes[i]]`.

    After `recv` returned k > 0: `sizes` and `flags` (msg_flags, MSG_TRUNC for a datagram larger
    than its slot) have k entries, `flagged` says whether any flag is set, `common()` is the
    batch's one source (None: several) and `source(i)` each datagram's. `recv` returns 0 when
    nothing is queued and -errno on a socket error."""

    __slots__ = (
        "_cache",
        "_ctl",
        "_dirty",
        "_fd_call",
        "_hdr_addr",
        "_namelen",
        "_names_at",
        "_out",
        "_sources",
        "_template",
        "buf",
        "flagged",
        "flags",
        "sizes",
        "slot_size",
        "slots",
        "view",
    )

    def __init__(self, family: int = socket.AF_INET, *, slots: int = DEFAULT_SLOTS,
                 slot_size: int = DEFAULT_SLOT_SIZE, use_recvmmsg: bool = True) -> None:
        self.slots = slots
        self.slot_size = slot_size
        # an anonymous mapping: zero pages until the kernel writes a datagram into them
        self.buf = mmap.mmap(-1, slots * slot_size)
        self.view = memoryview(self.buf)
        self.sizes: Sequence[int] = ()
        self.flags: Sequence[int] = ()
        self.flagged = False
        self._namelen = _NAMELEN.get(family, 28)
        self._cache: dict[bytes, Addr] = {}
        self._sources: list[Addr] = []
        self._fd_call = _RECVMMSG if use_recvmmsg else None
        self._dirty = 0
        if self._fd_call is not None:
            self._setup_mmsg()

    @property
    def batched(self) -> bool:
        """True when one recvmmsg reads the batch (False: the recvmsg_into loop)."""
        return self._fd_call is not None

    def _setup_mmsg(self) -> None:
        n, nl = self.slots, self._namelen
        iov_at = n * MMSGHDR.size
        self._names_at = names_at = iov_at + n * IOVEC.size
        self._ctl = ctl = mmap.mmap(-1, names_at + n * nl)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        cbase = ctypes.addressof(ctypes.c_char.from_buffer(ctl))
        for i in range(n):
            IOVEC.pack_into(ctl, iov_at + i * IOVEC.size, base + i * self.slot_size, self.slot_size)
            MMSGHDR.pack_into(ctl, i * MMSGHDR.size, cbase + names_at + i * nl, nl, cbase + iov_at + i * IOVEC.size,
                            1, 0, 0, 0, 0)
        self._template = memoryview(ctl[:iov_at])
        self._hdr_addr = cbase
        self._out = [struct.Struct("=" + "48xi4xI4x" * k) for k in range(n + 1)]

    def recv(self, sock: socket.socket) -> int:
        """Read what is queued, up to `slots` datagrams; see the class docstring."""
        call = self._fd_call
        if call is None:
            return self._recv_loop(sock)
        ctl = self._ctl
        if self._dirty:  # msg_namelen, msg_flags and msg_len were written by the last call
            ctl[:self._dirty] = self._template[:self._dirty]
            self._dirty = 0
        k: int = call(sock.fileno(), self._hdr_addr, self.slots, socket.MSG_DONTWAIT, None)
        if k <= 0:
            if k == 0:
                return 0
            err = ctypes.get_errno()
            return 0 if err in _AGAIN else -err
        self._dirty = k * MMSGHDR.size
        vals = self._out[k].unpack_from(ctl)
        self.sizes = vals[1::2]
        self.flags = flags = vals[0::2]
        self.flagged = any(flags)
        return k

    def _recv_loop(self, sock: socket.socket) -> int:
        sizes: list[int] = []
        flags: list[int] = []
        sources = self._sources = []
        view, size = self.view, self.slot_size
        for i in range(self.slots):
            try:
                n, _anc, fl, addr = sock.recvmsg_into([view[i * size:(i + 1) * size]])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if not sizes:
                    return -(exc.errno or errno.EIO)
                break
            sizes.append(n)
            flags.append(fl & MSG_TRUNC)
            sources.append((addr[0], addr[1]))
        self.sizes, self.flags = sizes, flags
        self.flagged = any(flags)
        return len(sizes)

    def common(self) -> Addr | None:
        """The one source of the whole last batch, or None when it came from several."""
        k = len(self.sizes)
        if self._fd_call is None:
            src = self._sources
            first = src[0]
            for a in src:
                if a != first:
                    return None
            return first
        nl, at = self._namelen, self._names_at
        ctl = self._ctl
        raw = ctl[at:at + nl]
        if k > 1 and ctl[at:at + k * nl] != raw * k:
            return None
        addr = self._cache.get(raw)
        if addr is None:
            addr = self._decode(raw)
        return addr

    def source(self, i: int) -> Addr:
        """Datagram i's source."""
        if self._fd_call is None:
            return self._sources[i]
        at = self._names_at + i * self._namelen
        raw = self._ctl[at:at + self._namelen]
        return self._cache.get(raw) or self._decode(raw)

    def _decode(self, raw: bytes) -> Addr:
        cache = self._cache
        if len(cache) >= 1024:  # a spray of sources: keep the memory bounded
            cache.clear()
        addr = cache[raw] = decode_sockaddr(raw)
        return addr


_local = threading.local()


def shared_reader(family: int, slot_size: int = DEFAULT_SLOT_SIZE) -> BatchReader:
    """This thread's reader for `family` sockets (one buffer for every receiver of a loop)."""
    readers: dict[tuple[int, int], BatchReader] | None = getattr(_local, "readers", None)
    if readers is None:
        readers = _local.readers = {}
    key = (family, slot_size)
    r = readers.get(key)
    if r is None:
        r = readers[key] = BatchReader(family, slot_size=slot_size)
    return r


class UdpPoller:
    """A loop's UDP sockets in one epoll set, read at most once per `window` (module docstring).

    `add(fd, handler)` calls `handler()` (which drains the socket) whenever `fd` is readable;
    `remove(fd)` stops it. With `window` 0 every wake-up is handled at once (no added latency).
    The epoll set is closed when its last socket is removed."""

    __slots__ = ("__weakref__", "_ep", "_handlers", "_loop", "_registered", "_timer", "window")

    def __init__(self, loop: asyncio.AbstractEventLoop, window: float) -> None:
        self._loop = loop
        self.window = window
        self._ep = select.epoll()
        self._handlers: dict[int, Callable[[], None]] = {}
        self._registered = False  # the epoll fd is in the loop's readers
        self._timer: asyncio.TimerHandle | None = None

    def add(self, fd: int, handler: Callable[[], None]) -> None:
        self._ep.register(fd, select.EPOLLIN)
        self._handlers[fd] = handler
        if not self._registered and self._timer is None:
            self._loop.add_reader(self._ep.fileno(), self._ready)
            self._registered = True

    def remove(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._ep.unregister(fd)
        if not self._handlers:
            self.close()

    def close(self) -> None:
        if self._registered:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._ep.fileno())
            self._registered = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._handlers.clear()
        self._ep.close()
        mine = _pollers.get(self._loop)
        if mine is not None and mine.get(self.window) is self:
            del mine[self.window]

    def _ready(self) -> None:
        if self.window > 0:
            self._loop.remove_reader(self._ep.fileno())
            self._registered = False
            self._timer = self._loop.call_later(self.window, self._tick)
        self._dispatch()

    def _tick(self) -> None:
        self._timer = None
        if self._ep.closed:
            return
        self._dispatch()
        if self._handlers and not self._ep.closed:
            self._loop.add_reader(self._ep.fileno(), self._ready)
            self._registered = True

    def _dispatch(self) -> None:
        """Drain every ready socket."""
        handlers = self._handlers
        for fd, _events in self._ep.poll(0):
            handler = handlers.get(fd)
            if handler is None:
                continue
            try:
                handler()
            except Exception as exc:  # one stream's failure must not stop the others'
                self._loop.call_exception_handler({"message": "UDP receive handler failed", "exception": exc})


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, UdpPoller]] = weakref.WeakKeyDictionary()
HAS_EPOLL = hasattr(select, "epoll")


def loop_poller(window: float) -> UdpPoller | None:
    """The running loop's poller for `window` (one per loop and window), or None without epoll."""
    if not HAS_EPOLL:
        return None
    loop = asyncio.get_running_loop()
    mine = _pollers.setdefault(loop, {})
    p = mine.get(window)
    if p is None:
        p = mine[window] = UdpPoller(loop, window)
    return p
