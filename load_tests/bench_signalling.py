"""Signalling benchmark: gbgate (`gbgate serve`) and the device swarm as separate processes.

    python -m load_tests.bench_signalling [--devices 20000] [--quick] [--compare-kamailio]

Prints, with the gateway's CPU seconds per second (psutil cpu_times delta / wall) and RSS:
 (a) authenticated registrations per second — N fresh devices, bounded concurrency;
 (b) keepalives per second at offered rates stepped up (1000, 2000, 5000/s by default);
 (c) N devices held at a 60 s keepalive interval;
and kernel UDP drops (/proc/net/snmp `Udp: RcvbufErrors`) for each step. With --compare-kamailio
the anchor's sipp scenarios run at the same offered rate against gbgate and the anchor's Kamailio,
and requests per CPU-second are compared. Everything is on 127.0.0.1; every process started here is
stopped here. Ends with a summary table and one JSON line (`BENCH_JSON {...}`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from load_tests.sipp import gen_devices, runner

REPO = Path(__file__).resolve().parents[1]


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the gateway binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
            return int(port)
        except OSError:
            continue
    raise RuntimeError("no free port")


def udp_rcvbuf_errors() -> int:
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=False)).get("RcvbufErrors", 0))


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all CPUs, everything but idle and iowait)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


class Gateway:
    """`python -m gateway serve` in its own temp data dir, configured by GBGATE_* variables."""

    def __init__(self, tmp: Path, *, keepalive_interval: float) -> None:
        self.tmp = tmp
        self.sip_port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "GBGATE_DATA_DIR": str(tmp), "GBGATE_DATABASE__URL": f"sqlite:///{tmp}/gbgate.db",
            "GBGATE_SIP__HOST": "127.0.0.1", "GBGATE_SIP__PORT": str(self.sip_port),
            "GBGATE_HTTP__PORT": str(free_port(socket.SOCK_STREAM)),
            "GBGATE_SIP__KEEPALIVE_INTERVAL": f"{keepalive_interval:g}",
            "GBGATE_HEALTH__JOURNAL_PATH": str(tmp / "journal" / "health.log"),
            "GBGATE_WHITELIST__SIGNING_KEY": str(tmp / "keys" / "policy.pem"),
            "GBGATE_WHITELIST__SIGNING_PUB": str(tmp / "keys" / "policy.pub.pem"),
            # every simulated device shares 127.0.0.1: lift the per-source flood guard (50/s)
            "GBGATE_WHITELIST__FLOOD_MAX_PER_SECOND": "10000000",
            "GBGATE_SIP__RCVBUF": str(8 << 20),
            # the child runs in the work dir: make it run this checkout's gateway, not whichever
            # one the interpreter has installed
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        })
        # signalling benches stream nothing: idle media workers would only add to the CPU counted
        self.env.setdefault("GBGATE_MEDIA__WORKERS", "1")
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", *args], env=self.env, cwd=self.tmp,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, timeout: float = 60) -> None:
        with open(self.tmp / "gateway.log", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=self.env, cwd=self.tmp,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gateway exited:\n" + (self.tmp / "gateway.log").read_text()[-2000:])
            if b"gbgate serving" in (self.tmp / "gateway.log").read_bytes():
                self.ps = psutil.Process(self.proc.pid)
                return
            time.sleep(0.1)
        raise RuntimeError("gateway did not start in time")

    def cpu(self) -> float:
        assert self.ps is not None
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss_mb(self) -> float:
        assert self.ps is not None
        return round(self.ps.memory_info().rss / 1e6, 1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def run_swarm(gw: Gateway, args: argparse.Namespace, plan: str) -> list[dict[str, Any]]:
    """Start the swarm process and measure the gateway between each phase's begin and end lines."""
    cmd = [sys.executable, "-m", "devsim", "--server", f"127.0.0.1:{gw.sip_port}",
           "--count", str(args.devices), "--password", gen_devices.PASSWORD, "--prefix", gen_devices.PREFIX,
           "--channels", "1", "--keepalive-interval", "60", "--concurrency", str(args.concurrency),
           "--no-media", "--plan", plan, "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, cwd=REPO)
    sw = psutil.Process(proc.pid)
    phases: list[dict[str, Any]] = []
    begin: dict[str, tuple[float, float, float, int]] = {}
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if not line.startswith("@@ "):
                continue
            ev = json.loads(line[3:])
            name, kind = ev.get("phase"), ev.get("event")
            now = time.monotonic()
            if kind == "begin":
                st = sw.cpu_times()
                begin[name] = (now, gw.cpu(), st.user + st.system, udp_rcvbuf_errors(), machine_busy())
            elif kind == "end" and name in begin:
                t0, c0, s0, d0, m0 = begin.pop(name)
                wall = max(1e-9, now - t0)
                st = sw.cpu_times()
                gw_cpu = (gw.cpu() - c0) / wall
                sw_cpu = (st.user + st.system - s0) / wall
                machine = (machine_busy() - m0) / wall
                ev.update({"gw_cpu_per_s": round(gw_cpu, 3), "gw_rss_mb": gw.rss_mb(),
                           "swarm_cpu_per_s": round(sw_cpu, 3),
                           # everything else on this (shared) machine: flags disturbed steps
                           "other_cpu_per_s": round(max(0.0, machine - gw_cpu - sw_cpu), 3),
                           "udp_rcvbuf_errors": udp_rcvbuf_errors() - d0, "wall_s": round(wall, 2)})
                phases.append(ev)
                print(f"  {name:<16} " + ", ".join(f"{k}={v}" for k, v in ev.items()
                                                   if k not in ("phase", "event", "t")), flush=True)
            elif kind == "stats":
                phases.append(ev)
            elif name == "progress":
                print(f"  … registered={ev['registered']} keepalives_acked={ev['keepalives_acked']} "
                      f"gw_rss={gw.rss_mb()} MB", flush=True)
    finally:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return phases


def compare_kamailio(gw: Gateway, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    why = runner.sipp_available()
    cfg = runner.kamailio_cfg(REPO)
    if why is None and cfg is None:
        why = f"Kamailio anchor not found at {REPO.parent / 'shared' / 'anchors' / 'kamailio'}"
    if why is None and not (runner.shutil.which("kamailio")):
        why = "kamailio is not installed (Debian: kamailio)"
    if why is not None:
        print(f"compare-kamailio skipped: {why}", flush=True)
        return {"skipped": why}
    inj = gen_devices.write_all(workdir / "inj", 20000)
    reg_calls = int(args.cmp_reg_rate * args.cmp_seconds)
    ka_calls = int(args.cmp_ka_rate * args.cmp_seconds)
    reg_ids = gen_devices.device_ids(reg_calls)
    reg_inf = workdir / "inj" / "registered.csv"
    reg_inf.write_text(gen_devices.injection(reg_ids))
    kw = {"reg_rate": args.cmp_reg_rate, "reg_calls": reg_calls, "ka_rate": args.cmp_ka_rate, "ka_calls": ka_calls}
    print(f"== compare: sipp at the same offered rates against gbgate and kamailio ({kw})", flush=True)
    assert gw.proc is not None
    gb = runner.workloads(f"127.0.0.1:{gw.sip_port}", inj["devices"], reg_inf, outdir=workdir, label="gbgate",
                          server_pids=[gw.proc.pid], port=free_port(), **kw)
    gb_rss = gw.rss_mb()
    gw.stop()  # a quiet machine for kamailio
    kam = runner.Kamailio(cfg, workdir / "kamailio")  # type: ignore[arg-type]
    try:
        kam.start()
        km = runner.workloads(f"127.0.0.1:{runner.KAMAILIO_PORT}", inj["devices"], reg_inf, outdir=workdir,
                              label="kamailio", server_pids=kam.pids(), port=free_port(), **kw)
        km_rss = kam.rss_mb()
    except RuntimeError as exc:
        print(f"compare-kamailio: kamailio failed: {exc}", flush=True)
        return {"gbgate": gb, "skipped": str(exc)}
    finally:
        kam.stop()
    rows = []
    for g, k in zip(gb, km, strict=True):
        ratio = round(g["per_cpu_s"] / k["per_cpu_s"], 3) if g["per_cpu_s"] and k["per_cpu_s"] else None
        rows.append({"workload": g["workload"], "offered_rate": g["offered_rate"],
                     "gbgate": {k2: g[k2] for k2 in ("ok", "failed", "retrans", "achieved_rate", "server_cpu_per_s",
                                                     "per_cpu_s", "sipp_rc")},
                     "kamailio": {k2: k[k2] for k2 in ("ok", "failed", "retrans", "achieved_rate",
                                                       "server_cpu_per_s", "per_cpu_s", "sipp_rc")},
                     "ratio_gbgate_over_kamailio": ratio})
    return {"rows": rows, "gbgate_rss_mb": gb_rss, "kamailio_rss_mb": km_rss}


def summary(phases: list[dict[str, Any]], cmp: dict[str, Any] | None) -> None:
    print("\n== summary (gateway process; swarm on the same machine)")
    print(f"{'workload':<34} {'rate/s':>9} {'failures':>9} {'gw CPU s/s':>10} {'gw RSS MB':>9} "
          f"{'UDP drops':>9} {'swarm CPU':>9} {'other CPU':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for p in phases:
        if p.get("event") != "end" or p["phase"].startswith(("wait", "unregister")):
            continue
        name = p["phase"]
        if name.startswith("register"):
            label = f"register {p['attempted']} (digest)"
        elif name.startswith("ka:"):
            label = f"keepalive offered {name.split(':')[1]}/s"
        else:
            label = f"hold {p.get('devices')} devices @60 s"
        fails = sum((p.get("failures") or {}).values())
        print(f"{label:<34} {p.get('rate', 0):>9} {fails:>9} {p['gw_cpu_per_s']:>10} {p['gw_rss_mb']:>9} "
              f"{p['udp_rcvbuf_errors']:>9} {p['swarm_cpu_per_s']:>9} {p['other_cpu_per_s']:>9} {p.get('p50_ms')!s:>8} "
              f"{p.get('p99_ms')!s:>8}")
    if cmp and cmp.get("rows"):
        print(f"\n{'sipp workload':<28} {'offered':>8} {'gbgate ok/s':>11} {'gb CPU':>7} {'gb req/CPU-s':>12} "
              f"{'kam ok/s':>9} {'kam CPU':>8} {'kam req/CPU-s':>13} {'ratio':>6}")
        for r in cmp["rows"]:
            g, k = r["gbgate"], r["kamailio"]
            print(f"{r['workload']:<28} {r['offered_rate']:>8g} {g['achieved_rate']:>11} {g['server_cpu_per_s']:>7} "
                  f"{g['per_cpu_s']!s:>12} {k['achieved_rate']:>9} {k['server_cpu_per_s']:>8} {k['per_cpu_s']!s:>13} "
                  f"{r['ratio_gbgate_over_kamailio']!s:>6}")
        print("(failed calls — gbgate:", [r["gbgate"]["failed"] for r in cmp["rows"]],
              "kamailio:", [r["kamailio"]["failed"] for r in cmp["rows"]], ")")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20000)
    ap.add_argument("--quick", action="store_true", help="small N and short steps (CI smoke)")
    ap.add_argument("--ka-rates", default="1000,2000,5000")
    ap.add_argument("--step-seconds", type=float, default=10.0)
    ap.add_argument("--hold-seconds", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--compare-kamailio", action="store_true")
    ap.add_argument("--compare-only", action="store_true", help="skip the swarm phases, run only the sipp comparison")
    ap.add_argument("--registrar-only", action="store_true",
                    help="gateway without post-login DeviceInfo/Catalog queries (sipp never answers them; "
                         "Kamailio sends none), to compare the registrar itself")
    ap.add_argument("--cmp-reg-rate", type=float, default=1000.0)
    ap.add_argument("--cmp-ka-rate", type=float, default=4000.0)
    ap.add_argument("--cmp-seconds", type=float, default=10.0)
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (logs, sipp stats)")
    args = ap.parse_args(argv)
    if args.quick:
        args.devices = min(args.devices, 500)
        args.step_seconds, args.hold_seconds = 2.0, 5.0
        args.cmp_reg_rate, args.cmp_ka_rate, args.cmp_seconds = 200.0, 500.0, 3.0
    tmp = Path(tempfile.mkdtemp(prefix="gbgate-bench-"))
    print(f"== gbgate signalling benchmark: {args.devices} devices, {os.cpu_count()} CPUs, work dir {tmp}", flush=True)
    gw = Gateway(tmp, keepalive_interval=60.0)
    if args.registrar_only:
        gw.env["GBGATE_SIP__QUERY_ON_REGISTER"] = "false"
        print("  registrar only: no DeviceInfo/Catalog queries after REGISTER", flush=True)
    result: dict[str, Any] = {"devices": args.devices, "quick": args.quick}
    try:
        n_wl = max(args.devices, int(args.cmp_reg_rate * args.cmp_seconds) if args.compare_kamailio else 0)
        csv_path = tmp / "whitelist.csv"
        csv_path.write_text(gen_devices.whitelist_csv(gen_devices.device_ids(n_wl)))
        t0 = time.monotonic()
        r = gw.cli("whitelist", "import", str(csv_path))
        if r.returncode != 0:
            print(f"whitelist import failed: {r.stderr.strip() or r.stdout.strip()}", file=sys.stderr)
            return 1
        result["whitelist_import_s"] = round(time.monotonic() - t0, 2)
        print(f"  whitelist import of {n_wl} entries: {result['whitelist_import_s']} s", flush=True)
        gw.start()
        result["gw_rss_idle_mb"] = gw.rss_mb()
        print(f"  gateway up on 127.0.0.1:{gw.sip_port} (PID {gw.ps.pid if gw.ps else '?'}), "
              f"RSS {result['gw_rss_idle_mb']} MB", flush=True)
        steps = [f"ka:{int(r_)}:{args.step_seconds:g}" for r_ in args.ka_rates.split(",") if r_.strip()]
        # after a registration storm the gateway queries every new device (DeviceInfo + Catalog, 16 at a
        # time); let that settle so the keepalive steps measure the steady state, not the storm's tail
        settle = max(3, round(args.devices / 300))
        plan = ",".join(["register", f"wait:{settle}", *steps, f"hold:{args.hold_seconds:g}"])
        result["phases"] = [] if args.compare_only else run_swarm(gw, args, plan)
        cmp = compare_kamailio(gw, args, tmp) if args.compare_kamailio else None
        if cmp is not None:
            result["compare_kamailio"] = cmp
        summary(result["phases"], cmp)
    finally:
        gw.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    print("BENCH_JSON " + json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
