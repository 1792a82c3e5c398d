"""Benchmark the store side of a re-registration storm: N devices' bindings written in batches.

Run: python -m load_tests.bench_binding_store [--devices N] [--batch B] [--url sqlite:///…]
Measures gateway.store.devices.DeviceRepository alone (what the main process spends persisting
registrations, issue 15): first logins (binding inserted, device row, event), plain refreshes (only
registered_at/expires_at move), refreshes from a new address (every column), and the health
ledger's copy of N events (SqlHealthEvents.insert). `--batch` rows per flush, as the writer's
0.2 s tick would gather them during a storm (about 700 at 3,500 REGISTER/s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime

from gateway.health.timeline import Event, State
from gateway.store.db import make_engine, make_sessionmaker
from gateway.store.devices import DeviceRepository
from gateway.store.health_events import SqlHealthEvents
from gateway.store.migrate import upgrade

T0 = 1_780_000_000.0


def binding(i: int, ts: float, host: str) -> dict[str, object]:
    return {"transport": "udp", "host": host, "port": 5060 + i % 1000, "contact": f"<sip:{i}@{host}:5060>",
            "call_id": f"call-{i}", "realm": "3402000000", "user_agent": "IPC 1.0",
            "registered_at": datetime.fromtimestamp(ts, UTC), "expires_at": datetime.fromtimestamp(ts + 3600, UTC)}


async def run(n: int, batch: int, repeat: int, url: str) -> None:
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    repo = DeviceRepository(sessions, interval=3600)  # flushed here, batch by batch
    ids = [f"3402000000132{i:07d}" for i in range(n)]

    async def phase(label: str, queue: object) -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, n, batch):
            for i in range(start, min(n, start + batch)):
                queue(i)  # type: ignore[operator]
            await repo.flush()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{label:<32} {n} in {wall:6.2f} s wall, CPU {cpu:6.2f} s = {n / cpu:>9,.0f} rows per CPU-s")
        return cpu

    def login(i: int) -> None:
        repo.save_binding(ids[i], **binding(i, T0, "10.0.0.1"))
        repo.update_device(ids[i], online=True, transport="udp", remote_host="10.0.0.1", remote_port=5060,
                           registered_at=datetime.fromtimestamp(T0, UTC))
        repo.add_event(ids[i], "registered", T0, host="10.0.0.1", transport="udp")

    await phase("first logins", login)
    refresh, moved = [], []
    for k in range(1, repeat + 1):  # the machine may be shared: the least CPU of a few runs is the figure
        refresh.append(await phase(f"plain refreshes #{k}", lambda i, k=k: repo.save_binding(
            ids[i], **binding(i, T0 + 60 * k, f"10.0.0.{k}"))))
        moved.append(await phase(f"refreshes from a new address #{k}", lambda i, k=k: repo.save_binding(
            ids[i], **binding(i, T0 + 60 * k + 30, f"10.0.0.{k + 1}"))))
    print(f"least CPU: plain refreshes {min(refresh):.2f} s, from a new address {min(moved):.2f} s")

    ledger = SqlHealthEvents(sessions)
    events = [Event(str(uuid.uuid4()), f"device:{d}", T0 + 1, State.online, "registered", {"device_id": d})
              for d in ids]
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, n, batch):
        await ledger.insert(events[start:start + batch])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{'health events copied':<32} {n} in {wall:6.2f} s wall, CPU {cpu:6.2f} s = {n / cpu:>9,.0f} rows per CPU-s")

    stored = {b.device_id: b for b in await repo.bindings()}
    assert len(stored) == n and all(b.host == f"10.0.0.{repeat + 1}" for b in stored.values())
    assert all(b.expires_at.timestamp() == T0 + 60 * repeat + 30 + 3600 for b in stored.values())
    await engine.dispose()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--devices", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=700)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-binding-") as d:
        asyncio.run(run(args.devices, args.batch, args.repeat, args.url or f"sqlite:///{os.path.join(d, 'b.db')}"))


if __name__ == "__main__":
    main()
