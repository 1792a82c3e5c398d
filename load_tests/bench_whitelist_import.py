"""Benchmark `gbgate whitelist import` end to end: a fresh SQLite database, an integrator-style CSV.

Run: python -m load_tests.bench_whitelist_import [--entries N] [--status approved|pending] [--runs R]
Each run is a separate `python -m gateway … whitelist import` process (what an operator runs:
interpreter start-up, migrations, parse, HA1, store, audit), timed from outside. Prints per run the
wall time, entries per second, CPU seconds per wall second and the child's peak RSS, then checks
the audit chain with `gbgate audit verify`.
Budget (issue 15): 20,000 entries in ≤ 3 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEADER = "device_id,name,password,ip,site,link,owner,contract_ref,manufacturer,model,max_channels"


def write_csv(path: Path, n: int) -> None:
    lines = [HEADER]
    for i in range(n):
        a, b = (i >> 8) & 0xFF, i & 0xFF
        lines.append(f"3402000000132{i:07d},cam {i},pw{i:07d}x,10.{a}.{b}.7;10.{a}.{b}.0/28,site{i % 50},"
                     f"link{i % 7},owner{i % 13},C-{i % 100},Hikvision,DS-2CD{i % 9},{1 + i % 4}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBGATE_")}
    env["GBGATE_DATA_DIR"] = str(tmp)
    env["GBGATE_DATABASE__URL"] = f"sqlite:///{tmp / 'bench.db'}"
    # run the code of this checkout, not whatever `gateway` the interpreter has installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_once(n: int, status: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-wl-import-") as d:
        tmp = Path(d)
        csv_path = tmp / "list.csv"
        write_csv(csv_path, n)
        env = _env(tmp)
        # create the schema first so the timed run measures the import, not the first migration
        subprocess.run([sys.executable, "-m", "gateway", "db", "upgrade"], cwd=tmp, env=env, check=True,
                       capture_output=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "gateway", "whitelist", "import", str(csv_path),
                              "--status", status], cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if res.returncode != 0:
            raise SystemExit(f"import failed: {res.stderr.strip()}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        verify = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify"], cwd=tmp, env=env,
                                capture_output=True, text=True)
        return {"wall": wall, "cpu": cpu, "rss_mb": after.ru_maxrss / 1024, "stdout": res.stdout.strip(),
                "verify": verify.stdout.strip() or verify.stderr.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--status", default="approved", choices=["approved", "pending"])
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    for run in range(1, args.runs + 1):
        r = run_once(args.entries, args.status)
        print(f"run {run}: {args.entries} entries ({args.status}) in {r['wall']:.2f} s wall = "
              f"{args.entries / r['wall']:,.0f} entries/s; CPU {r['cpu']:.2f} s "
              f"({r['cpu'] / r['wall']:.2f} CPU-s per s); peak RSS {r['rss_mb']:.0f} MB")
        print(f"  import said: {r['stdout']}")
        print(f"  audit verify: {r['verify']}")


if __name__ == "__main__":
    main()
