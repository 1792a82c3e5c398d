"""Re-registration storm: N whitelisted devices registered, then all re-register at once.

    python -m load_tests.bench_reregister_storm [--devices 20000] [--workers 1,2] [--instances 4]

The devices are sipp (the anchor's reg_auth.xml: digest REGISTER; `-cid_str` makes each device's
Call-ID the same in both phases, so phase 2 is refreshes, RFC 3261 §10.2.4) split over
`--instances` sipp processes, each one UDP source port — so SO_REUSEPORT spreads them
over the SIP workers as it would spread real devices' addresses. Phase 1 registers every device
(new logins, paced at `--login-rate`); phase 2 runs the same devices again with no pacing limit
beyond `--storm-rate` (refreshes: same Call-ID). Printed per `sip.workers` value: the time to absorb
the storm (first REGISTER sent → last 200 received, sipp's own clock), the time until main's database
holds every refreshed binding (the storm recorded, not only answered: a refresh's 200 leaves the
worker before main has seen it, and no timer is on that path), the rate, CPU seconds per process (main and
each worker), the kernel's UdpRcvbufErrors over the storm, calls failed/retransmitted, and the
device offline events the ledger got during the storm (false offlines: target 0).

The 20,000-entry whitelist is imported once (`gbgate whitelist import`, slow) and the database file
kept in `--seed-dir` for later runs. Every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from load_tests.bench_signalling import Gateway, free_port, machine_busy, udp_rcvbuf_errors
from load_tests.sipp import gen_devices, runner

REPO = Path(__file__).resolve().parents[1]
SIPP_DIR = Path(__file__).resolve().parent / "sipp"


def group_position(port: int, workers: int) -> int:
    """The SIP worker slot the steering program (gateway/sip/reuseport.py) picks for 127.0.0.1:port."""
    return ((((0x7F000001 ^ port) * 0x9E3779B1) & 0xFFFFFFFF) >> 16) % workers + 1


def udp_drops(ports: set[int]) -> dict[int, list[int]]:
    """Per-socket drop counters (/proc/net/udp) of the sockets bound to `ports`: who overflowed."""
    out: dict[int, list[int]] = {}
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            cols = line.split()
            port = int(cols[1].split(":")[1], 16)
            if port in ports:
                out.setdefault(port, []).append(int(cols[-1]))
    return out


def balanced_ports(count: int, workers: int) -> list[int]:
    """Free UDP ports on 127.0.0.1 that land on the workers in turn (1, 2, …, 1, 2, …)."""
    out: list[int] = []
    while len(out) < count:
        port = free_port()
        if port + 1 in out or port in out:
            continue
        if workers <= 1 or group_position(port, workers) == len(out) % workers + 1:
            out.append(port)
    return out


def seed(devices: int, seed_dir: Path) -> Path:
    """A database with `devices` whitelisted devices (imported once, then copied)."""
    db = seed_dir / f"seed-{devices}.db"
    if db.exists():
        return db
    seed_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gbgate-seed-"))
    gw = Gateway(tmp, keepalive_interval=60.0)
    gw.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    csv_path = tmp / "whitelist.csv"
    csv_path.write_text(gen_devices.whitelist_csv(gen_devices.device_ids(devices)))
    t0 = time.monotonic()
    r = gw.cli("whitelist", "import", str(csv_path))
    if r.returncode != 0:
        raise RuntimeError(f"whitelist import failed: {r.stderr.strip() or r.stdout.strip()}")
    print(f"  seeded {devices} whitelist entries in {time.monotonic() - t0:.1f} s", flush=True)
    shutil.copy(tmp / "gbgate.db", db)
    shutil.rmtree(tmp, ignore_errors=True)
    return db


class Node:
    """`python -m gateway serve` from this checkout with `sip.workers`, on a copy of the seed database."""

    def __init__(self, db: Path, workers: int, tmp: Path, rcvbuf: int = 8 << 20) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        shutil.copy(db, tmp / "gbgate.db")
        self.gw = Gateway(tmp, keepalive_interval=60.0)
        self.gw.env.update({"GBGATE_SIP__WORKERS": str(workers), "GBGATE_SIP__QUERY_ON_REGISTER": "false",
                            "GBGATE_SIP__RCVBUF": str(rcvbuf),
                            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        self.workers = workers
        self.db = tmp / "gbgate.db"

    def start(self) -> None:
        self.gw.start()
        deadline = time.monotonic() + 30
        while self.workers > 1 and len(self.worker_pids()) < self.workers and time.monotonic() < deadline:
            time.sleep(0.1)

    def main_pid(self) -> int:
        assert self.gw.proc is not None
        return self.gw.proc.pid

    def worker_pids(self) -> list[int]:
        try:
            return [c.pid for c in psutil.Process(self.main_pid()).children() if "sip_worker" in " ".join(c.cmdline())]
        except psutil.Error:
            return []

    def cpu(self) -> dict[str, float]:
        out = {"main": runner.cpu_seconds([self.main_pid()])}
        for i, pid in enumerate(self.worker_pids(), 1):
            out[f"worker{i}"] = runner.cpu_seconds([pid])
        return out

    def offline_events(self, since: float) -> int:
        with sqlite3.connect(self.db) as con:
            rows = con.execute("SELECT ts FROM device_event WHERE kind = 'offline'").fetchall()
        from datetime import datetime

        return sum(1 for (ts,) in rows if datetime.fromisoformat(str(ts)).timestamp() >= since - 1)

    def binding_expiries(self) -> list[float]:
        """device_binding.expires_at of every binding main has written, as epoch seconds."""
        from datetime import UTC, datetime

        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as con:
            rows = con.execute("SELECT expires_at FROM device_binding").fetchall()
        out = []
        for (ts,) in rows:
            dt = datetime.fromisoformat(str(ts))
            out.append((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp())
        return out

    def wait_recorded(self, since: float, before: float, count: int, timeout: float = 10.0) -> float | None:
        """Seconds from `since` until main's database holds `count` bindings written in the storm
        (expiring after `before` + 1, the latest expiry before it: the 2 s pause separates them);
        None: not within `timeout` after the call. The storm recorded, not only answered."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if sum(1 for t in self.binding_expiries() if t > before + 1) >= count:
                    return time.time() - since
            except sqlite3.Error:
                pass
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def stop(self) -> None:
        self.gw.stop()


def sipp_wave(target: str, slices: list[Path], ports: list[int], *, rate: float, outdir: Path, tag: str,
              scenario: str = "reg_auth.xml", rounds: int = 1, limit: int = 100000) -> dict[str, Any]:
    """One sipp per slice, all at once (each slice `rounds` times over, at most `limit` calls in
    flight per sipp); returns totals once every instance has finished."""
    procs = []
    per_rate = rate / len(slices)
    for i, (inf, port) in enumerate(zip(slices, ports, strict=True)):
        calls = (sum(1 for _ in inf.open()) - 1) * rounds
        stf = outdir / f"{tag}_{i}_stat.csv"
        stf.unlink(missing_ok=True)
        cmd = ["sipp", target, "-sf", str(SIPP_DIR / scenario), "-inf", str(inf), "-t", "u1", "-i", "127.0.0.1",
               "-p", str(port), "-cid_str", f"%u-{i}@storm", "-r", f"{per_rate:g}", "-rp", "1000",
               "-m", str(calls), "-l", str(limit), "-buff_size", str(8 << 20),
               "-recv_timeout", "10000", "-timeout", "120s", "-nostdin", "-trace_stat", "-stf", str(stf), "-fd", "1",
               "-trace_err", "-error_file", str(outdir / f"{tag}_{i}_err.log")]
        procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=outdir), stf))
    t0 = time.monotonic()
    total = {"ok": 0, "failed": 0, "retrans": 0, "elapsed_s": 0.0, "sipp_cpu_s": 0.0}
    for proc, stf in procs:
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        total["sipp_cpu_s"] += ru.ru_utime + ru.ru_stime
        try:
            st = runner.parse_stat(stf)
        except (OSError, KeyError, IndexError, ValueError):
            st = {"ok": 0, "failed": -1, "retrans": 0, "elapsed_s": time.monotonic() - t0}
        for k in ("ok", "failed", "retrans"):
            total[k] += st[k]
        total["elapsed_s"] = max(total["elapsed_s"], st["elapsed_s"])
    total["wall_s"] = round(time.monotonic() - t0, 2)
    total["sipp_cpu_s"] = round(total["sipp_cpu_s"], 2)
    return total


def slices_for(devices: int, instances: int, workdir: Path) -> list[Path]:
    ids = gen_devices.device_ids(devices)
    out = []
    for i in range(instances):
        path = workdir / f"devices_{i}of{instances}.csv"
        path.write_text(gen_devices.injection(ids[i::instances]))
        out.append(path)
    return out


def run_one(db: Path, workers: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    node = Node(db, workers, workdir / f"w{workers}", rcvbuf=args.rcvbuf)
    slices = slices_for(args.devices, args.instances, workdir)
    ports = balanced_ports(args.instances, workers)
    node.start()
    target = f"127.0.0.1:{node.gw.sip_port}"
    try:
        print(f"== sip.workers = {workers}: main PID {node.main_pid()}, workers {node.worker_pids()}", flush=True)
        login = sipp_wave(target, slices, ports, rate=args.login_rate, outdir=workdir, tag=f"w{workers}_login",
                          limit=args.storm_limit)
        print(f"  phase 1, {args.devices} logins: {login}", flush=True)
        time.sleep(2.0)  # let the login wave's ledger writes settle
        before = max(node.binding_expiries(), default=0.0)
        cpu0, drops0, since, busy0 = node.cpu(), udp_rcvbuf_errors(), time.time(), machine_busy()
        storm = sipp_wave(target, slices, ports, rate=args.storm_rate, outdir=workdir, tag=f"w{workers}_storm",
                          limit=args.storm_limit)
        cpu1, drops1, busy1 = node.cpu(), udp_rcvbuf_errors(), machine_busy()
        by_socket = udp_drops({node.gw.sip_port})  # sipp's sockets are closed by now
        recorded = node.wait_recorded(since, before, storm["ok"])
        time.sleep(2.0)  # the device writer flushes in batches
        absorb = storm["elapsed_s"]
        ours = sum(cpu1.values()) - sum(cpu0.values()) + storm["sipp_cpu_s"]
        other = round(max(0.0, busy1 - busy0 - ours), 2)  # the rest of this shared machine: flags a disturbed run
        res = {
            "workers": workers, "devices": args.devices, "storm_ok": storm["ok"], "storm_failed": storm["failed"],
            "storm_retrans": storm["retrans"], "absorb_s": round(absorb, 2),
            "recorded_s": None if recorded is None else round(recorded, 2),
            "rate_per_s": round(storm["ok"] / absorb, 1) if absorb else None,
            "cpu_s": {k: round(cpu1.get(k, 0.0) - cpu0.get(k, 0.0), 2) for k in cpu1} | {"sipp": storm["sipp_cpu_s"]},
            "udp_rcvbuf_errors": drops1 - drops0, "gateway_socket_drops": by_socket,
            "false_offlines": node.offline_events(since), "other_cpu_s": other,
            "login": login,
        }
        print(f"  phase 2, storm: absorbed {res['storm_ok']} re-registrations in {res['absorb_s']} s "
              f"({res['rate_per_s']}/s; in main's database after {res['recorded_s']} s), "
              f"failed {res['storm_failed']}, retrans {res['storm_retrans']}, "
              f"CPU s {res['cpu_s']}, UdpRcvbufErrors {res['udp_rcvbuf_errors']} "
              f"(gateway sockets since start: {by_socket}), "
              f"false offlines {res['false_offlines']}, other processes' CPU {other} s", flush=True)
        return res
    finally:
        node.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--instances", type=int, default=4, help="sipp processes (one source port each)")
    ap.add_argument("--login-rate", type=float, default=3000.0)
    ap.add_argument("--storm-rate", type=float, default=20000.0, help="offered REGISTER rate of the storm")
    ap.add_argument("--storm-limit", type=int, default=100000,
                    help="REGISTERs in flight per sipp (default: no limit — a burst; the kernel buffers and "
                         "the devices' retransmissions absorb what the gateway cannot take at once)")
    ap.add_argument("--rcvbuf", type=int, default=8 << 20, help="sip.rcvbuf of the gateway's UDP sockets")
    ap.add_argument("--seed-dir", type=Path, default=Path(tempfile.gettempdir()) / "gbgate-bench-seed")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    why = runner.sipp_available()
    if why is not None:
        print(f"skipped: {why}")
        return 0
    print(f"== re-registration storm: {args.devices} devices, {os.cpu_count()} CPUs, "
          f"{args.instances} sipp source ports", flush=True)
    db = seed(args.devices, args.seed_dir)
    workdir = Path(tempfile.mkdtemp(prefix="gbgate-storm-"))
    results = []
    try:
        for w in [int(x) for x in args.workers.split(",") if x.strip()]:
            results.append(run_one(db, w, args, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'workers':>7} {'absorb s':>9} {'rate/s':>9} {'failed':>7} {'retrans':>8} {'drops':>6} "
          f"{'false off':>9} {'other CPU':>9}  CPU s per process")
    for r in results:
        print(f"{r['workers']:>7} {r['absorb_s']:>9} {r['rate_per_s']!s:>9} {r['storm_failed']:>7} "
              f"{r['storm_retrans']:>8} {r['udp_rcvbuf_errors']:>6} {r['false_offlines']:>9} {r['other_cpu_s']:>9}  "
              f"{r['cpu_s']}")
    print("BENCH_JSON " + json.dumps(results, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    sys.exit(main())
