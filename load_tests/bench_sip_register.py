"""CPU per authenticated registration, in process: REGISTER → 401 → REGISTER with digest → 200
through the real endpoint (fast path, parser, transactions), router, device adapter and registrar,
and (unless --no-store) the real durable login: device writer on SQLite, health recorder and
journal — the work gbgate does for one sipp reg_auth.xml call, without sockets (the UDP transport
is a list) and without sipp's CPU.

    python -m load_tests.bench_sip_register [--n 3000] [--rounds 5] [--no-store]

Each round registers `--n` fresh device IDs (new logins) with messages shaped like sipp's; the
client side (computing the Authorization) is not charged. CPU is process time (every thread,
so the database writer's too) over the round, including the writer flushing the logins
(`repo.flush()`), the journal and the health ledger's copy into the database (`copy_now()`; in
the node it runs every 2 s, so without this each round would be charged whichever copies happened
to fall into it), with the node's collector settings (gc.freeze, thresholds). Each round prints
its split: the SIP work with what runs meanwhile (login, journal, the writer's ticks), the
writer's last flush, the copy, and the CPU of the main thread vs the others (the database and
fsync threads); the best and the median of `--rounds` are printed, with µs per registration,
registrations per CPU-second and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from adapters.gb_device import DeviceSettings, GbDeviceAdapter
from adapters.outbound import LocalIdentity
from gateway.gb.presence import Presence
from gateway.sip import digest
from gateway.sip.events import Peer
from gateway.sip.router import SipRouter
from gateway.sip.transport import SipEndpoint
from load_tests.sipp.messages import reg_auth_register
from whitelist.decide import Policy
from whitelist.lockout import FloodGuard, Lockout
from whitelist.model import Credential, Entry, EntryStatus

REALM = "3402000000"
PASSWORD = "12345678"
PEER = Peer("udp", "127.0.0.1", 5061, None)


class _Udp:
    """The datagram transport, as a list of what was sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.oks = 0  # 200s sent (counted here, so waiting for them costs nothing)

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(data)
        if data.startswith(b"SIP/2.0 200 "):
            self.oks += 1

    def is_closing(self) -> bool:
        return False


class _Inventory:
    def __getattr__(self, name: str) -> Any:
        return lambda *a, **kw: None

    async def bindings(self) -> list[Any]:
        return []


class _Health:
    def set_state(self, *a: Any, **kw: Any) -> None:
        return None


class _Audit:
    async def audit_event(self, *a: Any, **kw: Any) -> None:
        return None


def device_id(i: int) -> str:
    return f"34020000001320{i:06d}"


def register(dev: str, i: int, cseq: int, auth: str | None) -> bytes:
    """reg_auth.xml's two REGISTERs, as sipp fills them in."""
    pid = os.getpid()
    return reg_auth_register(dev, cseq, auth, branch=f"z9hG4bK-{pid}-{i}-{cseq}", tag=f"{pid}SIPpTag00{i}",
                             call_id=f"{i}-{pid}@127.0.0.1", realm=REALM)


def _challenge_of(data: bytes) -> str:
    for line in data.decode().split("\r\n"):
        if line.startswith("WWW-Authenticate: "):
            return line[18:]
    raise AssertionError(f"no challenge in {data[:60]!r}")


async def run(n: int, rounds: int, store: bool, scan_credentials: bool = True) -> None:
    total = n * rounds
    entries = [Entry(device_id=device_id(i), status=EntryStatus.APPROVED,
                     credential=Credential.from_password(device_id(i), REALM, PASSWORD)) for i in range(total)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-sip-register-"))
    stack: list[Any] = []
    if store:
        from gateway.app.health import health_plane
        from gateway.app.store import store_plane
        from gateway.config import load_settings
        from gateway.store.inventory import StoreInventory

        settings = load_settings(None, env={
            "GBGATE_DATA_DIR": str(tmp), "GBGATE_DATABASE__URL": f"sqlite:///{tmp}/gbgate.db",
            "GBGATE_HEALTH__JOURNAL_PATH": str(tmp / "journal" / "health.log")})
        sp = store_plane(settings)
        plane = await sp.__aenter__()
        stack.append(sp)
        hp = health_plane(settings, plane.sessions)
        health: Any = await hp.__aenter__()
        stack.append(hp)
        inventory: Any = StoreInventory(plane.repo)
    else:
        health, inventory, plane = _Health(), _Inventory(), None
    router = SipRouter()
    endpoint = SipEndpoint(router, max_message=65536, t1=0.5, t2=4.0, t4=5.0, advertise="127.0.0.1")
    udp = _Udp()
    endpoint._udp = udp  # type: ignore[assignment]
    router.bind(endpoint)
    adapter = GbDeviceAdapter(
        settings=DeviceSettings(realm=REALM, query_on_register=False),
        identity=LocalIdentity(sip_id="34020000002000000001", domain=REALM, host="127.0.0.1", port=5060,
                               user_agent="bench"),
        endpoint=endpoint, policy=Policy(entries), lockout=Lockout(), flood=FloodGuard(max_per_second=1e9),
        presence=Presence(), nonces=digest.NonceIssuer(b"k" * 32), inventory=inventory, health=health,
        whitelist_actions=_Audit(), clock=time.time,
    )
    adapter.install(router)
    endpoint.fast_path = router.on_fast
    endpoint.fast_credentials = scan_credentials  # as gateway/app/sip.py
    # as gateway/app/node.py does once the node is up: what gbgate's collector costs, not more
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    results: list[float] = []
    ptime = time.process_time
    tptime = time.thread_time
    try:
        for r in range(rounds):
            client = 0.0  # the client side's CPU (building messages, computing the digest): not charged
            c_start, t_start = ptime(), tptime()
            for j in range(n):
                i = r * n + j
                dev = device_id(i)
                c0 = ptime()
                first = register(dev, i, 1, None)
                client += ptime() - c0
                endpoint._on_bytes(first, PEER, True)
                c0 = ptime()
                auth = digest.authorization(_challenge_of(udp.sent[-1]), method="REGISTER",
                                            uri="sip:34020000002000000001@3402000000", username=dev,
                                            password=PASSWORD)
                second = register(dev, i, 2, auth)
                client += ptime() - c0
                endpoint._on_bytes(second, PEER, True)
                if j % 64 == 63:
                    await asyncio.sleep(0)  # let the login tasks run, as the loop would between datagrams
            # every 200 out (a login's waits for its durable online event), then the writer idle
            while udp.oks < n:
                await asyncio.sleep(0.002)
            c_sip = ptime()
            if plane is not None:
                await plane.repo.flush()
            c_flush = ptime()
            if plane is not None:
                await health.copy_now()
            c_end = ptime()
            cpu = c_end - c_start - client
            main_thread = tptime() - t_start - client
            assert len(udp.sent) == 2 * n, len(udp.sent)
            udp.sent.clear()
            udp.oks = 0
            results.append(cpu)
            us = 1e6 / n
            split = "" if plane is None else (
                f" (SIP and login {(c_sip - c_start - client) * us:.0f}, writer's last flush "
                f"{(c_flush - c_sip) * us:.0f}, ledger copy {(c_end - c_flush) * us:.0f}; main thread "
                f"{main_thread * us:.0f}, other threads {(cpu - main_thread) * us:.0f})")
            print(f"  round {r + 1}: {cpu * us:.1f} µs CPU per registration{split}", flush=True)
    finally:
        await adapter.stop()
        for cm in reversed(stack):
            await cm.__aexit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best, median = min(results), statistics.median(results)
    mode = ("store" if store else "no store") + ("" if scan_credentials else ", no credentials scan")
    print(f"bench_sip_register ({mode}): best {best / n * 1e6:.1f} µs CPU per "
          f"registration (median {median / n * 1e6:.1f}), {n / best:.0f} registrations per CPU-second, "
          f"RSS {rss:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-store", action="store_true", help="in-memory inventory and health (the SIP path only)")
    ap.add_argument("--no-scan-credentials", action="store_true",
                    help="the endpoint does not offer REGISTERs with credentials to the fast path (logins and "
                         "refreshes through the parser and Registrar.admit, as before the scan answered them)")
    args = ap.parse_args()
    bench = run(args.n, args.rounds, not args.no_store, not args.no_scan_credentials)
    try:
        import uvloop
        uvloop.run(bench)
    except ImportError:
        asyncio.run(bench)


if __name__ == "__main__":
    main()
