"""sipp injection files for the GB/T 28181 scenarios (Python port of the Kamailio anchor's gen_devices.sh).

field0 = device ID, field1 = a sipp `[authentication username=ID password=P]` keyword (sipp does not
expand [field0] inside [authentication], but it does expand a keyword stored in an injection field).
IDs are `prefix` + 7-digit serial: 34020000001320000001 … as in the anchor, so kamailio.cfg's
preloaded table and a gbgate whitelist built by `whitelist_csv` hold the same devices.

    python -m load_tests.sipp.gen_devices OUTDIR [--count 20000] [--password 12345678]
"""

from __future__ import annotations

import argparse
from pathlib import Path

PREFIX = "3402000000132"
PASSWORD = "12345678"


def device_ids(count: int, start: int = 1, prefix: str = PREFIX) -> list[str]:
    width = 20 - len(prefix)
    return [f"{prefix}{n:0{width}d}" for n in range(start, start + count)]


def injection(ids: list[str], password: str = PASSWORD) -> str:
    lines = ["SEQUENTIAL"]
    lines += [f"{i};[authentication username={i} password={password}]" for i in ids]
    return "\n".join(lines) + "\n"


def whitelist_csv(ids: list[str], password: str = PASSWORD) -> str:
    """`gbgate whitelist import` CSV (columns device_id,name,password)."""
    return "device_id,name,password\n" + "".join(f"{i},sim {i[-7:]},{password}\n" for i in ids)


def write_all(outdir: Path, count: int = 20000, password: str = PASSWORD) -> dict[str, Path]:
    """devices.csv (known), unknown.csv (100 IDs nobody knows), badpass.csv (20 known, wrong password)."""
    outdir.mkdir(parents=True, exist_ok=True)
    files = {
        "devices": injection(device_ids(count), password),
        "unknown": injection(device_ids(100, start=50001), password),
        "badpass": injection(device_ids(20), "wrongpass"),
    }
    out = {}
    for name, text in files.items():
        path = outdir / f"{name}.csv"
        path.write_text(text)
        out[name] = path
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--password", default=PASSWORD)
    a = ap.parse_args()
    for path in write_all(Path(a.outdir), a.count, a.password).values():
        print(path)


if __name__ == "__main__":
    main()
