"""Benchmark the store side of a catalog sync: one platform's N-channel catalog written, changed, removed.

Run: python -m load_tests.bench_catalog_store [--channels N] [--url sqlite:///…]
Measures gateway.store.devices.CatalogWrite alone (the writer's executemany statements), so a slow
catalog sync can be attributed: if these figures are far below the budget, the time is elsewhere
(SIP/XML/diff in the device adapter). Budget (issue 15): a 5,000-channel platform synced in ≤ 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time

from gateway.gb.items import CatalogItem
from gateway.store.db import make_engine, make_sessionmaker
from gateway.store.devices import DeviceRepository, make_catalog_job
from gateway.store.migrate import upgrade

DEV = "34020000002000000001"


async def run(n: int, url: str) -> None:
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    repo = DeviceRepository(make_sessionmaker(engine), interval=0.01)
    repo.start()
    repo.update_device(DEV, online=True)
    await repo.flush()
    items = [CatalogItem(device_id=f"3402000000131{i:07d}", name=f"cam{i}", status="ON", manufacturer="Hikvision",
                         model="DS-2CD", longitude=120.1, latitude=30.2, parent_id=DEV) for i in range(n)]
    ids = {i.device_id for i in items}
    changed = [CatalogItem(device_id=i.device_id, name=f"{i.name} moved", status="OFF") for i in items]
    for label, job in (("first sync (insert)", make_catalog_job(DEV, items, [], [], ids)),
                       ("every channel changed (update)", make_catalog_job(DEV, [], changed, [], ids)),
                       ("every channel removed", make_catalog_job(DEV, [], [], sorted(ids), set()))):
        t0, c0 = time.perf_counter(), time.process_time()
        await repo.submit(job)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{label}: {n} channels in {wall * 1000:.0f} ms wall = {n / wall:,.0f} channels/s; "
              f"CPU {cpu:.2f} s ({cpu / wall:.2f} CPU-s per s)")
    await repo.stop()
    await engine.dispose()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--channels", type=int, default=5000)
    ap.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as d:
        asyncio.run(run(args.channels, args.url or f"sqlite:///{os.path.join(d, 'c.db')}"))


if __name__ == "__main__":
    main()
