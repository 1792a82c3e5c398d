"""A keepalive load generator that costs a few µs per request: for scaling runs on a shared box.

sipp spends about 11 µs of CPU per keepalive round trip, half of what the gateway's fast path
costs to answer it, and on a 2-core machine the generator's share is taken from the gateway: two
SIP workers cannot get two cores. `KeepaliveWave` sends keepalive.xml's MESSAGE (as sipp fills it
in: load_tests/sipp/messages.py) for every device of every slice, `rounds` times, each slice from
its own UDP socket on the address its devices registered from, with at most `limit` requests in
flight per socket, and reads the answers with one recvmmsg per batch (gateway/media/udp_batch.py):
3–4 µs per keepalive. The datagrams are built before the clock starts. Not a device: no
retransmissions (a lost request is counted failed once nothing has come back for `idle_timeout`
seconds), no other requests.
"""

from __future__ import annotations

import os
import resource
import select
import socket
import time
from typing import Any

from gateway.media.udp_batch import BatchReader
from load_tests.sipp.messages import keepalive_message

_OK = b"SIP/2.0 200 "


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class KeepaliveWave:
    """The wave's sockets and datagrams, made up front (`run` then only sends and counts)."""

    def __init__(self, target: tuple[str, int], slices: list[list[str]], ports: list[int], *, rounds: int = 1,
                 limit: int = 400, idle_timeout: float = 5.0, realm: str = "3402000000") -> None:
        self.target, self.limit, self.idle_timeout = target, limit, idle_timeout
        self.socks: list[socket.socket] = []
        self.queues: list[list[bytes]] = []
        try:
            for k, (devices, port) in enumerate(zip(slices, ports, strict=True)):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.socks.append(s)
                for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
                s.bind(("127.0.0.1", port))
                s.setblocking(False)
                pid = os.getpid() * 10 + k  # a fresh branch, tag and Call-ID per request
                q = [keepalive_message(dev, r * len(devices) + j, realm=realm, port=port, pid=pid)
                     for r in range(rounds) for j, dev in enumerate(devices)]
                q.reverse()  # popped from the end: sent in order
                self.queues.append(q)
        except BaseException:
            self.close()
            raise

    def run(self) -> dict[str, Any]:
        """Totals as `bench_reregister_storm.sipp_wave` reports them, with `sipp_cpu_s` this
        generator's own CPU seconds over the wave. Once."""
        try:
            return _run(self.target, self.socks, self.queues, self.limit, self.idle_timeout)
        finally:
            self.close()

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []


def _run(target: tuple[str, int], socks: list[socket.socket], queues: list[list[bytes]], limit: int,
         idle_timeout: float) -> dict[str, Any]:
    total = sum(len(q) for q in queues)
    reader = BatchReader(socket.AF_INET, slots=64, slot_size=4096)
    inflight = [0] * len(socks)
    slot_of = {s.fileno(): k for k, s in enumerate(socks)}
    ok = other = 0
    with select.epoll() as ep:
        for s in socks:
            ep.register(s.fileno(), select.EPOLLIN)
        cpu0, t0 = _cpu(), time.monotonic()
        heard = t0
        while ok + other < total and time.monotonic() - heard < idle_timeout:
            for k, s in enumerate(socks):
                q = queues[k]
                while inflight[k] < limit and q:
                    try:
                        s.sendto(q[-1], target)
                    except BlockingIOError:
                        break
                    q.pop()
                    inflight[k] += 1
            for fd, _ in ep.poll(0.01):
                k = slot_of[fd]
                while (n := reader.recv(socks[k])) > 0:
                    buf, step, sizes = reader.buf, reader.slot_size, reader.sizes
                    good = sum(1 for i in range(n) if sizes[i] >= len(_OK) and buf[i * step:i * step + len(_OK)] == _OK)
                    ok += good
                    other += n - good
                    inflight[k] -= n
                    heard = time.monotonic()
        elapsed = time.monotonic() - t0
        cpu = _cpu() - cpu0
    return {"ok": ok, "failed": total - ok, "retrans": 0, "elapsed_s": round(elapsed, 3),
            "wall_s": round(elapsed, 2), "sipp_cpu_s": round(cpu, 2)}
