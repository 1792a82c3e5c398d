"""RTP/PS receivers: UDP, TCP passive (we listen) and TCP active (we connect), gb28181.md §6.2–6.4.

`RtpSession` is the per-session pipeline, driven by whole packets (no sockets in it):

    source check → RTP parse → SSRC check → reorder (UDP only) → frame assembly by timestamp
    → PS demux → MediaFrame → sink.push()

Admission reaches the media plane (issue 3 item 2, issue 10.13): nothing is accepted before the
session is `arm()`ed (the INVITE manager arms it as it sends the offer, so a stray sender that is
already blasting the port cannot latch first); then only packets from the device's signalling
host or its whitelisted source networks count — never from the answer's `c=`, which a device
behind NAT fills with a private address and anyone could fill with a third party's. The session
latches on the first such packet with the expected SSRC (the answer's `y=`; none in the answer:
the first seen, §5.4) and drops and counts everything else before it touches any state, so
spoofed RTP never reaches a viewer. A source that falls silent may be replaced without a
re-INVITE (issue 12.1): after `relatch_after` s of silence, the expected SSRC from another port
of an allowed host (a camera that rebooted onto a new port), or a new SSRC from the latched
address (an SSRC switch) takes over, and the sink is told (`new_source`) so viewers' timestamps
stay continuous. A frame with a sequence gap is dropped and
the session waits for the next keyframe (ZLMediaKit's rule, §6.4), so viewers never decode
half frames. Nothing a peer sends raises out of `feed` (house rule 8).

The asyncio shells only move bytes: `UdpReceiver` (a socket with a large SO_RCVBUF drained in
batches of datagrams per wake-up into `feed_many`, §5 hot paths), `TcpPassiveReceiver` (listens
before the INVITE, accepts one connection from the device — `a=connection:new` — then stops
listening) and `open_tcp_active` (connects after the
ACK, retrying because devices often listen late, §5.5). TCP input goes through the RFC 4571
deframer with resync; a peer that floods or sends only garbage is disconnected and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

from gateway.media.errors import MediaError, RtpError
from gateway.media.frames import FrameAssembler, MediaFrame
from gateway.media.ps import PsDemuxer
from gateway.media.reorder import ReorderBuffer
from gateway.media.rfc4571 import Rfc4571Deframer
from gateway.media.rtp import RTCP_PACKET_TYPES, RTP_HEADER_SIZE, parse_rtp
from gateway.media.session_stats import Trace
from gateway.media.udp_batch import MSG_TRUNC, BatchReader, UdpPoller, loop_poller, shared_reader

log = logging.getLogger(__name__)

Addr = tuple[str, int]
PS_PAYLOAD_TYPES = (96, 97, 98, 99)
_FAST = struct.Struct("!BHII")  # marker|PT, sequence, timestamp, SSRC after a 0x80 first octet
_HDR = RTP_HEADER_SIZE
TCP_MAX_FRAME = 16 * 1024  # ZLMediaKit resyncs above 10 KB (§6.1); we allow a little more


class FrameSink(Protocol):
    """Where demuxed frames go (the hub's stream)."""

    def push(self, frame: MediaFrame) -> None: ...


class RtpSession:
    """Checks, reorders, assembles and demuxes the RTP of one media session."""

    __slots__ = ("_armed", "_assembler", "_clock", "_demux", "_key_seen", "_need_key", "_peer", "_reorder",
                 "_ssrc_locked", "allowed_hosts", "allowed_nets", "bytes", "counters", "expected_ssrc",
                 "first_packet_at", "last_packet_at", "packets", "payload_bytes", "received", "relatch_after",
                 "sink", "source", "trace", "use_reorder")

    def __init__(self, sink: FrameSink, *, ssrc: int | None, allowed_hosts: Iterable[str] | None = None,
                 allowed_nets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
                 trace: Trace | None = None, reorder: bool = True, reorder_capacity: int = 64,
                 armed: bool = True, relatch_after: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.expected_ssrc = ssrc
        self._ssrc_locked = ssrc is not None
        self.allowed_hosts = frozenset(_norm(h) for h in allowed_hosts) if allowed_hosts else None
        self.allowed_nets = tuple(allowed_nets)  # the whitelist entry's allowed_sources
        self._armed = armed
        self.relatch_after = relatch_after
        self.source: Addr | None = None
        self._peer: Any = None  # the locked source exactly as the socket reports it (fast check)
        self.trace = trace
        self.use_reorder = reorder
        self._reorder = ReorderBuffer(reorder_capacity)
        self._assembler = FrameAssembler()
        self._demux = PsDemuxer()
        self._need_key = True
        self._key_seen = False
        self._clock = clock
        self.counters: Counter[str] = Counter()  # the rare events; the per-packet ones are attributes
        self.packets = self.bytes = self.received = self.payload_bytes = 0
        self.first_packet_at: float | None = None
        self.last_packet_at: float | None = None

    def rebind(self, *, ssrc: int | None) -> None:
        """The SDP answer named another SSRC (its y= wins, §5.4) or none (lock to the first seen)."""
        self.expected_ssrc = ssrc
        self._ssrc_locked = ssrc is not None
        self.source = None
        self._peer = None

    def arm(self) -> None:
        """The offer is on its way: from now on RTP from an allowed host may latch."""
        self._armed = True

    def host_allowed(self, host: str) -> bool:
        """The device's signalling host, or inside one of its whitelisted source networks."""
        if self.allowed_hosts is None or host in self.allowed_hosts:
            return True
        if not self.allowed_nets:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.allowed_nets)

    # -- input -----------------------------------------------------------------------------

    def feed(self, data: bytes, addr: Addr) -> None:
        """One RTP (or RTCP) packet from `addr`. Never raises.

        The common case — the locked source, a plain RTP header (V=2, no padding, extension or
        CSRC), the expected SSRC, the next sequence number — takes a short path: one unpack and
        an append to the open frame, with exactly the counters the general path keeps."""
        self.packets += 1
        n = len(data)
        self.bytes += n
        if addr == self._peer and n > _HDR and data[0] == 0x80 and data[1] not in RTCP_PACKET_TYPES:
            b1, seq, ts, ssrc = _FAST.unpack_from(data, 1)
            if ssrc == self.expected_ssrc and (not self.use_reorder or self._reorder.accept_next(seq)):
                self.last_packet_at = self._clock()
                self.received += 1
                self.payload_bytes += n - _HDR
                frames = self._assembler.add(seq, ts, b1 & 0x80, data[_HDR:])
                if frames:
                    for f in frames:
                        self._frame(f.payload, f.gap)
                return
        self._feed_checked(data, addr)

    def feed_many(self, buf: Any, step: int, sizes: Sequence[int], addr: Addr) -> None:
        """Datagrams from one source, datagram i at `buf[i * step:][:sizes[i]]` (a batch read by
        `UdpReceiver`). Exactly `feed` on each in turn, with the per-call work done once for the
        run of fast-path packets: the attribute lookups, the clock, the per-packet counters and
        the reorder buffer's in-order bookkeeping (`next_in_order` / `accept_run`). `buf` may be
        reused after the call: what is kept is copied out."""
        self.packets += len(sizes)
        self.bytes += sum(sizes)
        fast = addr == self._peer
        expected = self.expected_ssrc
        reorder = self._reorder if self.use_reorder else None
        want = -2 if reorder is None else reorder.next_in_order()  # -2: any number (no reorder)
        add = self._assembler.add
        unpack = _FAST.unpack_from
        run = payload = 0
        off = -step
        try:
            for n in sizes:
                off += step
                if fast and n > _HDR and buf[off] == 0x80 and not 200 <= buf[off + 1] <= 204:
                    b1, seq, ts, ssrc = unpack(buf, off + 1)
                    if ssrc == expected and (seq == want or want == -2):
                        if not run:
                            self.last_packet_at = self._clock()
                        run += 1
                        payload += n - _HDR
                        if want >= 0:
                            want = (seq + 1) & 0xFFFF
                        frames = add(seq, ts, b1 & 0x80, buf[off + _HDR:off + n])
                        if frames:
                            for f in frames:
                                self._frame(f.payload, f.gap)
                        continue
                if run:
                    self._commit_run(run, payload, reorder)
                    run = payload = 0
                self._feed_checked(buf[off:off + n], addr)
                # the general path may have latched, re-latched, locked the SSRC or held a packet
                fast = addr == self._peer
                expected = self.expected_ssrc
                add = self._assembler.add
                if reorder is not None:
                    want = reorder.next_in_order()
        finally:  # also when the general path raised: the reorder buffer must know what the assembler took
            if run:
                self._commit_run(run, payload, reorder)

    def _commit_run(self, run: int, payload: int, reorder: ReorderBuffer | None) -> None:
        self.received += run
        self.payload_bytes += payload
        if reorder is not None:
            reorder.accept_run(run)

    def _feed_checked(self, data: bytes, addr: Addr) -> None:
        c = self.counters
        if not self._armed:
            c["dropped_before_offer"] += 1
            if self.trace is not None:
                self.trace.once("dropped_before_offer", source=f"{addr[0]}:{addr[1]}")
            return
        host = _norm(addr[0])
        if not self.host_allowed(host):
            self._drop_source(addr)
            return
        moved = self.source is not None and (host, addr[1]) != self.source
        if len(data) >= 2 and data[1] in RTCP_PACKET_TYPES:
            if moved:
                self._drop_source(addr)
            else:
                c["rtcp"] += 1
            return
        try:
            pkt = parse_rtp(data)
        except RtpError:
            c["bad_rtp"] += 1
            return
        if moved:
            if pkt.ssrc != self.expected_ssrc or not self._silent():
                self._drop_source(addr)
                return
            self._relatch(addr, pkt.ssrc, "new_port")
        if self._ssrc_locked:
            if pkt.ssrc != self.expected_ssrc and self.source is not None and self._silent():
                self._relatch(addr, pkt.ssrc, "ssrc_switch")
            if pkt.ssrc != self.expected_ssrc:
                c["dropped_wrong_ssrc"] += 1
                if self.trace is not None:
                    self.trace.once("ssrc_mismatch", expected=self.expected_ssrc, seen=pkt.ssrc,
                                    source=f"{addr[0]}:{addr[1]}")
                return
        else:
            self.expected_ssrc = pkt.ssrc
            self._ssrc_locked = True
        if self.source is None:
            self.source = (host, addr[1])
            self._peer = addr
            self.first_packet_at = self._clock()
            if self.trace is not None:
                self.trace.once("first_rtp", source=f"{addr[0]}:{addr[1]}", ssrc=pkt.ssrc,
                                payload_type=pkt.payload_type)
        self.last_packet_at = self._clock()
        self.received += 1
        self.payload_bytes += len(pkt.payload)
        if self.use_reorder:
            for p in self._reorder.push(pkt):
                for f in self._assembler.push(p):
                    self._frame(f.payload, f.gap)
        else:
            for f in self._assembler.push(pkt):
                self._frame(f.payload, f.gap)

    def _silent(self) -> bool:
        last = self.last_packet_at
        return last is None or self._clock() - last >= self.relatch_after

    def _relatch(self, addr: Addr, ssrc: int, why: str) -> None:
        """The latched source fell silent and another allowed one took over: a new source for the
        viewers' timeline; what was half-assembled from the old one is dropped."""
        self.counters[f"relatched:{why}"] += 1
        if self.trace is not None:
            self.trace.add("relatched", why=why, source=f"{addr[0]}:{addr[1]}", ssrc=ssrc,
                           was=None if self.source is None else f"{self.source[0]}:{self.source[1]}")
        self.source = (_norm(addr[0]), addr[1])
        self._peer = addr
        self.expected_ssrc = ssrc
        self._ssrc_locked = True
        old = self._assembler
        self._assembler = FrameAssembler(max_frame_bytes=old.max_frame_bytes)
        self._assembler.frames, self._assembler.gap_frames = old.frames, old.gap_frames
        self._reorder.restart()
        self._demux.flush()
        self._need_key = True
        new_source = getattr(self.sink, "new_source", None)
        if new_source is not None:
            new_source(why)

    def flush(self) -> None:
        """Stream stopped: release held packets and the open frame."""
        try:
            for p in self._reorder.flush():
                for f in self._assembler.push(p):
                    self._frame(f.payload, f.gap)
            for f in self._assembler.flush():
                self._frame(f.payload, f.gap)
        except Exception:  # pragma: no cover - defensive
            self.counters["internal"] += 1

    def _drop_source(self, addr: Addr) -> None:
        self.counters["dropped_wrong_source"] += 1
        if self.trace is not None:
            self.trace.once("dropped_wrong_source", source=f"{addr[0]}:{addr[1]}",
                            expected=None if self.source is None else f"{self.source[0]}:{self.source[1]}")

    def _frame(self, payload: bytes, gap: bool) -> None:
        c = self.counters
        if gap:
            # Lost packets inside this frame: its PS is incomplete. Drop it and decode again only
            # from the next keyframe (§6.4).
            c["frames_dropped_gap"] += 1
            self._need_key = True
            return
        demux = self._demux
        packs = demux.packs
        for frame in demux.feed(payload, frame_end=True):
            if frame.kind == "video":
                if frame.keyframe:
                    self._need_key = False
                    if not self._key_seen:
                        self._key_seen = True
                        if self.trace is not None:
                            self.trace.once("first_keyframe", codec=frame.codec.value, bytes=len(frame.data))
                elif self._need_key:
                    c["frames_dropped_wait_key"] += 1
                    continue
                c["video_frames"] += 1
            else:
                c["audio_frames"] += 1
            try:
                self.sink.push(frame)
            except Exception:
                # a frame the sink chokes on is counted and skipped like bad PS: the rest of the
                # batch, and the stream, go on (raising here dropped every datagram after it)
                c["sink_errors"] += 1
                if c["sink_errors"] == 1:
                    log.exception("stream sink failed on a %s frame (counted from here on)", frame.kind)
        if packs == 0 and demux.packs and self.trace is not None:
            self.trace.once("first_ps_pack", stream_types={f"0x{k:02X}": f"0x{v:02X}"
                                                           for k, v in demux.stream_types.items()})

    # -- views -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        r, a, d = self._reorder, self._assembler, self._demux
        c = self.counters
        return {
            "packets": self.packets,
            "received": self.received,
            "bytes": self.bytes,
            "lost": r.lost,
            "reordered": r.reordered,
            "duplicated": r.duplicate,
            "late": r.late,
            "seq_resets": r.resets,
            "dropped_wrong_source": c["dropped_wrong_source"],
            "dropped_wrong_ssrc": c["dropped_wrong_ssrc"],
            "dropped_before_offer": c["dropped_before_offer"],
            "relatched": sum(v for k, v in c.items() if k.startswith("relatched:")),
            "bad_rtp": c["bad_rtp"],
            "rtcp": c["rtcp"],
            "frames": a.frames,
            "frames_dropped_gap": c["frames_dropped_gap"],
            "frames_dropped_wait_key": c["frames_dropped_wait_key"],
            "ps_errors": sum(d.errors.values()),
            "ps_error_kinds": dict(d.errors),
            "ps_bytes_skipped": d.bytes_skipped,
            "tcp_resyncs": c["tcp_resyncs"],
            "tcp_bytes_skipped": c["tcp_bytes_skipped"],
            "tcp_disconnects": c["tcp_disconnects"],
            "udp_truncated": c["udp_truncated"],
            "sink_errors": c["sink_errors"],
            "ssrc": self.expected_ssrc,
            "source": None if self.source is None else f"{self.source[0]}:{self.source[1]}",
        }

    def totals(self) -> dict[str, int]:
        """Counter values for /metrics (family "rtp")."""
        s = self.stats()
        return {k: int(s[k]) for k in RTP_COUNTER_KEYS}


RTP_COUNTER_KEYS = ("received", "bytes", "lost", "reordered", "duplicated", "late", "dropped_wrong_source",
                    "dropped_wrong_ssrc", "bad_rtp", "rtcp", "frames_dropped_gap", "ps_errors",
                    "tcp_resyncs", "tcp_disconnects", "udp_truncated", "sink_errors")


def _norm(host: str) -> str:
    return host[7:] if host.startswith("::ffff:") else host


# ------------------------------------------------------------------------------ UDP


class UdpReceiver:
    """One UDP port for one session (a dedicated port per stream, as WVP + ZLM do).

    Not a DatagramProtocol: the socket is drained in batches per wake-up (`udp_batch.BatchReader`:
    one recvmmsg of up to 64 datagrams into a buffer shared by the thread's receivers), handed to
    the session as one `feed_many` when the whole batch came from one source. A batch from several
    sources or with a datagram larger than its slot (MSG_TRUNC: counted as `udp_truncated`,
    skipped) goes datagram by datagram through `feed`. The socket is watched by the loop's
    `UdpPoller` (one epoll set for every stream, read at most once per `window` seconds: fewer
    wake-ups for at most that much added latency), or by `loop.add_reader` where there is no
    epoll."""

    __slots__ = ("_fd", "_loop", "_poller", "_reader", "session", "sock")

    MAX_BATCHES: Final = 8  # per wake-up: then let the other sockets' callbacks run
    WINDOW: Final = 0.002  # s; see UdpPoller

    def __init__(self, session: RtpSession, sock: socket.socket, reader: BatchReader) -> None:
        self.session = session
        self.sock: socket.socket | None = sock
        self._reader = reader
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._poller: UdpPoller | None = None

    @classmethod
    async def open(cls, session: RtpSession, host: str, port: int, *, rcvbuf: int = 4 << 20,
                   reader: BatchReader | None = None, window: float | None = None) -> UdpReceiver:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self = cls(session, sock, reader if reader is not None else shared_reader(family))
        self._poller = loop_poller(cls.WINDOW if window is None else window)
        if self._poller is not None:
            self._poller.add(self._fd, self._readable)
        else:
            self._loop.add_reader(self._fd, self._readable)
        return self

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        reader, session = self._reader, self.session
        step, slots = reader.slot_size, reader.slots
        for _ in range(self.MAX_BATCHES):
            k = reader.recv(sock)
            if k <= 0:
                if k < 0:
                    session.counters["socket_errors"] += 1
                return
            addr = None if reader.flagged else reader.common()
            if addr is not None:
                session.feed_many(reader.buf, step, reader.sizes, addr)
            else:
                self._one_by_one(k)
            if k < slots:
                return

    def _one_by_one(self, k: int) -> None:
        reader, session = self._reader, self.session
        buf, step, sizes, flags = reader.buf, reader.slot_size, reader.sizes, reader.flags
        for i in range(k):
            if flags[i] & MSG_TRUNC:
                session.counters["udp_truncated"] += 1
                continue
            off = i * step
            session.feed(buf[off:off + sizes[i]], reader.source(i))

    async def close(self) -> None:
        if self.sock is not None:
            if self._poller is not None:
                self._poller.remove(self._fd)
            else:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._fd)
            self.sock.close()
            self.sock = None
        self.session.flush()


# ------------------------------------------------------------------------------ TCP


class _TcpRtp(asyncio.Protocol):
    """RFC 4571 stream → session. Disconnects floods and endless garbage."""

    def __init__(self, session: RtpSession, *, max_rate: int, max_garbage: int,
                 on_lost: Callable[[_TcpRtp], None] | None = None) -> None:
        self.session = session
        self.deframer = Rfc4571Deframer(TCP_MAX_FRAME, payload_types=PS_PAYLOAD_TYPES, ssrc=session.expected_ssrc)
        self.max_rate = max_rate
        self.max_garbage = max_garbage
        self.transport: asyncio.Transport | None = None
        self.peer: Addr = ("", 0)
        self.on_lost = on_lost
        self._window_start = 0.0
        self._window_bytes = 0
        self._skipped_at_packet = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (_norm(peer[0]), peer[1])
        self._window_start = time.monotonic()

    def data_received(self, data: bytes) -> None:
        session = self.session
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_bytes = now, 0
        self._window_bytes += len(data)
        if self._window_bytes > self.max_rate:
            self._abort("tcp_flood")
            return
        d = self.deframer
        skipped0, resyncs0 = d.bytes_skipped, d.resyncs
        try:
            packets = d.feed(data)
        except Exception:  # pragma: no cover - the deframer counts, but never let it kill us
            self._abort("tcp_internal")
            return
        if d.resyncs != resyncs0:
            session.counters["tcp_resyncs"] += d.resyncs - resyncs0
        if d.bytes_skipped != skipped0:
            session.counters["tcp_bytes_skipped"] += d.bytes_skipped - skipped0
        if packets:
            self._skipped_at_packet = d.bytes_skipped
            peer = self.peer
            for pkt in packets:
                session.feed(pkt, peer)
        elif d.bytes_skipped - self._skipped_at_packet > self.max_garbage:
            self._abort("tcp_garbage")

    def _abort(self, reason: str) -> None:
        self.session.counters[reason] += 1
        self.session.counters["tcp_disconnects"] += 1
        if self.session.trace is not None:
            self.session.trace.add("tcp_disconnected", reason=reason)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.flush()
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_lost is not None:
            self.on_lost(self)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpPassiveReceiver:
    """We listen (offer `a=setup:passive`); the device connects. One connection, from the device."""

    def __init__(self, session: RtpSession, *, max_rate: int = 16 << 20, max_garbage: int = 256 << 10) -> None:
        self.session = session
        self.max_rate = max_rate
        self.max_garbage = max_garbage
        self.server: asyncio.base_events.Server | None = None
        self.conn: _TcpRtp | None = None
        self.connected = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, session: RtpSession, host: str, port: int, **kw: Any) -> TcpPassiveReceiver:
        self = cls(session, **kw)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._factory, host, port, reuse_address=True, backlog=4)
        return self

    def _factory(self) -> asyncio.Protocol:
        return _Gate(self)

    def _accept(self, proto: _Gate, peer: Addr) -> _TcpRtp | None:
        """First connection from an allowed host wins (a=connection:new); others are refused."""
        s = self.session
        if self.conn is not None or not s._armed or not s.host_allowed(peer[0]):
            s._drop_source(peer)
            return None
        self.conn = _TcpRtp(s, max_rate=self.max_rate, max_garbage=self.max_garbage)
        if s.trace is not None:
            s.trace.once("tcp_connected", peer=f"{peer[0]}:{peer[1]}", role="device connected to us")
        if not self.connected.done():
            self.connected.set_result(None)
        if self.server is not None:
            self.server.close()  # one connection per session; stop listening
        return self.conn

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.conn is not None:
            await self.conn.close()
        self.session.flush()


class _Gate(asyncio.Protocol):
    """Accepts or refuses a TCP connection on the passive listener, then delegates."""

    def __init__(self, owner: TcpPassiveReceiver) -> None:
        self.owner = owner
        self.inner: _TcpRtp | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername") or ("", 0)
        self.inner = self.owner._accept(self, (_norm(peer[0]), peer[1]))
        if self.inner is None:
            transport.close()
            return
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.inner.connection_lost(exc)


class TcpActiveReceiver:
    """We connect to the device's listening port (offer `a=setup:active`)."""

    def __init__(self, session: RtpSession, conn: _TcpRtp) -> None:
        self.session = session
        self.conn = conn

    async def close(self) -> None:
        await self.conn.close()
        self.session.flush()


async def open_tcp_active(session: RtpSession, host: str, port: int, *, retry_for: float = 5.0,
                          local_host: str | None = None, max_rate: int = 16 << 20,
                          max_garbage: int = 256 << 10) -> TcpActiveReceiver:
    """Connect, retrying for `retry_for` seconds (devices often listen only after the ACK, §5.5)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for
    delay = 0.05
    last: Exception | None = None
    attempts = 0
    while True:
        attempts += 1
        try:
            _t, proto = await loop.create_connection(
                lambda: _TcpRtp(session, max_rate=max_rate, max_garbage=max_garbage), host, port,
                local_addr=(local_host, 0) if local_host else None)
            if session.trace is not None:
                session.trace.once("tcp_connected", peer=f"{host}:{port}", role="we connected", attempts=attempts)
            return TcpActiveReceiver(session, proto)
        except OSError as exc:
            last = exc
        if loop.time() + delay > deadline:
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
    if session.trace is not None:
        session.trace.once("tcp_connect_failed", peer=f"{host}:{port}", attempts=attempts, error=str(last))
    raise MediaError(f"could not connect to {host}:{port} after {attempts} attempts: {last}")
