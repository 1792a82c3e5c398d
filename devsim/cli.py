"""Command line of the device swarm: `python -m devsim --server HOST:PORT --count N …`.

A run is a plan of phases, comma-separated:
  register[:RATE]    register every device (RATE starts/s, default: as fast as answered)
  ka:RATE:SECONDS    keepalives at an offered total RATE for SECONDS
  hold:SECONDS       keepalives at --keepalive-interval, spread evenly, for SECONDS
  wait:SECONDS       only answer the gateway (queries, INVITEs)
  unregister         REGISTER Expires: 0 for every registered device
Every phase prints a human line and a machine line `@@ {"phase": …}` (used by bench_signalling).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from devsim.swarm import DeviceSwarm, make_devices
from gateway.tasks import on_stop_signals


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devsim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="127.0.0.1:5060", help="gateway SIP HOST:PORT")
    p.add_argument("--server-id", default="34020000002000000001")
    p.add_argument("--domain", default="3402000000")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--password", default="12345678")
    p.add_argument("--prefix", default="3402000000132", help="device ID prefix (serial fills to 20 digits)")
    p.add_argument("--start", type=int, default=1, help="first serial")
    p.add_argument("--channels", type=int, default=1, help="channels per device")
    p.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    p.add_argument("--local-host", default="127.0.0.1")
    p.add_argument("--sockets", type=int, default=1, help="UDP sockets shared by the devices")
    p.add_argument("--keepalive-interval", type=float, default=60.0)
    p.add_argument("--expires", type=int, default=3600)
    p.add_argument("--concurrency", type=int, default=256, help="registrations in flight")
    p.add_argument("--h265-every", type=int, default=0, help="every Nth device streams H.265")
    p.add_argument("--no-media", action="store_true", help="answer INVITE with 488")
    p.add_argument("--duration", type=float, default=60.0, help="hold time of the default plan")
    p.add_argument("--plan", default=None, help="phases (see above); default register,hold:DURATION,unregister")
    p.add_argument("--quiet", action="store_true", help="machine lines only")
    return p


def _emit(obj: dict[str, Any], quiet: bool) -> None:
    if not quiet:
        phase = obj.get("phase")
        human = ", ".join(f"{k}={v}" for k, v in obj.items() if k not in ("phase", "event"))
        print(f"[{time.strftime('%H:%M:%S')}] {phase} {obj.get('event', '')}: {human}", flush=True)
    print("@@ " + json.dumps(obj, separators=(",", ":")), flush=True)


async def run(args: argparse.Namespace) -> int:
    host, _, port = args.server.rpartition(":")
    devices = make_devices(args.count, password=args.password, prefix=args.prefix, start=args.start,
                           channels=args.channels, h265_every=args.h265_every)
    swarm = DeviceSwarm(server_host=host or "127.0.0.1", server_port=int(port), server_id=args.server_id,
                        domain=args.domain, devices=devices, transport=args.transport,
                        local_host=args.local_host, keepalive_interval=args.keepalive_interval,
                        register_expires=args.expires, sockets=args.sockets, media=not args.no_media)
    plan = args.plan or f"register,hold:{args.duration:g},unregister"
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    await swarm.start()
    _emit({"phase": "start", "event": "ready", "devices": len(devices), "local_port": swarm.local_port,
           "server": args.server}, args.quiet)
    q = args.quiet

    def progress(s: dict[str, Any]) -> None:
        _emit({"phase": "progress", "registered": s["registered"], "keepalives_acked": s["keepalives_acked"],
               "queries_answered": s["queries_answered"], "streams": s["streams_active"]}, q)

    rc = 0
    try:
        for step in [x.strip() for x in plan.split(",") if x.strip()]:
            if stop.is_set():
                break
            name, *params = step.split(":")
            _emit({"phase": step, "event": "begin", "t": time.time()}, q)
            work: Any
            if name == "register":
                rate = float(params[0]) if params else None
                work = swarm.register_all(rate, concurrency=args.concurrency)
            elif name == "ka":
                work = swarm.run_keepalives(float(params[1]), rate=float(params[0]))
            elif name == "hold":
                work = swarm.run_keepalives(float(params[0]), progress=progress)
            elif name == "wait":
                work = asyncio.sleep(float(params[0]))
            elif name == "unregister":
                work = swarm.unregister_all(concurrency=args.concurrency)
            else:
                print(f"unknown phase {step!r}", file=sys.stderr)
                return 2
            task = asyncio.ensure_future(work)
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not task.done():
                task.cancel()
                break
            result = task.result() or {}
            _emit({"phase": step, "event": "end", "t": time.time(), **result}, q)
            if name == "register" and result.get("registered", 0) < result.get("attempted", 0):
                rc = 1
    finally:
        _emit({"phase": "final", "event": "stats", **swarm.stats()}, q)
        await swarm.stop()
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(run(args))
