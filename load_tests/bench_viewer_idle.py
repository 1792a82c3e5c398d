"""CPU of watching idle direct viewers: the per-viewer check every second (viewer gone? heartbeat?).

    python -m load_tests.bench_viewer_idle [--viewers 800] [--seconds 5] [--rounds 2]

Every direct HTTP-FLV / WS-FLV viewer waits for its subscription to close while a check runs
every second (gateway/outputs/flv_http, gateway/media_workers/viewer). `old` is how it waited
before: `asyncio.wait_for(sub.wait_closed(), 1.0)` in a loop (a task, a timeout and a
CancelledError per viewer per second); `new` is `Subscription.wait_closed(check=, every=1.0)` (one
re-armed timer). No frames flow: this is the cost per viewer that runs whatever the frame rate.
Rounds alternate, on uvloop when installed; prints CPU ms per second, µs per viewer-second, RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from typing import Any

from gateway.media.fanout import FLV, Subscription


class _Owner:
    channel_id = "c1"
    viewer_backlog = 1 << 20

    def now(self) -> float:
        return time.monotonic()

    def viewer_dropped(self, kind: str) -> None: ...

    def viewer_slow(self, kind: str) -> None: ...

    def viewer_first_item(self, waited: float) -> None: ...

    def unsubscribe(self, sub: Subscription) -> None: ...


def _gone() -> bool:
    return False


async def _old(sub: Subscription) -> None:
    while not sub.closed:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.wait_closed(), 1.0)
        if _gone():
            sub.close("viewer_left")


async def _new(sub: Subscription) -> None:
    def check() -> None:
        if _gone():
            sub.close("viewer_left")
    await sub.wait_closed(check=check, every=1.0)


async def one_round(kind: str, viewers: int, seconds: float) -> float:
    subs = [Subscription(_Owner(), FLV, 8) for _ in range(viewers)]
    run = _old if kind == "old" else _new
    tasks = [asyncio.create_task(run(s)) for s in subs]
    await asyncio.sleep(1.2)  # every viewer past its first check
    c0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = (time.process_time() - c0) / (time.monotonic() - t0)
    for s in subs:
        s.close("closed")
    await asyncio.gather(*tasks)
    return cpu


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--viewers", type=int, default=800)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    run: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop
        run = uvloop.run
    best: dict[str, float] = {}
    for r in range(args.rounds):
        for kind in ("old", "new") if r % 2 == 0 else ("new", "old"):
            cpu = run(one_round(kind, args.viewers, args.seconds))
            best[kind] = min(best.get(kind, cpu), cpu)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.viewers} idle direct viewers, {args.seconds:g} s per round, best of {args.rounds}")
    for kind, cpu in best.items():
        print(f"  {kind}  {cpu * 1000:6.2f} ms CPU/s  {cpu / args.viewers * 1e6:6.2f} µs per viewer-second  "
              f"CPU s/s {cpu:.4f}  max RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
