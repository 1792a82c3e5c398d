"""A cheap PS/RTP load generator for many cameras at once (issue 15's bench at 300–400 streams).

    python -m load_tests.rtp_blast --serve [--mode gso|mmsg|sendto] [--tick-ms 2]
    python -m load_tests.rtp_blast --selfcheck   # each mode sends what PsRtpSender sends, also when behind

`bench_media` runs it as a process of its own (`--gen-procs N` of them) and drives it with one
command a line on stdin: `start KEY SSRC HOST PORT`, `stop KEY`, `stats` (answered with one JSON
line: frames, packets, bytes sent and this process's CPU seconds), `quit`. KEY names the camera:
SSRCs are the gateway's to choose and need not differ between two streams on different ports.

Why it is cheap, and still sends what `PsRtpSender` sends: every access unit of the looped test
vector (padded with a filler NAL to the bitrate) is muxed to PS and cut into RTP packets once, at
start, into a template — the packets back to back, header fields left zero. A frame on the wire is
a copy of its template into the camera's own buffer with only the per-send fields written by
`struct.pack_into`: RTP sequence, timestamp and SSRC, the pack header's SCR, the PES PTS, and the
send time (CLOCK_MONOTONIC, 16 hex digits after "LAT" in the filler NAL, as `PsRtpSender(stamp=True)`
writes it) that the viewers subtract for the added latency. Frames that are due are sent together
every tick: `mmsg` gives one `sendmmsg` (Linux, through ctypes) for the tick's packets; `gso` (the
default where the kernel has UDP_SEGMENT) makes each frame one message that the kernel cuts into
the same datagrams, so the IP path runs once per frame instead of once per packet — the
gateway's sockets receive exactly the datagrams the other modes send; `sendto` is the portable
loop. On loopback the sender's kernel time also includes delivering each datagram into the
gateway's socket (softirq in the sending context), so a share of the generator's CPU is receive
work the gateway would otherwise show. `--cpu N` pins the process to one CPU: loopback queues each
datagram on the sending CPU's backlog, so a sender that migrates between CPUs while softirqs are
deferred (a busy machine) may have its packets delivered out of order, which a camera's one NIC
queue would not do.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import heapq
import json
import os
import random
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import is_keyframe
from gateway.media.psmux import PsMuxer, encode_timestamp

FPS = 25
UDP_SEGMENT = 103  # linux/udp.h
GSO_MAX_BYTES = 65000  # one UDP datagram's payload, what one GSO send may carry
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS on older kernels
MAX_MSGS = 1024  # UIO_MAXIOV: sendmmsg's vlen cap
_RTP = struct.Struct("!HII")  # sequence, timestamp, SSRC (after the first two octets)
_IOV = struct.Struct("@PN")  # struct iovec
_MMSG = struct.Struct("@PI4xPNPNi4xI4x")  # struct mmsghdr (msghdr + msg_len), x86-64/aarch64 layout
_STAMP = b"LAT" + b"0" * 16


def _scr_bytes(scr: int) -> bytes:
    """The 6 SCR octets of a pack header (what psmux.pack_header writes after 00 00 01 BA)."""
    scr &= (1 << 33) - 1
    return bytes((0x44 | ((scr >> 27) & 0x38) | ((scr >> 28) & 0x03), (scr >> 20) & 0xFF,
                  (((scr >> 15) & 0x1F) << 3) | 0x04 | ((scr >> 13) & 0x03), (scr >> 5) & 0xFF,
                  ((scr & 0x1F) << 3) | 0x04, 0x01))


@dataclass(slots=True)
class FrameTemplate:
    """One access unit as RTP packets back to back; offsets of the fields written per send."""

    data: bytes
    packets: tuple[int, ...]  # start of each packet in `data`
    sizes: tuple[int, ...]
    scr_at: int
    pts_at: int
    lat_at: int  # -1: no stamp (the frame is too small to carry one)
    key: bool


def build_templates(aus: list[bytes], *, bitrate: int | None, fps: int = FPS, mtu: int = 1400,
                    stamp: bool = True) -> list[FrameTemplate]:
    """Templates for the looped vector, padded as PsRtpSender pads it (filler NAL, type 12)."""
    pad_n = 0
    if bitrate:
        natural = sum(len(a) for a in aus) * 8 * fps / len(aus)
        pad_n = max(0, int((bitrate - natural) / 8 / fps))
    mux = PsMuxer(Codec.H264)
    out = []
    for au in aus:
        key = is_keyframe(Codec.H264, au)
        pad = b""
        if pad_n > 6:
            pad = b"\x00\x00\x00\x01\x0c" + b"\xff" * (pad_n - 6) + b"\x80"
        ps_probe = mux.mux(MediaFrame("video", Codec.H264, au + pad, 3600, 3600, key))
        lat_ps = -1
        if stamp and len(pad) > 32:
            # the stamp inside one packet: move it along the filler until it does not straddle two
            start = len(ps_probe) - len(pad) + 5
            while (start % mtu) + len(_STAMP) > mtu:
                start += 1
            rel = start - (len(ps_probe) - len(pad))
            if rel + len(_STAMP) < len(pad) - 1:
                pad = pad[:rel] + _STAMP + pad[rel + len(_STAMP):]
                lat_ps = start
        ps = mux.mux(MediaFrame("video", Codec.H264, au + pad, 3600, 3600, key))
        assert ps[:4] == b"\x00\x00\x01\xba"
        pes = ps.find(b"\x00\x00\x01\xe0")
        assert pes > 0 and ps[pes + 7] == 0x80 and pes + 14 <= mtu, "PTS must sit in the first packet"
        if lat_ps >= 0:
            assert ps[lat_ps:lat_ps + len(_STAMP)] == _STAMP
        data = bytearray()
        packets, sizes = [], []
        count = max(1, -(-len(ps) // mtu))
        for i in range(count):
            chunk = ps[i * mtu:(i + 1) * mtu]
            packets.append(len(data))
            sizes.append(12 + len(chunk))
            data += bytes((0x80, 96 | (0x80 if i == count - 1 else 0))) + b"\x00" * 10 + chunk

        def at(off: int) -> int:
            return off + 12 * (off // mtu + 1)
        out.append(FrameTemplate(bytes(data), tuple(packets), tuple(sizes), at(4), at(pes + 9),
                                 at(lat_ps) if lat_ps >= 0 else -1, key))
    return out


@dataclass(slots=True)
class Stream:
    """One camera's stream: its own frame buffer, RTP state and destination."""

    ssrc: int
    dest: tuple[str, int]
    buf: bytearray
    seq: int = field(default_factory=lambda: random.randrange(0x10000))
    ts: int = field(default_factory=lambda: random.randrange(1 << 30))
    index: int = 0
    due: float = 0.0
    live: bool = True
    c_buf: Any = None  # ctypes view of buf (its address for iovecs)
    c_name: Any = None  # sockaddr_in of dest
    iov: Any = None  # ctypes iovec array, one per packet slot
    hdrs: bytes = b""  # prebuilt mmsghdrs pointing at the iovecs
    last_slot: int = 0  # mmsg: the iovec shortened to the previous frame's last packet


class _Libc:
    def __init__(self) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.sendmmsg = self.libc.sendmmsg
        self.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        self.sendmmsg.restype = ctypes.c_int


def _sockaddr_in(host: str, port: int) -> Any:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + b"\x00" * 8
    return ctypes.create_string_buffer(raw, 16)


class Blaster:
    """Paces every stream at `fps` and sends the frames due each tick in one go."""

    def __init__(self, templates: list[FrameTemplate], *, fps: int = FPS, mode: str = "auto",
                 tick: float = 0.002) -> None:
        self.t = templates
        self.fps = fps
        self.tick = tick
        self.max_len = max(len(t.data) for t in templates)
        self.max_pkts = max(len(t.packets) for t in templates)
        self.full = templates[0].sizes[0]  # 12 + mtu: every packet but a frame's last
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.fd = self.sock.fileno()
        self.libc: _Libc | None = None
        if mode in ("auto", "gso", "mmsg") and sys.platform == "linux":
            try:
                self.libc = _Libc()
            except (OSError, AttributeError):
                self.libc = None
        if mode == "auto":
            mode = "sendto"
            if self.libc is not None:
                mode = "mmsg"
                if self.max_len <= GSO_MAX_BYTES and self.max_pkts <= GSO_MAX_SEGMENTS:
                    try:
                        self.sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, self.full)
                        mode = "gso"
                    except OSError:
                        pass
        elif mode == "gso":
            self.sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, self.full)
        if mode in ("gso", "mmsg") and self.libc is None:
            raise RuntimeError(f"mode {mode} needs Linux sendmmsg")
        self.mode = mode
        self.batch = bytearray(_MMSG.size * MAX_MSGS)
        self.c_batch = (ctypes.c_char * len(self.batch)).from_buffer(self.batch)
        self.batch_addr = ctypes.addressof(self.c_batch)
        self.streams: dict[str, Stream] = {}  # by the caller's key (a camera), not SSRC
        self.heap: list[tuple[float, int]] = []
        self._by_id: dict[int, Stream] = {}
        self.frames = self.packets = self.bytes = self.errors = 0

    def start(self, key: str, ssrc: int, host: str, port: int) -> None:
        old = self.streams.get(key)
        if old is not None:
            old.live = False
        s = Stream(ssrc, (host, port), bytearray(self.max_len))
        if self.mode != "sendto":
            s.c_buf = (ctypes.c_char * len(s.buf)).from_buffer(s.buf)
            base = ctypes.addressof(s.c_buf)
            s.c_name = _sockaddr_in(host, port)
            name = ctypes.addressof(s.c_name)
            n = 1 if self.mode == "gso" else self.max_pkts
            s.iov = ctypes.create_string_buffer(_IOV.size * n)
            iov = ctypes.addressof(s.iov)
            hdrs = bytearray()
            for j in range(n):
                _IOV.pack_into(s.iov, j * _IOV.size, base + j * self.full, self.full)
                hdrs += _MMSG.pack(name, 16, iov + j * _IOV.size, 1, 0, 0, 0, 0)
            s.hdrs = bytes(hdrs)
        s.due = time.monotonic()
        self.streams[key] = s
        heapq.heappush(self.heap, (s.due, id(s)))
        self._by_id[id(s)] = s

    def stop(self, key: str) -> None:
        s = self.streams.pop(key, None)
        if s is not None:
            s.live = False

    def _fill(self, s: Stream) -> FrameTemplate:
        """Write the stream's next frame into its buffer (template + per-send fields)."""
        t = self.t[s.index % len(self.t)]
        s.index += 1
        buf = s.buf
        n = len(t.data)
        buf[:n] = t.data
        seq, ts, ssrc = s.seq, s.ts, s.ssrc
        pack = _RTP.pack_into
        for k, off in enumerate(t.packets):
            pack(buf, off + 2, (seq + k) & 0xFFFF, ts, ssrc)
        pts = ts & ((1 << 33) - 1)
        buf[t.scr_at:t.scr_at + 6] = _scr_bytes(max(0, pts - 3600))
        buf[t.pts_at:t.pts_at + 5] = encode_timestamp(0b0010, pts)
        if t.lat_at >= 0:
            buf[t.lat_at + 3:t.lat_at + 19] = b"%016x" % time.monotonic_ns()
        s.seq = (seq + len(t.packets)) & 0xFFFF
        s.ts = (ts + 90000 // self.fps) & 0xFFFFFFFF
        return t

    def _due(self, now: float) -> list[Stream]:
        """The streams with a frame due, each once: a stream's one buffer holds one frame per batch
        (one that fell behind sends its next frame in the next tick)."""
        out = []
        heap = self.heap
        step = 1.0 / self.fps
        while heap and heap[0][0] <= now:
            _due, key = heapq.heappop(heap)
            s = self._by_id.get(key)
            if s is None or not s.live:
                self._by_id.pop(key, None)
                continue
            out.append(s)
        for s in out:
            s.due += step
            if s.due < now - 1.0:  # fell a second behind (a stall): skip ahead rather than burst
                s.due = now
            heapq.heappush(heap, (s.due, id(s)))
        return out

    def send_due(self, now: float) -> int:
        due = self._due(now)
        if not due:
            return 0
        if self.mode == "sendto":
            for s in due:
                t = self._fill(s)
                view = memoryview(s.buf)
                for off, size in zip(t.packets, t.sizes, strict=True):
                    try:
                        self.sock.sendto(view[off:off + size], s.dest)
                    except OSError:
                        self.errors += 1
                self._count(t)
            return len(due)
        batch, hs = self.batch, _MMSG.size
        nmsg = 0
        for s in due:
            t = self._fill(s)
            if self.mode == "gso":
                _IOV.pack_into(s.iov, 0, ctypes.addressof(s.c_buf), len(t.data))
                k = 1
            else:
                k = len(t.packets)
                base = ctypes.addressof(s.c_buf)
                if s.last_slot != k - 1:  # the previous frame's short last packet: a full one again
                    _IOV.pack_into(s.iov, s.last_slot * _IOV.size, base + s.last_slot * self.full, self.full)
                _IOV.pack_into(s.iov, (k - 1) * _IOV.size, base + t.packets[-1], t.sizes[-1])
                s.last_slot = k - 1
            if nmsg + k > MAX_MSGS:
                self._flush(nmsg)
                nmsg = 0
            batch[nmsg * hs:(nmsg + k) * hs] = s.hdrs[:k * hs]
            nmsg += k
            self._count(t)
        self._flush(nmsg)
        return len(due)

    def _count(self, t: FrameTemplate) -> None:
        self.frames += 1
        self.packets += len(t.packets)
        self.bytes += len(t.data)

    def _flush(self, nmsg: int) -> None:
        assert self.libc is not None
        sent = 0
        while sent < nmsg:
            r = self.libc.sendmmsg(self.fd, self.batch_addr + sent * _MMSG.size, nmsg - sent, 0)
            if r <= 0:
                self.errors += nmsg - sent  # ENOBUFS/EAGAIN on loopback: count, drop, go on
                return
            sent += r

    def stats(self) -> dict[str, Any]:
        cpu = os.times()
        return {"frames": self.frames, "packets": self.packets, "bytes": self.bytes, "errors": self.errors,
                "streams": len(self.streams), "cpu": cpu.user + cpu.system, "mode": self.mode}

    def serve(self, inp: Any, out: Any) -> None:
        """The command loop: stdin lines in, sends every tick, until `quit` or EOF."""
        fd = inp.fileno()
        os.set_blocking(fd, False)
        pending = b""
        while True:
            now = time.monotonic()
            self.send_due(now)
            nxt = self.heap[0][0] if self.heap else now + 0.1
            wait = max(self.tick, nxt - time.monotonic()) if self.heap else 0.1
            ready, _w, _x = select.select([fd], [], [], min(wait, 0.1))
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                cmd = line.split()
                if not cmd:
                    continue
                if cmd[0] == b"start":
                    self.start(cmd[1].decode(), int(cmd[2]), cmd[3].decode(), int(cmd[4]))
                elif cmd[0] == b"stop":
                    self.stop(cmd[1].decode())
                elif cmd[0] == b"stats":
                    out.write(json.dumps(self.stats()) + "\n")
                    out.flush()
                elif cmd[0] == b"quit":
                    return


def selfcheck(aus: list[bytes], bitrate: int) -> list[str]:
    """Problems found, if any: per mode, 60 frames paced normally must be PsRtpSender's datagrams
    byte for byte (the stamp's digits and place aside), and 100 frames sent by a sender starved of
    CPU (several frames due per tick) must reach an RtpSession with nothing lost, duplicated or
    reordered."""
    import re

    from gateway.media.receiver import RtpSession
    from load_tests.bench_media import PsRtpSender

    class Count:
        n = 0

        def push(self, _frame: Any) -> None:
            self.n += 1

    def unstamped(p: bytes) -> bytes:
        return re.sub(rb"LAT[0-9a-f]{16}", b"", p.replace(b"\xff", b""))

    problems = []
    for mode in ("gso", "mmsg", "sendto"):
        if mode != "sendto" and sys.platform != "linux":
            continue
        for frames, pause in ((60, 0.002), (100, 0.15)):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            rx.bind(("127.0.0.1", 0))
            b = Blaster(build_templates(aus, bitrate=bitrate), mode=mode)
            b.start("cam", 1234, "127.0.0.1", rx.getsockname()[1])
            s = b.streams["cam"]
            ref = PsRtpSender(ssrc=1234, bitrate=bitrate, aus=aus, start_ts=s.ts)
            ref.seq = s.seq
            sent = 0
            while sent < frames:
                sent += b.send_due(time.monotonic())
                time.sleep(pause)
            rx.setblocking(False)
            got = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    got.append(rx.recvfrom(4096))
            rx.close()
            b.sock.close()
            expected = [p for _ in range(sent) for p in ref.next_frame()]
            if [unstamped(d) for d, _a in got] != [unstamped(p) for p in expected]:
                problems.append(f"{mode}: {len(got)} datagrams differ from PsRtpSender's {len(expected)}")
            sink = Count()
            session = RtpSession(sink, ssrc=1234, allowed_hosts=["127.0.0.1"])
            session.arm()
            for d, a in got:
                session.feed(d, (a[0], a[1]))
            st = session.stats()
            bad = {k: st[k] for k in ("lost", "duplicated", "reordered", "late") if st[k]}
            if bad or sink.n != sent:
                problems.append(f"{mode}, pause {pause}s: {sink.n} of {sent} frames, {bad}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", action="store_true", help="read commands on stdin (what bench_media does)")
    p.add_argument("--selfcheck", action="store_true", help="check every mode against PsRtpSender and exit")
    p.add_argument("--bitrate", type=int, default=2_000_000)
    p.add_argument("--mode", default="auto", choices=("auto", "gso", "mmsg", "sendto"))
    p.add_argument("--tick-ms", type=float, default=2.0, help="how often due frames are sent together")
    p.add_argument("--cpu", type=int, default=None, help="pin this process to CPU N (N modulo the CPUs there are)")
    args = p.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[args.cpu % len(cpus)]})
    from load_tests.bench_media import load_aus
    if args.selfcheck:
        problems = selfcheck(load_aus(), args.bitrate)
        print("\n".join(problems) or "rtp_blast selfcheck: every mode sends PsRtpSender's datagrams, also when behind")
        return 1 if problems else 0
    blaster = Blaster(build_templates(load_aus(), bitrate=args.bitrate), mode=args.mode, tick=args.tick_ms / 1000)
    if not args.serve:
        print(f"mode {blaster.mode}; {len(blaster.t)} templates; use --serve (bench_media runs it)")
        return 0
    blaster.serve(sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
