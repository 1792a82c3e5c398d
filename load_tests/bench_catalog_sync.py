"""Benchmark a whole catalog sync: a platform with N channels registers, gbgate queries its
Catalog, the platform answers in Response/Catalog pages of 4 items (as NVRs and platforms do to
stay under the MTU, gb28181.md §4.4), and gbgate stores every channel.

    python -m load_tests.bench_catalog_sync [--channels 5000]

gbgate (`gbgate serve`) and the platform (devsim, one device with N channels) are separate
processes on 127.0.0.1. The time runs from the platform's REGISTER phase starting to the moment
the database holds all N channels (polled every 20 ms with sqlite3, read-only); the gateway's CPU
seconds and RSS are measured over the same window. Budget (issue 15): 5,000 channels in ≤ 2 s.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from load_tests.bench_signalling import REPO, Gateway
from load_tests.sipp import gen_devices

DEVICE = gen_devices.PREFIX + "0000001"


def channels_stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT count(*) FROM channel WHERE device_id = ? AND removed_at IS NULL",
                               (DEVICE,)).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


def sync_once(gw: Gateway, n: int, db: Path, timeout: float) -> dict[str, float]:
    cmd = [sys.executable, "-m", "devsim", "--server", f"127.0.0.1:{gw.sip_port}", "--count", "1",
           "--password", gen_devices.PASSWORD, "--prefix", gen_devices.PREFIX, "--channels", str(n),
           "--no-media", "--plan", f"register,wait:{timeout:g},unregister", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    sw = psutil.Process(proc.pid)
    assert proc.stdout is not None
    t0 = c0 = s0 = 0.0
    for line in proc.stdout:            # wait for the REGISTER phase to begin
        if line.startswith("@@ ") and json.loads(line[3:]).get("phase") == "register":
            t0, c0 = time.monotonic(), gw.cpu()
            st = sw.cpu_times()
            s0 = st.user + st.system
            break
    deadline, done = t0 + timeout, False
    while time.monotonic() < deadline:
        if channels_stored(db) >= n:
            done = True
            break
        time.sleep(0.02)
    wall = time.monotonic() - t0
    gw_cpu = gw.cpu() - c0
    st = sw.cpu_times()
    sim_cpu = st.user + st.system - s0
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return {"ok": float(done), "wall_s": wall, "gw_cpu_s": gw_cpu, "platform_cpu_s": sim_cpu,
            "stored": float(channels_stored(db)), "gw_rss_mb": gw.rss_mb()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=5000)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gbgate-catsync-") as tmpdir:
        tmp = Path(tmpdir)
        gw = Gateway(tmp, keepalive_interval=60)
        gw.env["GBGATE_SIP__CATALOG_IDLE_TIMEOUT"] = "10"
        csv = tmp / "wl.csv"
        csv.write_text(f"device_id,password,max_channels\n{DEVICE},{gen_devices.PASSWORD},{args.channels}\n")
        out = gw.cli("whitelist", "import", str(csv), "--status", "approved")
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        gw.start()
        try:
            r = sync_once(gw, args.channels, tmp / "gbgate.db", args.timeout)
        finally:
            gw.stop()
    verdict = "ok" if r["ok"] and r["stored"] == args.channels else "INCOMPLETE"
    print(f"catalog sync of {args.channels:,} channels (pages of 4 items = {-(-args.channels // 4):,} MESSAGEs): "
          f"{r['wall_s']:.2f} s wall, gateway {r['gw_cpu_s']:.2f} CPU-s ({r['gw_cpu_s'] / r['wall_s']:.2f} CPU-s/s), "
          f"platform sim {r['platform_cpu_s']:.2f} CPU-s, gateway RSS {r['gw_rss_mb']} MB, "
          f"stored {int(r['stored']):,} [{verdict}]; budget ≤ 2 s")
    print("BENCH_JSON " + json.dumps({"bench": "catalog_sync", "channels": args.channels, **r}))
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
