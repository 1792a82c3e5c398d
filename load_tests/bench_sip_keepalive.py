"""CPU per plain keepalive MESSAGE on the UDP fast path, in-process, without sockets.

The sipp anchor scenario's keepalive (../shared/anchors/kamailio/keepalive.xml, as sipp fills it
in) from `--devices` registered devices at their bound address, each with a fresh branch, tag and
Call-ID, fed to `_UdpProtocol.datagram_received` of an unbound `SipEndpoint` (its sends are
counted, not made): once with the one-process wiring (router → GbDeviceAdapter.fast_keepalive)
and once with a SIP worker's (SipWorker.datagram_hook). Then the pieces of the path on their own.
The figure to compare is µs CPU per keepalive (best of `--repeat`); wall time includes the other
processes on the machine. Old vs new: run it with PYTHONPATH set to the other checkout.

    python -m load_tests.bench_sip_keepalive [--n 100000] [--devices 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from collections.abc import Callable
from typing import Any

from adapters.gb_device import DeviceSettings, GbDeviceAdapter
from adapters.outbound import LocalIdentity
from gateway.gb.presence import Presence
from gateway.sip import digest, fastpath
from gateway.sip.events import Peer
from gateway.sip.router import SipRouter
from gateway.sip.transport import SipEndpoint, _UdpProtocol
from load_tests.sipp.messages import keepalive_message
from whitelist.decide import Policy
from whitelist.lockout import FloodGuard, Lockout
from whitelist.model import Credential, Entry, EntryStatus

REALM = "3402000000"
HOST, PORT = "127.0.0.1", 5061


def keepalive(dev: str, i: int) -> bytes:
    """keepalive.xml as sipp sends it (call i)."""
    return keepalive_message(dev, i, realm=REALM, host=HOST, port=PORT)


class _Sink:
    """Inventory / health / audit stand-ins: every call is accepted and forgotten."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


class _Endpoint(SipEndpoint):
    """No socket: sends are counted."""

    sent = 0

    def _send(self, data: bytes, peer: Peer) -> None:
        self.sent += 1


def _entries(devs: list[str]) -> list[Entry]:
    cred = Credential.from_password(devs[0], REALM, "12345678")
    return [Entry(device_id=d, status=EntryStatus.APPROVED, credential=cred) for d in devs]


def one_process(devs: list[str], now: list[float]) -> tuple[_Endpoint, Any]:
    router = SipRouter()
    ep = _Endpoint(router, max_message=65536, t1=0.5, t2=4.0, t4=5.0, advertise=HOST)
    router.bind(ep)
    presence = Presence(keepalive_interval=60.0)
    adapter = GbDeviceAdapter(
        settings=DeviceSettings(realm=REALM, query_on_register=False),
        identity=LocalIdentity(sip_id="34020000002000000001", domain=REALM, host=HOST, port=5060, user_agent="b"),
        endpoint=ep, policy=Policy(_entries(devs)), lockout=Lockout(),
        flood=FloodGuard(max_per_second=1e9, ban_for=2.0), presence=presence,
        nonces=digest.NonceIssuer(b"k" * 32), inventory=_Sink(), health=_Sink(), whitelist_actions=_Sink(),
        clock=lambda: now[0])
    adapter.install(router)
    ep.fast_path = router.on_fast
    for d in devs:
        presence.register(d, transport="udp", host=HOST, port=PORT, conn_id=None, call_id=f"r-{d}", contact="",
                          expires=3600, now=now[0])
    return ep, adapter


def worker(devs: list[str], now: list[float], data_dir: str) -> tuple[_Endpoint, Any]:
    from gateway.app.sip_ipc import Kind
    from gateway.app.sip_worker import SipWorker
    from gateway.config import Settings, SipSettings, WhitelistSettings

    class Link:
        def send(self, *a: Any) -> None:
            pass

    s = Settings(data_dir=data_dir, sip=SipSettings(domain=REALM),
                 whitelist=WhitelistSettings(flood_max_per_second=10**9))
    w = SipWorker(1, s, Policy(_entries(devs)), Link(), clock=lambda: now[0])  # type: ignore[arg-type]
    ep = _Endpoint(w, max_message=65536, t1=0.5, t2=4.0, t4=5.0, advertise=HOST)
    w.endpoint = ep
    ep.datagram_hook = w.datagram_hook
    ep.fast_path = w.fast_register
    for d in devs:
        w.on_link((Kind.BIND, d, "udp", HOST, PORT, f"r-{d}", True))
    return ep, w


def measure(name: str, n: int, repeat: int, fn: Callable[[int], object]) -> float:
    best_cpu, best_wall = float("inf"), 0.0
    for _ in range(repeat):
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(n):
            fn(i)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        if cpu < best_cpu:
            best_cpu, best_wall = cpu, wall
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name:34s} {n / best_cpu:9.0f} /CPU-s  {best_cpu / n * 1e6:7.2f} µs CPU  "
          f"(cpu {best_cpu / best_wall:4.2f} s/s)  maxrss {rss:6.1f} MiB", flush=True)
    return best_cpu / n * 1e6


async def run(args: argparse.Namespace) -> None:
    ndev, n, rep = args.devices, args.n, args.repeat
    devs = [f"34020000001320{k:06d}" for k in range(ndev)]
    pool = [keepalive(devs[i % ndev], i) for i in range(n)]
    addr = (HOST, PORT)
    print(f"pid {os.getpid()}  keepalive {len(pool[0])} B  devices {ndev}  n {n}  best of {rep}")
    now = [1_000_000.0]

    ep, adapter = one_process(devs, now)
    proto = _UdpProtocol(ep)
    recv = proto.datagram_received

    def one(i: int) -> None:
        now[0] += 1e-4
        recv(pool[i], addr)

    measure("one process: datagram → 200", n, rep, one)
    assert ep.sent == n * rep and ep.stats["responses_sent:200"] == n * rep, (ep.sent, dict(ep.stats))
    with tempfile.TemporaryDirectory() as d:
        wep, _w = worker(devs, now, d)
        wrecv = _UdpProtocol(wep).datagram_received

        def two(i: int) -> None:
            now[0] += 1e-4
            wrecv(pool[i], addr)

        measure("SIP worker: datagram → 200", n, rep, two)
        assert wep.sent == n * rep, wep.sent
    peer = Peer("udp", HOST, PORT)
    scans = [fastpath.scan(d) for d in pool[:n]]
    measure("  scan", n, rep, lambda i: fastpath.scan(pool[i]))
    handler = adapter.fast_keepalive
    measure("  fast_keepalive (checks+200+presence)", n, rep, lambda i: handler(scans[i], peer))  # type: ignore[arg-type]
    measure("  respond (200 template)", n, rep, lambda i: fastpath.respond(
        scans[i], 200, addr, to_tag=fastpath.stateless_tag(scans[i])))  # type: ignore[arg-type]
    activity = adapter.presence.activity
    measure("  presence.activity", n, rep, lambda i: activity(devs[i % ndev], now[0] + i, keepalive=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
