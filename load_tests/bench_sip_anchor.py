"""SIP cost per request against the Kamailio anchor: the same sipp scenarios, the same stepped
rates, one run on one machine, gbgate and Kamailio side by side.

    python -m load_tests.bench_sip_anchor [--reg-rates 1000,2000] [--ka-rates 2000,4000]
                                          [--seconds 4] [--repeat 1] [--tcp] [--with-queries] [--keep]
                                          [--gateway-src DIR]

The anchor is ../shared/anchors/kamailio (README there): its kamailio.cfg is started as is (it
listens on 127.0.0.1:5070) and its sipp scenarios (reg_auth.xml, keepalive.xml) are run from
there, unchanged, against both servers; the injection files are the anchor's format
(load_tests/sipp/gen_devices.py, same device IDs and password 12345678). gbgate is
`python -m gateway serve` from this checkout with a whitelist of those devices (realm
3402000000), the per-source flood guard lifted (every sipp call comes from 127.0.0.1) and, unless
--with-queries, no DeviceInfo/Catalog queries after a login (Kamailio sends none and sipp would
not answer them). Each registration step uses fresh device IDs (every call is a new login); the
re-registration step registers the first step's devices again from the same address (refreshes);
the keepalive steps use devices both servers registered in the first step.

Per step and server: calls ok/failed, retransmissions, achieved rate, the server's CPU seconds
per second (utime+stime of its processes from /proc/<pid>/stat, including the work it finishes
after sipp stops — gbgate persists logins in batches — until it is quiet again, divided by the
sipp run's wall time), requests per CPU-second and the
kernel's UDP receive-buffer drops (/proc/net/snmp RcvbufErrors, machine-wide, over the step).
The ratio is gbgate's requests per CPU-second over Kamailio's in the same step. The machine is
shared: compare ratios within one run. A server's CPU over a short step is a few hundred ms read in
10 ms ticks per process (Kamailio runs about ten), so one step's figure can be off by several
per cent and the machine's state drifts between steps: `--repeat N` runs each step N times with
the servers alternating, and reports each server's median run and the median of the N paired
ratios (each repetition's registrations use their own fresh IDs). Every process started here is
stopped here, by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load_tests.bench_signalling import Gateway, free_port, machine_busy, udp_rcvbuf_errors
from load_tests.sipp import gen_devices, runner

REPO = Path(__file__).resolve().parents[1]
ANCHOR = REPO.parent / "shared" / "anchors" / "kamailio"
KAMAILIO_IDS = 20000  # the anchor's kamailio.cfg preloads this many devices


def settle(pids: list[int], *, quiet: float = 0.01, window: float = 0.5, limit: float = 20.0) -> float:
    """Wait until `pids` use under `quiet` CPU-s per `window` (at most `limit` s); seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        c0 = runner.cpu_seconds(pids)
        time.sleep(window)
        if runner.cpu_seconds(pids) - c0 < quiet:
            break
    return round(time.monotonic() - t0, 1)


@dataclass(slots=True)
class Server:
    name: str
    target: str
    pids: list[int]


@dataclass(frozen=True, slots=True)
class Step:
    workload: str  # "register" (fresh IDs: new logins) | "reregister" (refreshes) | "keepalive"
    transport: str  # sipp -t: u1 | t1
    rate: int
    infs: tuple[Path, ...]  # the injection file of each repetition (a registration's: fresh IDs each)

    @property
    def inf(self) -> Path:
        return self.infs[0]


def run_step(server: Server, step: Step, seconds: float, outdir: Path, local_port: int, rep: int = 0) -> dict[str, Any]:
    """One sipp run of the anchor's scenario at `step.rate` for `seconds`; the server's CPU is
    charged over the run (sipp arguments as the anchor's bench.py sets them). `local_port`: the
    devices' address — keepalives come from where they registered (gbgate answers 404 otherwise)."""
    scenario = ANCHOR / ("keepalive.xml" if step.workload == "keepalive" else "reg_auth.xml")
    calls = int(step.rate * seconds)
    tag = f"{server.name}_{step.workload}_{step.transport}_{step.rate}_{rep}"
    stf = outdir / f"{tag}_stat.csv"
    cmd = ["sipp", server.target, "-sf", str(scenario), "-inf", str(step.infs[rep]), "-t", step.transport,
           "-i", "127.0.0.1", "-p", str(local_port), "-r", str(step.rate), "-rp", "1000", "-m", str(calls),
           "-l", str(max(2000, step.rate * 2)), "-recv_timeout", "5000", "-timeout", f"{int(seconds * 3 + 30)}s",
           "-max_recv_loops", "10000", "-max_sched_loops", "10000", "-buff_size", "4194304", "-nostdin",
           "-trace_stat", "-stf", str(stf), "-fd", "1", "-trace_err", "-error_file", str(outdir / f"{tag}_err.log")]
    drops0, cpu0, busy0, t0 = udp_rcvbuf_errors(), runner.cpu_seconds(server.pids), machine_busy(), time.monotonic()
    with open(os.devnull, "w") as devnull:
        proc = subprocess.Popen(cmd, stdout=devnull, stderr=subprocess.STDOUT, cwd=outdir)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    in_run = runner.cpu_seconds(server.pids) - cpu0
    sipp_cpu = ru.ru_utime + ru.ru_stime
    # everything else on this shared machine meanwhile (other users, kernel work): flags a disturbed step
    other = max(0.0, (machine_busy() - busy0) - in_run - sipp_cpu) / wall
    # work the requests left behind (gbgate persists logins and health events in batches after
    # answering) is charged to this step, and does not leak into the next one
    tail_s = settle(server.pids)
    cpu = runner.cpu_seconds(server.pids) - cpu0
    res: dict[str, Any] = {"server": server.name, "workload": step.workload, "transport": step.transport,
                           "offered_rate": step.rate, "calls": calls, "sipp_rc": os.waitstatus_to_exitcode(status),
                           "wall_s": round(wall, 2), "server_cpu_s": round(cpu, 3),
                           "server_cpu_per_s": round(cpu / wall, 3), "sipp_cpu_s": round(sipp_cpu, 2),
                           "other_cpu_per_s": round(other, 2),
                           "server_cpu_during_run_s": round(in_run, 3), "tail_s": tail_s,
                           "udp_rcvbuf_errors": udp_rcvbuf_errors() - drops0}
    try:
        res.update(runner.parse_stat(stf))
    except (OSError, KeyError, IndexError, ValueError) as exc:
        res.update({"ok": 0, "failed": calls, "retrans": 0, "elapsed_s": wall, "stat_error": str(exc)})
    res["achieved_rate"] = round(res["ok"] / max(1e-9, res["elapsed_s"]), 1)
    res["per_cpu_s"] = round(res["ok"] / cpu, 1) if cpu > 0 else None
    return res


def plan(args: argparse.Namespace, inj: Path) -> list[Step]:
    """Registration steps on disjoint blocks of fresh IDs (one block per repetition), a
    re-registration of the first block, then keepalives from the first block."""
    steps: list[Step] = []
    start = 1
    reg = [("u1", int(r)) for r in args.reg_rates.split(",") if r.strip()]
    ka = [("u1", int(r)) for r in args.ka_rates.split(",") if r.strip()]
    if args.tcp:
        # registration only: gbgate binds a TCP registration to its connection (issue 10 #5), so a
        # keepalive from the next sipp run's new connection is refused by design (404)
        reg.append(("t1", reg[0][1]))
    first: Path | None = None
    for transport, rate in reg:
        n = int(rate * args.seconds)
        blocks = []
        for rep in range(args.repeat):
            if start + n - 1 > KAMAILIO_IDS:
                raise SystemExit(f"registration steps need {start + n - 1} fresh IDs or more; "
                                 f"the anchor knows {KAMAILIO_IDS}")
            path = inj / f"reg_{transport}_{rate}_{rep}.csv"
            path.write_text(gen_devices.injection(gen_devices.device_ids(n, start=start)))
            blocks.append(path)
            start += n
        first = first or blocks[0]
        steps.append(Step("register", transport, rate, tuple(blocks)))
    assert first is not None
    # the first block again, from the same address: refreshes of live registrations (a re-registration
    # storm), where gbgate has no login to record
    steps.append(Step("reregister", "u1", reg[0][1], (first,) * args.repeat))
    for transport, rate in ka:
        steps.append(Step("keepalive", transport, rate, (first,) * args.repeat))
    return steps


def start_gbgate(tmp: Path, n_ids: int, *, queries: bool, src: Path | None = None) -> Gateway:
    gw = Gateway(tmp, keepalive_interval=60.0)
    if src is not None:  # another checkout's gateway (e.g. the base commit, for a before/after)
        gw.env["PYTHONPATH"] = str(src)
    gw.env["GBGATE_SIP__DOMAIN"] = "3402000000"
    if not queries:
        gw.env["GBGATE_SIP__QUERY_ON_REGISTER"] = "false"
    csv_path = tmp / "whitelist.csv"
    csv_path.write_text(gen_devices.whitelist_csv(gen_devices.device_ids(n_ids)))
    r = gw.cli("whitelist", "import", str(csv_path))
    if r.returncode != 0:
        raise SystemExit(f"whitelist import failed: {r.stderr.strip() or r.stdout.strip()}")
    gw.start()
    return gw


def start_floor() -> tuple[subprocess.Popen[bytes], Server]:
    """load_tests/sip_floor on a free port, once it listens."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "load_tests.sip_floor", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()  # "sip_floor PID … on …" once bound
    return proc, Server("floor", f"127.0.0.1:{port}", [proc.pid])


def port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def summarize(step: Step, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One table row from a step's repetitions: each server's median run (by requests per
    CPU-second; every run is kept under `runs`), and the ratios as the median of each
    repetition's own ratio — gbgate and Kamailio ran back to back, on the same machine state."""
    def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
        ordered = sorted(results, key=lambda r: r["per_cpu_s"] or 0.0)
        return ordered[(len(ordered) - 1) // 2]

    def median_ratio(a: str, b: str) -> float | None:
        ratios = [x for x in (_ratio(ra["per_cpu_s"], rb["per_cpu_s"]) for ra, rb in zip(runs[a], runs[b],
                                                                                        strict=True)) if x]
        return statistics.median(ratios) if ratios else None

    row: dict[str, Any] = {"workload": step.workload, "transport": step.transport, "offered_rate": step.rate,
                           **{name: median_run(results) for name, results in runs.items()},
                           "ratio": median_ratio("gbgate", "kamailio"),
                           "ratios": [_ratio(g["per_cpu_s"], k["per_cpu_s"])
                                      for g, k in zip(runs["gbgate"], runs["kamailio"], strict=True)],
                           "runs": runs}
    if "floor" in runs:
        row["floor_ratio"] = median_ratio("floor", "kamailio")  # the best a CPython server reaches
        row["of_floor"] = median_ratio("gbgate", "floor")
    return row


def table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'workload':<20} {'rate/s':>7} | {'gbgate ok/s':>11} {'fail':>5} {'retr':>5} {'drops':>6} "
          f"{'CPU-s/s':>7} {'req/CPU-s':>9} | {'kam ok/s':>8} {'fail':>5} {'retr':>5} {'drops':>6} {'CPU-s/s':>7} "
          f"{'req/CPU-s':>9} | {'ratio':>5} | other CPU gb/kam")
    for r in rows:
        g, k = r["gbgate"], r["kamailio"]
        name = f"{r['workload']} {'UDP' if r['transport'] == 'u1' else 'TCP'}"
        print(f"{name:<20} {r['offered_rate']:>7} | {g['achieved_rate']:>11} {g['failed']:>5} {g['retrans']:>5} "
              f"{g['udp_rcvbuf_errors']:>6} {g['server_cpu_per_s']:>7} {g['per_cpu_s']!s:>9} | "
              f"{k['achieved_rate']:>8} {k['failed']:>5} {k['retrans']:>5} {k['udp_rcvbuf_errors']:>6} "
              f"{k['server_cpu_per_s']:>7} {k['per_cpu_s']!s:>9} | {r['ratio']!s:>5} | "
              f"{g['other_cpu_per_s']}/{k['other_cpu_per_s']}"
              + (f" | ratios {r['ratios']}" if len(r["ratios"]) > 1 else ""))
    floors = [r for r in rows if "floor" in r]
    if floors:
        print(f"\n{'workload':<20} {'rate/s':>7} | {'floor ok/s':>10} {'fail':>5} {'CPU-s/s':>7} {'req/CPU-s':>9} | "
              f"{'floor/kam':>9} | {'gbgate/floor':>12}")
        for r in floors:
            f = r["floor"]
            name = f"{r['workload']} {'UDP' if r['transport'] == 'u1' else 'TCP'}"
            print(f"{name:<20} {r['offered_rate']:>7} | {f['achieved_rate']:>10} {f['failed']:>5} "
                  f"{f['server_cpu_per_s']:>7} {f['per_cpu_s']!s:>9} | {r['floor_ratio']!s:>9} | {r['of_floor']!s:>12}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reg-rates", default="1000,2000")
    ap.add_argument("--ka-rates", default="2000,4000")
    ap.add_argument("--seconds", type=float, default=4.0, help="per step and server")
    ap.add_argument("--tcp", action="store_true", help="also a TCP registration step (first rate)")
    ap.add_argument("--with-queries", action="store_true", help="gbgate queries DeviceInfo/Catalog after login")
    ap.add_argument("--gateway-src", type=Path, help="run the gateway of this source tree (default: this checkout)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, sipp stats)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each step N times, the servers alternating; the table shows each server's median "
                         "run and the median of the repetitions' ratios (registration steps need N blocks of "
                         "fresh IDs: at most 20,000 in all)")
    ap.add_argument("--floor", action="store_true",
                    help="also run the same steps against load_tests/sip_floor (a bare uvloop responder: "
                         "what CPython pays per request before any work)")
    args = ap.parse_args(argv)
    cfg = runner.kamailio_cfg(REPO)
    why = runner.sipp_available() or (None if cfg else f"no anchor at {ANCHOR}")
    if why is None and not shutil.which("kamailio"):
        why = "kamailio is not installed (Debian: kamailio)"
    if why is None and port_busy(runner.KAMAILIO_PORT):
        why = f"127.0.0.1:{runner.KAMAILIO_PORT} is taken (another Kamailio anchor running?)"
    if why is not None:
        print(f"bench_sip_anchor: skipped: {why}", flush=True)
        return 2
    assert cfg is not None
    tmp = Path(tempfile.mkdtemp(prefix="gbgate-sip-anchor-"))
    inj = tmp / "inj"
    inj.mkdir()
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    steps = plan(args, inj)
    n_ids = sum(int(s.rate * args.seconds) * len(s.infs) for s in steps if s.workload == "register")
    print(f"== SIP anchor bench: {os.cpu_count()} CPUs, {args.seconds:g} s per step and server, work dir {tmp}",
          flush=True)
    gw: Gateway | None = None
    floor: subprocess.Popen[bytes] | None = None
    kam = runner.Kamailio(cfg, tmp / "kamailio")
    rows: list[dict[str, Any]] = []
    ports: dict[tuple[str, Path], int] = {}
    try:
        gw = start_gbgate(tmp, n_ids, queries=args.with_queries, src=args.gateway_src)
        assert gw.proc is not None
        kam.start()
        servers = [Server("gbgate", f"127.0.0.1:{gw.sip_port}", [gw.proc.pid]),
                   Server("kamailio", f"127.0.0.1:{runner.KAMAILIO_PORT}", kam.pids())]
        print(f"  gbgate PID {gw.proc.pid} on {servers[0].target}; kamailio PIDs {servers[1].pids}", flush=True)
        if args.floor:
            floor, floor_server = start_floor()
            servers.append(floor_server)
            print(f"  floor PID {floor.pid} on {floor_server.target}", flush=True)
        for step in steps:
            runs: dict[str, list[dict[str, Any]]] = {server.name: [] for server in servers}
            for rep in range(args.repeat):  # the servers alternate, so each repetition's pair shares the machine
                for server in servers:
                    port = ports.setdefault((server.name, step.infs[rep]), free_port())
                    res = run_step(server, step, args.seconds, tmp, port, rep)
                    runs[server.name].append(res)
                    print(f"  {server.name:<8} {step.workload:<10} {step.transport} {step.rate:>6}/s: ok={res['ok']} "
                          f"failed={res['failed']} retrans={res['retrans']} {res['achieved_rate']}/s "
                          f"CPU {res['server_cpu_per_s']} s/s -> {res['per_cpu_s']} req/CPU-s, "
                          f"drops {res['udp_rcvbuf_errors']}, other load {res['other_cpu_per_s']} CPU "
                          f"(tail {res['tail_s']} s, "
                          f"{res['server_cpu_during_run_s']} CPU-s during the run)", flush=True)
                    time.sleep(0.5)
            rows.append(summarize(step, runs))
    finally:
        kam.stop()
        if floor is not None:
            floor.terminate()
            floor.wait(10)
        if gw is not None:
            gw.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    table(rows)
    print("BENCH_JSON " + json.dumps({"rows": rows}, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
