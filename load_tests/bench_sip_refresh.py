"""CPU per registration refresh in a SIP worker, in-process, without sockets.

A re-registration storm is, per device, sipp's reg_auth.xml again with the same Call-ID: a
REGISTER without credentials (→ 401, the worker's fast path), then the REGISTER with digest from
the bound, online device (→ 200, a refresh: answered at once, LOGIN seq 0 to main). Here
`--devices` devices are bound in one `SipWorker` (as main's BIND would), and each round feeds
`--n` such datagrams from the bound address to `_UdpProtocol.datagram_received` of an unbound
`SipEndpoint` (its sends are counted, not made; the link to main is a list). The client side
(issuing the nonce, computing the Authorization) is done before the timed loop; the round also
pays for expiring the transactions the refreshes leave behind (Timer J), as the worker's timer
would. The figure to compare is µs CPU per refresh (best of `--repeat`). Old vs new: run it with
PYTHONPATH set to the other checkout.

    python -m load_tests.bench_sip_refresh [--n 20000] [--devices 20000] [--repeat 5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import tempfile
import time
from typing import Any

from gateway.app.sip_ipc import Kind
from gateway.sip import digest
from gateway.sip.events import Peer
from gateway.sip.transport import SipEndpoint, _UdpProtocol
from load_tests.sipp.messages import reg_auth_register
from whitelist.decide import Policy
from whitelist.model import Credential, Entry, EntryStatus

REALM = "3402000000"
PASSWORD = "12345678"
HOST, PORT = "127.0.0.1", 5061
URI = f"sip:34020000002000000001@{REALM}"


def device_id(k: int) -> str:
    return f"34020000001320{k:06d}"


def register(dev: str, i: int, cseq: int, auth: str | None) -> bytes:
    """reg_auth.xml's REGISTERs (Call-ID: the device's, as -cid_str makes it)."""
    return reg_auth_register(dev, cseq, auth, branch=f"z9hG4bK-4242-{i}-{cseq}", tag=f"4242SIPpTag00{i}",
                             call_id=f"{dev}-0@storm", realm=REALM, host=HOST, port=PORT)


class _Link:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, kind: Kind, *fields: Any) -> None:
        self.sent.append((kind, *fields))


class _Endpoint(SipEndpoint):
    """No socket: sends are counted."""

    sent = 0
    oks = 0

    def _send(self, data: bytes, peer: Peer) -> None:
        self.sent += 1
        if data.startswith(b"SIP/2.0 200 "):
            self.oks += 1


def make_worker(devs: list[str], now: list[float], data_dir: str) -> tuple[Any, _Endpoint, _Link]:
    from gateway.app.sip_worker import SipWorker
    from gateway.config import Settings, SipSettings, WhitelistSettings

    cred = {d: Credential.from_password(d, REALM, PASSWORD) for d in devs}
    policy = Policy([Entry(device_id=d, status=EntryStatus.APPROVED, credential=cred[d]) for d in devs])
    s = Settings(data_dir=data_dir, sip=SipSettings(domain=REALM),
                 whitelist=WhitelistSettings(flood_max_per_second=10**9))
    link = _Link()
    w = SipWorker(1, s, policy, link, clock=lambda: now[0])  # type: ignore[arg-type]
    ep = _Endpoint(w, max_message=s.sip.max_message, t1=0.5, t2=4.0, t4=5.0, advertise=HOST)
    w.endpoint = ep
    ep.datagram_hook = w.datagram_hook
    ep.fast_path = w.fast_register
    ep.fast_credentials = True  # as the worker wires it (refreshes from the scan; no effect before it existed)
    for d in devs:  # main's bindings: online, from the address the refreshes come from, same Call-ID
        w.on_link((Kind.BIND, d, "udp", HOST, PORT, f"{d}-0@storm", True))
    return w, ep, link


def refreshes(w: Any, devs: list[str], n: int, base: int, now: float) -> list[bytes]:
    """`n` authenticated REGISTERs, each with a nonce this worker issued to the bound address."""
    source = f"udp:{HOST}:{PORT}"
    out = []
    for j in range(n):
        i = base + j
        dev = devs[i % len(devs)]
        www = digest.challenge(REALM, w.registrar.nonces.issue(now, source), qop=True)
        auth = digest.authorization(www, method="REGISTER", uri=URI, username=dev, password=PASSWORD,
                                    cnonce=f"{i:016x}")
        out.append(register(dev, i, 2, auth))
    return out


def report(name: str, n: int, cpu: float, wall: float) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name:34s} {n / cpu:9.0f} /CPU-s  {cpu / n * 1e6:7.2f} µs CPU  "
          f"(cpu {cpu / wall:4.2f} s/s)  maxrss {rss:6.1f} MiB", flush=True)


async def run(args: argparse.Namespace) -> None:
    n, rep = args.n, args.repeat
    devs = [device_id(k) for k in range(args.devices)]
    addr = (HOST, PORT)
    now = [1_000_000.0]
    print(f"pid {os.getpid()}  devices {len(devs)}  n {n}  best of {rep}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        w, ep, link = make_worker(devs, now, d)
        now[0] += 1.0  # nonces issued at the worker's start are refused (ReplayGuard.forget_before)
        recv = _UdpProtocol(ep).datagram_received
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)  # as the worker sets it
        best_r, best_c = (float("inf"), 0.0), (float("inf"), 0.0)
        profiler = None
        for r in range(rep):
            pool = refreshes(w, devs, n, r * n, now[0])
            firsts = [register(devs[(r * n + j) % len(devs)], r * n + j, 1, None) for j in range(n)]
            if args.profile and r == rep - 1:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            sent0, oks0 = ep.sent, ep.oks
            cpu0, t0 = time.process_time(), time.perf_counter()
            for data in firsts:
                now[0] += 1e-5
                recv(data, addr)
            cpu1, t1 = time.process_time(), time.perf_counter()
            for data in pool:
                now[0] += 1e-5
                recv(data, addr)
            # Timer J of every refresh's transaction, as the worker's timer would run it
            ep._handle(ep.transactions.handle_timer(ep._loop.time() + 3600))
            cpu2, t2 = time.process_time(), time.perf_counter()
            if profiler is not None:
                profiler.disable()
            assert ep.sent - sent0 == 2 * n and ep.oks - oks0 == n, (ep.sent - sent0, ep.oks - oks0, dict(w.stats))
            assert len(ep.transactions) == 0
            logins = [m for m in link.sent if m[0] == Kind.LOGIN]
            assert len(logins) == n and all(m[1] == 0 for m in logins), "not plain refreshes"
            link.sent.clear()
            if cpu1 - cpu0 < best_c[0]:
                best_c = (cpu1 - cpu0, t1 - t0)
            if cpu2 - cpu1 < best_r[0]:
                best_r = (cpu2 - cpu1, t2 - t1)
        report("worker: REGISTER → 401 (fast)", n, *best_c)
        report("worker: refresh REGISTER → 200", n, *best_r)
        if profiler is not None:
            import pstats

            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--devices", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile the last round (slows it)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
