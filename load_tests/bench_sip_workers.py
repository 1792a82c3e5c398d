"""SIP throughput from 1 to N workers (`sip.workers`), sipp on the same machine.

    python -m load_tests.bench_sip_workers [--devices 20000] [--workers 1,2] [--instances 4]
                                           [--ka-generator sipp|blast]

For each `sip.workers` value, on a copy of the same seeded database (bench_reregister_storm.seed):
 (1) N new logins (digest REGISTER → 401 → REGISTER → 200), sipp as fast as the gateway answers
     (`--limit` calls in flight per sipp, no rate cap to speak of);
 (2) N re-registrations (refreshes, same Call-ID);
 (3) `--ka-rounds` × N keepalive MESSAGEs from the registered devices' own addresses.
Printed per step: achieved rate (200 OK/s), CPU seconds per second of each gbgate process and of
the sipp processes (their rusage), requests per gbgate CPU-second, UdpRcvbufErrors; then the
scaling of each step from the first workers value.
The machine is shared with sipp: with 2 cores, gbgate cannot get more than what sipp leaves.
`--ka-generator blast` sends the keepalives with load_tests/sip_blast.py instead (3–4 µs of CPU per
keepalive against sipp's 11), so that step shows what the gateway does with what the box has.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from load_tests.bench_reregister_storm import Node, balanced_ports, seed, sipp_wave, slices_for
from load_tests.bench_signalling import machine_busy, udp_rcvbuf_errors
from load_tests.sip_blast import KeepaliveWave
from load_tests.sipp import gen_devices, runner


def step(node: Node, name: str, target: str, slices: list[Path], ports: list[int], args: argparse.Namespace,
         workdir: Path, *, blast: KeepaliveWave | None = None, **kw: Any) -> dict[str, Any]:
    """One wave through sipp, or through `blast` (made up front) when given."""
    cpu0, drops0, t0, busy0 = node.cpu(), udp_rcvbuf_errors(), time.monotonic(), machine_busy()
    if blast is not None:
        res = blast.run()
    else:
        res = sipp_wave(target, slices, ports, rate=args.rate, outdir=workdir, tag=f"w{node.workers}_{name}",
                        limit=args.limit, **kw)
    cpu1, drops1, busy1 = node.cpu(), udp_rcvbuf_errors(), machine_busy()
    wall = res["elapsed_s"] or (time.monotonic() - t0)
    cpu = {k: round(cpu1.get(k, 0.0) - cpu0.get(k, 0.0), 2) for k in cpu1}
    total = sum(cpu.values())
    cpu["sipp"] = res["sipp_cpu_s"]
    cpu["other"] = round(max(0.0, busy1 - busy0 - total - res["sipp_cpu_s"]), 2)  # the rest of the shared machine
    out = {"step": name, "ok": res["ok"], "failed": res["failed"], "retrans": res["retrans"],
           "wall_s": round(wall, 2), "rate": round(res["ok"] / wall, 1) if wall else None,
           "cpu_s": cpu, "cpu_per_s": {k: round(v / wall, 2) for k, v in cpu.items()},
           "per_cpu_s": round(res["ok"] / total, 1) if total else None,
           "udp_rcvbuf_errors": drops1 - drops0}
    print(f"  {name:<10} {out['ok']:>6} ok in {out['wall_s']:>6} s = {out['rate']!s:>8}/s, failed {out['failed']}, "
          f"retrans {out['retrans']}, CPU s/s {out['cpu_per_s']}, {out['per_cpu_s']} per gbgate CPU-s, "
          f"drops {out['udp_rcvbuf_errors']}", flush=True)
    return out


def run(db: Path, workers: int, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    node = Node(db, workers, workdir / f"w{workers}")
    slices = slices_for(args.devices, args.instances, workdir)
    ports = balanced_ports(args.instances, workers)
    node.start()
    target = f"127.0.0.1:{node.gw.sip_port}"
    try:
        print(f"== sip.workers = {workers}: main PID {node.main_pid()}, workers {node.worker_pids()}", flush=True)
        out = [step(node, "login", target, slices, ports, args, workdir)]
        time.sleep(1.0)
        out.append(step(node, "refresh", target, slices, ports, args, workdir))
        blast = None
        if args.ka_generator == "blast":
            ids = gen_devices.device_ids(args.devices)
            per_port = [ids[i::args.instances] for i in range(args.instances)]  # as slices_for cuts them
            blast = KeepaliveWave(("127.0.0.1", node.gw.sip_port), per_port, ports, rounds=args.ka_rounds,
                                  limit=args.limit)
        out.append(step(node, "keepalive", target, slices, ports, args, workdir, scenario="keepalive.xml",
                        rounds=args.ka_rounds, blast=blast))
        for o in out:
            o["workers"] = workers
        return out
    finally:
        node.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--rate", type=float, default=100000.0,
                    help="sipp's rate cap, total (high: the gateway paces; at 40,000 two workers' keepalives "
                         "reached the cap, not their capacity)")
    ap.add_argument("--limit", type=int, default=400, help="calls in flight per sipp")
    ap.add_argument("--ka-rounds", type=int, default=6,
                    help="keepalive rounds over the devices (6: a step of seconds, not half of one, so the "
                         "scaling is not a sample of scheduler noise)")
    ap.add_argument("--ka-generator", choices=("sipp", "blast"), default="sipp",
                    help="what sends the keepalives: sipp, or load_tests/sip_blast.py (a few µs of CPU per "
                         "keepalive, so the gateway gets what the machine has)")
    ap.add_argument("--seed-dir", type=Path, default=Path(tempfile.gettempdir()) / "gbgate-bench-seed")
    args = ap.parse_args(argv)
    why = runner.sipp_available()
    if why is not None:
        print(f"skipped: {why}")
        return 0
    print(f"== SIP worker scaling: {args.devices} devices, {os.cpu_count()} CPUs, {args.instances} sipp ports",
          flush=True)
    db = seed(args.devices, args.seed_dir)
    workdir = Path(tempfile.mkdtemp(prefix="gbgate-scale-"))
    results: list[list[dict[str, Any]]] = []
    try:
        for w in [int(x) for x in args.workers.split(",") if x.strip()]:
            results.append(run(db, w, args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = results[0]
    print(f"\n{'step':<10} {'workers':>7} {'rate/s':>9} {'scaling':>8} {'per CPU-s':>9}  CPU s/s per process")
    for rows in results:
        for b, r in zip(base, rows, strict=True):
            scale = round(r["rate"] / b["rate"], 2) if r["rate"] and b["rate"] else None
            print(f"{r['step']:<10} {r['workers']:>7} {r['rate']!s:>9} {scale!s:>8} {r['per_cpu_s']!s:>9}  "
                  f"{r['cpu_per_s']}")
    print("BENCH_JSON " + json.dumps(results, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
