"""Where gbgate's CPU goes per authenticated registration end to end, thread by thread.

    python -m load_tests.bench_sip_threads [--rate 1000] [--seconds 5] [--anchor DIR] [--py-spy FILE]

Starts `python -m gateway serve` as bench_sip_anchor does (same whitelist, no post-login queries,
media.workers 1), measures its idle CPU per thread for 5 s, then runs the anchor's reg_auth.xml
with sipp at `--rate` fresh devices per second (REGISTER → 401 → REGISTER+digest → 200, every
call a new login) and prints, per thread of the gateway, the CPU (user and system) and the
voluntary/involuntary context switches per registration, counted from /proc/<pid>/task/*/stat
and status over the run and the tail after sipp stops (until the gateway is quiet again) — the
same charging as bench_sip_anchor. `--py-spy FILE` also records the gateway with py-spy
(--nonblocking, raw format) for the run. The machine may be shared: read the split, not the sum.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from load_tests.bench_signalling import free_port
from load_tests.bench_sip_anchor import ANCHOR, settle, start_gbgate
from load_tests.sipp import gen_devices, runner


def thread_times(pid: int) -> dict[str, list[float]]:
    """Thread "name/tid" → [user s, system s, voluntary switches, involuntary switches]."""
    tck = os.sysconf("SC_CLK_TCK")
    out: dict[str, list[float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = {k: float(v) for k, _, v in (line.partition(":\t") for line in status.splitlines())
                    if k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")}
        out[f"{name}/{tid}"] = [int(fields[11]) / tck, int(fields[12]) / tck,
                                switches.get("voluntary_ctxt_switches", 0.0),
                                switches.get("nonvoluntary_ctxt_switches", 0.0)]
    return out


def delta(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, list[float]]:
    zero = [0.0, 0.0, 0.0, 0.0]
    return {k: [a - b for a, b in zip(v, before.get(k, zero), strict=True)] for k, v in after.items()}


def report(title: str, d: dict[str, list[float]], per: float, unit: str) -> None:
    print(f"  {title}:")
    rows = sorted(d.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
    for name, (user, system, vol, invol) in rows:
        if user + system == 0 and vol + invol == 0:
            continue
        print(f"    {name:<28} user {user * 1e6 / per:8.1f} µs  system {system * 1e6 / per:7.1f} µs  "
              f"switches {vol / per:6.2f} voluntary, {invol / per:6.2f} involuntary  {unit}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--anchor", type=Path, default=ANCHOR, help="the Kamailio anchor (its reg_auth.xml)")
    ap.add_argument("--py-spy", type=Path, help="record the gateway with py-spy into this raw file")
    args = ap.parse_args(argv)
    scenario = args.anchor / "reg_auth.xml"
    why = runner.sipp_available() or (None if scenario.is_file() else f"no {scenario}")
    if why is not None:
        print(f"bench_sip_threads: skipped: {why}", flush=True)
        return 2
    n = int(args.rate * args.seconds)
    tmp = Path(tempfile.mkdtemp(prefix="gbgate-sip-threads-"))
    gw = start_gbgate(tmp, n + 10, queries=False)
    spy: subprocess.Popen[bytes] | None = None
    try:
        assert gw.proc is not None
        pid = gw.proc.pid
        time.sleep(2)
        t0 = thread_times(pid)
        time.sleep(5)
        report("idle, per second", delta(t0, thread_times(pid)), 5.0, "per s")
        inj = tmp / "reg.csv"
        inj.write_text(gen_devices.injection(gen_devices.device_ids(n)))
        cmd = ["sipp", f"127.0.0.1:{gw.sip_port}", "-sf", str(scenario), "-inf", str(inj), "-t", "u1",
               "-i", "127.0.0.1", "-p", str(free_port()), "-r", str(args.rate), "-rp", "1000", "-m", str(n),
               "-l", str(max(2000, args.rate * 2)), "-recv_timeout", "5000",
               "-timeout", f"{int(args.seconds * 3 + 30)}s", "-max_recv_loops", "10000",
               "-max_sched_loops", "10000", "-buff_size", "4194304", "-nostdin", "-trace_stat",
               "-stf", str(tmp / "stat.csv"), "-fd", "1"]
        if args.py_spy is not None:
            exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            spy = subprocess.Popen([exe, "record", "-r", "100", "--nonblocking", "--format", "raw", "--threads",
                                    "-o", str(args.py_spy), "--pid", str(pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        before, cpu0, start = thread_times(pid), runner.cpu_seconds([pid]), time.monotonic()
        with open(os.devnull, "w") as devnull:
            subprocess.run(cmd, stdout=devnull, stderr=subprocess.STDOUT, cwd=tmp, check=False)
        wall = time.monotonic() - start
        tail = settle([pid])
        after, cpu1 = thread_times(pid), runner.cpu_seconds([pid])
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            spy = None
        stat = runner.parse_stat(tmp / "stat.csv")
        ok = int(stat["ok"])
        cpu = cpu1 - cpu0
        print(f"bench_sip_threads: {ok} registrations ok, {stat['failed']} failed, {stat['retrans']} retransmissions "
              f"in {wall:.1f} s (+{tail} s tail); gateway {cpu:.2f} CPU-s = {cpu / wall:.2f} CPU s/s, "
              f"{cpu / max(ok, 1) * 1e6:.0f} µs per registration, {ok / cpu if cpu else 0:.0f} per CPU-second, "
              f"RSS {gw.rss_mb()} MB", flush=True)
        report("run and tail, per registration", delta(before, after), max(ok, 1), "per registration")
    finally:
        if spy is not None:
            spy.kill()
            spy.wait()
        gw.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
