"""CPU per datagram of the UDP RTP receive path: socket → RtpSession → a counting sink.

    python -m load_tests.bench_rtp_receive [--streams 40] [--frames 50] [--rounds 2] [--loop uvloop]

A sender process (its CPU, and the loopback delivery it does in its own context, is not counted)
paces `--streams` 2 Mbit/s 25 fps GB-PS streams (PsRtpSender: H.264 padded to the bitrate, muxed
to PS, ≤1400-byte RTP payloads, every frame's packets back to back as a camera sends them, the
streams' frames spread over the frame interval) to one UDP port each. This process receives them
with every path in `--paths`, rounds alternating so all see the same machine: `old` is the asyncio
DatagramProtocol the gateway used before (one callback and one `RtpSession.feed` per datagram);
`new` is `gateway.media.receiver.UdpReceiver` (`new@W`: with a poller window of W s, 0 for none).
Each round prints packets/s, this process's CPU µs per packet
(user+sys, from the first send to the last packet, idle included) and RSS; the summary line is the
best round of each path. `--queued` queues one frame on every
socket from this process, then times only the drain, frame after frame: no pacing and no idle
wake-ups, the cost per datagram alone (paced rounds on a busy machine are dominated by the
wake-ups).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import resource
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from gateway.media.frames import MediaFrame
from gateway.media.receiver import RtpSession
from load_tests.bench_media import PsRtpSender

SSRC = 0x06516E81
FPS = 25


class CountingSink:
    __slots__ = ("bytes", "frames")

    def __init__(self) -> None:
        self.frames = self.bytes = 0

    def push(self, frame: MediaFrame) -> None:
        self.frames += 1
        self.bytes += len(frame.data)


class LegacyUdpReceiver(asyncio.DatagramProtocol):
    """The receive shell as it was before the batched one: a DatagramProtocol, one feed per datagram."""

    def __init__(self, session: RtpSession) -> None:
        self.session = session
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, session: RtpSession, host: str, port: int, *, rcvbuf: int = 4 << 20) -> LegacyUdpReceiver:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((host, port))
        sock.setblocking(False)
        _t, proto = await loop.create_datagram_endpoint(lambda: cls(session), sock=sock)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.session.feed(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.session.counters["socket_errors"] += 1

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.session.flush()


def build_frames(frames: int, bitrate: int) -> list[list[bytes]]:
    s = PsRtpSender(ssrc=SSRC, start_ts=0, bitrate=bitrate)
    s.seq = 65_000  # cross the 16-bit wrap on the way
    return [s.next_frame() for _ in range(frames)]


def sender(conn: Connection, frames: list[list[bytes]], fps: int) -> None:
    """Wait for the ports, then send every stream's frames on schedule; report own CPU."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        ports: list[int] = msg
        n = len(ports)
        step = 1.0 / fps
        t0 = time.monotonic() + 0.05
        sent = 0
        for f, pkts in enumerate(frames):
            for i, port in enumerate(ports):
                due = t0 + f * step + i * step / n
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                dest = ("127.0.0.1", port)
                for p in pkts:
                    sock.sendto(p, dest)
                    sent += 1
        conn.send(sent)


async def one_round(path: str, conn: Connection, streams: int, expect_packets: int,
                    expect_frames: int) -> dict[str, Any]:
    opener = _opener(path)
    sinks = [CountingSink() for _ in range(streams)]
    sessions = [RtpSession(s, ssrc=SSRC, allowed_hosts=["127.0.0.1"]) for s in sinks]
    receivers = []
    ports = []
    for s in sessions:
        rx = await opener(s, "127.0.0.1", 0)
        receivers.append(rx)
        sock = rx.transport.get_extra_info("socket") if path == "old" else rx.sock
        ports.append(sock.getsockname()[1])
    await asyncio.sleep(0.05)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    conn.send(ports)
    last_change, last = time.monotonic(), -1
    while True:
        await asyncio.sleep(0.02)
        got = sum(s.received for s in sessions)
        now = time.monotonic()
        if got != last:
            last, last_change = got, now
            t_last = now
        if got >= expect_packets or now - last_change > 1.0:
            break
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    user, sys_ = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
    cpu = user + sys_
    wall = t_last - t0
    sent = conn.recv()
    for rx in receivers:
        await rx.close()
    frames = sum(s.frames for s in sinks)
    st = [s.stats() for s in sessions]
    lost = sum(x["lost"] for x in st)
    rss = _rss_mb()
    return {"path": path, "packets": got, "sent": sent, "frames": frames, "expect_frames": expect_frames,
            "lost": lost, "cpu": cpu,
            "user_us": user / max(1, got) * 1e6, "sys_us": sys_ / max(1, got) * 1e6, "wall": wall,
            "us_per_packet": cpu / max(1, got) * 1e6,
            "pps": got / wall if wall > 0 else 0.0, "cpu_s_per_s": cpu / wall if wall > 0 else 0.0, "rss_mb": rss}


async def queued_round(path: str, frames: list[list[bytes]], streams: int) -> dict[str, Any]:
    """`--queued`: no wake-up per burst: each cycle queues one frame on every socket (sent from
    here, outside the timing), then times the loop draining them all; process CPU of the drain."""
    opener = _opener(path)
    sinks = [CountingSink() for _ in range(streams)]
    sessions = [RtpSession(s, ssrc=SSRC, allowed_hosts=["127.0.0.1"]) for s in sinks]
    receivers = [await opener(s, "127.0.0.1", 0) for s in sessions]
    dests = [("127.0.0.1", (rx.transport.get_extra_info("socket") if path == "old" else rx.sock).getsockname()[1])
             for rx in receivers]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    tx.bind(("127.0.0.1", 0))
    cpu = 0.0
    got = 0
    for pkts in frames:
        for d in dests:
            for p in pkts:
                tx.sendto(p, d)
        want = got + len(pkts) * streams
        c0 = time.process_time()
        while got < want:
            await asyncio.sleep(0)
            got = sum(x.received for x in sessions)
        cpu += time.process_time() - c0
    tx.close()
    for rx in receivers:
        await rx.close()
    return {"path": path, "packets": got, "sent": got, "frames": sum(s.frames for s in sinks),
            "expect_frames": len(frames) * streams, "lost": 0, "cpu": cpu, "wall": cpu, "user_us": 0.0, "sys_us": 0.0,
            "us_per_packet": cpu / max(1, got) * 1e6, "pps": got / cpu if cpu else 0.0, "cpu_s_per_s": 1.0,
            "rss_mb": _rss_mb()}


def _opener(path: str) -> Any:
    """old: LegacyUdpReceiver; new: UdpReceiver; @W: with a poller window of W s."""
    if path == "old":
        return LegacyUdpReceiver.open
    from gateway.media.receiver import UdpReceiver
    _new, _at, window = path.partition("@")

    async def open_new(session: RtpSession, host: str, port: int) -> Any:
        return await UdpReceiver.open(session, host, port, window=float(window) if window else None)
    return open_new


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main_async(args: argparse.Namespace) -> None:
    frames = build_frames(args.frames, args.bitrate)
    per_stream = sum(len(f) for f in frames)
    expect_packets = per_stream * args.streams
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=sender, args=(child, frames, args.fps), daemon=True)
    proc.start()
    paths = args.paths.split(",")
    print(f"{args.streams} streams × {args.frames} frames ({per_stream / args.frames:.1f} packets/frame, "
          f"{per_stream * args.fps / args.frames:.0f} packets/s per stream), {expect_packets} datagrams per round, "
          f"loop {type(asyncio.get_running_loop()).__module__.split('.')[0]}")
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    try:
        for r in range(args.rounds):
            for p in paths if r % 2 == 0 else paths[::-1]:
                if args.queued:
                    res = await queued_round(p, frames, args.streams)
                else:
                    res = await one_round(p, parent, args.streams, expect_packets, args.frames * args.streams)
                results[p].append(res)
                print(f"  {p:4s} packets {res['packets']}/{res['sent']} frames {res['frames']}/{res['expect_frames']}"
                      f" lost {res['lost']}  {res['pps']:8.0f} packets/s  {res['cpu_s_per_s']:.3f} CPU s/s"
                      f"  {res['us_per_packet']:6.2f} µs CPU/packet (user {res['user_us']:.2f} sys {res['sys_us']:.2f})"
                      f"  RSS {res['rss_mb']:.1f} MB", flush=True)
    finally:
        parent.send(None)
        proc.join(5)
    print("best of each path:")
    for p, rs in results.items():
        best = min(rs, key=lambda x: x["us_per_packet"])
        print(f"  {p:4s} {best['us_per_packet']:6.2f} µs CPU/packet"
              f" (user {best['user_us']:.2f} sys {best['sys_us']:.2f})"
              f"  {best['pps']:8.0f} packets/s"
              f"  RSS {best['rss_mb']:.1f} MB")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--frames", type=int, default=50, help="frames per stream per round")
    ap.add_argument("--fps", type=int, default=FPS)
    ap.add_argument("--bitrate", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--paths", default="old,new",
                    help="old, new, new@W (UdpReceiver's poller window W seconds, 0: none)")
    ap.add_argument("--queued", action="store_true",
                    help="queue a frame on every socket, then time the drain (no pacing, no idle wake-ups)")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = ap.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop
        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    runner(main_async(args))


if __name__ == "__main__":
    main(sys.argv[1:])
