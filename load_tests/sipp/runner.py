"""Run the Kamailio anchor's sipp scenarios against a SIP server and charge its CPU (psutil).

Used by `bench_signalling --compare-kamailio`: the same scenario files (copied here from
../shared/anchors/kamailio, target host:port on the sipp command line) at the same offered rate
against kamailio and against gbgate, so requests per CPU-second can be compared in one run.
Everything talks to 127.0.0.1; kamailio is started from the anchor's kamailio.cfg and stopped by
its PID (it stops its own children).
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
KAMAILIO_PORT = 5070  # fixed in the anchor's kamailio.cfg


def sipp_available() -> str | None:
    """None if sipp is installed, else why not."""
    return None if shutil.which("sipp") else "sipp is not installed (Debian: sip-tester)"


def kamailio_cfg(repo_root: Path) -> Path | None:
    cfg = Path(repo_root).parent / "shared" / "anchors" / "kamailio" / "kamailio.cfg"
    return cfg if cfg.is_file() else None


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def tree(pid: int) -> list[int]:
    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.Error:
        return [pid]


def parse_stat(path: Path) -> dict[str, Any]:
    """Last row of sipp's -trace_stat CSV: calls ok/failed, retransmissions, elapsed seconds."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    d = dict(zip(rows[0], rows[-1], strict=False))

    def epoch(v: str) -> float:
        return float(v.split("\t")[-1])

    return {
        "ok": int(d["SuccessfulCall(C)"]), "failed": int(d["FailedCall(C)"]),
        "retrans": int(d["Retransmissions(C)"]),
        "elapsed_s": epoch(d["CurrentTime"]) - epoch(d["StartTime"]),
    }


def run_sipp(target: str, scenario: str, inf: Path, *, rate: float, calls: int, local_port: int,
             outdir: Path, tag: str, server_pids: list[int], transport: str = "u1") -> dict[str, Any]:
    """One sipp run at `rate` calls/s for `calls` calls; the server's CPU is charged over it."""
    stf = outdir / f"{tag}_stat.csv"
    stf.unlink(missing_ok=True)
    cmd = ["sipp", target, "-sf", str(HERE / scenario), "-inf", str(inf), "-t", transport,
           "-i", "127.0.0.1", "-p", str(local_port), "-r", f"{rate:g}", "-rp", "1000", "-m", str(calls),
           "-recv_timeout", "5000", "-timeout", f"{int(calls / rate * 3 + 30)}s", "-nostdin",
           "-trace_stat", "-stf", str(stf), "-fd", "1", "-trace_err", "-error_file", str(outdir / f"{tag}_err.log")]
    c0, t0 = cpu_seconds(server_pids), time.monotonic()
    with open(os.devnull, "w") as devnull:
        proc = subprocess.Popen(cmd, stdout=devnull, stderr=subprocess.STDOUT, cwd=outdir)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(server_pids) - c0
    res: dict[str, Any] = {"tag": tag, "scenario": scenario, "offered_rate": rate, "calls": calls,
                           "sipp_rc": os.waitstatus_to_exitcode(status), "wall_s": round(wall, 2),
                           "server_cpu_s": round(cpu, 3), "server_cpu_per_s": round(cpu / wall, 3),
                           "sipp_cpu_s": round(ru.ru_utime + ru.ru_stime, 3)}
    try:
        res.update(parse_stat(stf))
    except (OSError, KeyError, IndexError, ValueError) as exc:
        res.update({"ok": 0, "failed": calls, "retrans": 0, "elapsed_s": wall, "stat_error": str(exc)})
    res["achieved_rate"] = round(res["ok"] / max(1e-9, res["elapsed_s"]), 1)
    res["per_cpu_s"] = round(res["ok"] / cpu, 1) if cpu > 0 else None
    return res


def workloads(target: str, inf: Path, reg_inf: Path, *, outdir: Path, server_pids: list[int], label: str,
              reg_rate: float, reg_calls: int, ka_rate: float, ka_calls: int, port: int) -> list[dict[str, Any]]:
    """REGISTER with digest (fresh IDs), then Keepalive MESSAGE from the devices just registered, from
    the address they registered from: gbgate answers a keepalive only from a device's bound address
    (elsewhere 404), and with SIP workers the source port also picks the worker."""
    out = [run_sipp(target, "reg_auth.xml", inf, rate=reg_rate, calls=reg_calls, local_port=port,
                    outdir=outdir, tag=f"{label}_reg", server_pids=server_pids)]
    out.append(run_sipp(target, "keepalive.xml", reg_inf, rate=ka_rate, calls=ka_calls, local_port=port,
                        outdir=outdir, tag=f"{label}_ka", server_pids=server_pids))
    out[0]["workload"], out[1]["workload"] = "register (digest, UDP)", "keepalive MESSAGE (UDP)"
    return out


class Kamailio:
    """The anchor's kamailio, started in the foreground (-DD) so Popen.pid is its main process."""

    def __init__(self, cfg: Path, rundir: Path) -> None:
        self.cfg, self.rundir = cfg, rundir
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl = f"unixs:{rundir}/kamailio_ctl"

    def start(self, timeout: float = 30.0) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        with open(self.rundir / "kamailio.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["kamailio", "-DD", "-E", "-f", str(self.cfg), "-m", "256", "-M", "8", "-A", f'CTL_SOCK="{self.ctl}"'],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamailio exited: see {self.rundir / 'kamailio.log'}")
            if b"device table loaded" in (self.rundir / "kamailio.log").read_bytes():
                time.sleep(0.5)
                return
            time.sleep(0.2)
        raise RuntimeError("kamailio did not start")

    def pids(self) -> list[int]:
        assert self.proc is not None
        return tree(self.proc.pid)

    def rss_mb(self) -> float:
        return round(sum(_rss(p) for p in self.pids()) / 1e6, 1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        children = []
        for pid in self.pids():
            if pid != self.proc.pid:
                with contextlib.suppress(psutil.Error):
                    children.append(psutil.Process(pid))
        self.proc.terminate()  # main process; it terminates its own children …
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        # … usually: a child can outlive it (seen: 2 of 10, orphaned, still bound to the anchor's
        # port, so the next run found 127.0.0.1:5070 taken)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        _, alive = psutil.wait_procs(children, timeout=3)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()


def _rss(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0
