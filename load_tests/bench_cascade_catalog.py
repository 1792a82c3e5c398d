"""Benchmark the cascade's Catalog answer: how long an upper platform waits for 5,000 channels.

    python -m load_tests.bench_cascade_catalog [--channels 5000] [--per-message 1 20]

gbgate (`gbgate serve`, configured with one `[[cascade]]` upper) and a simulated 5,000-channel
platform (devsim) run as separate processes; the upper is played by this process: a UDP socket
that answers REGISTER and every MESSAGE with 200 at once and sends `Query/Catalog` once the
channels are admitted. Timed from the query to the last `Response/Catalog` item (SumNum reached),
with the gateway's CPU seconds over the same window. Each page waits for the previous page's 200
(gb28181.md §7.3, WVP's pacing), so the figure is round trips × per-page cost; `--per-message`
runs the answer once per page size (1 = WVP's default).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sqlite3
import tempfile
import time
from pathlib import Path

from gateway.gb.builders import build_query
from gateway.sip.message import Request, make_response, parse_message, serialize
from load_tests.bench_catalog_sync import DEVICE, channels_stored, sync_once
from load_tests.bench_signalling import Gateway, free_port
from load_tests.sipp import gen_devices

UPPER, UPPER_DOMAIN = "44000000002000000001", "4400000000"
_SUMNUM = re.compile(rb"<SumNum>(\d+)</SumNum>")
_NUM = re.compile(rb'<DeviceList Num="(\d+)"')


class Upper:
    """The upper platform's signalling, blocking and minimal: enough to be registered to and to ask."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port()))
        self.port = self.sock.getsockname()[1]
        self.registered = False

    def answer_one(self, timeout: float) -> tuple[Request | None, bytes]:
        """Receive one datagram; answer a request 200; return it (None for responses)."""
        self.sock.settimeout(timeout)
        data, addr = self.sock.recvfrom(65536)
        msg = parse_message(data)
        if not isinstance(msg, Request):
            return None, data
        headers = [("Expires", "3600")] if msg.method == "REGISTER" else []
        self.sock.sendto(serialize(make_response(msg, 200, to_tag="up1", headers=headers)), addr)
        if msg.method == "REGISTER":
            self.registered = True
        return msg, msg.body

    def wait_registered(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not self.registered:
            self.answer_one(max(0.01, end - time.monotonic()))

    def query(self, gw_port: int, sn: int) -> None:
        body = build_query("Catalog", sn, "34020000002000000001")
        text = (f"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bKbench{sn}\r\n"
                f"From: <sip:{UPPER}@{UPPER_DOMAIN}>;tag=q{sn}\r\nTo: <sip:34020000002000000001@3402000000>\r\n"
                f"Call-ID: bench-query-{sn}@127.0.0.1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
                f"Content-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n")
        self.sock.sendto(text.encode() + body, ("127.0.0.1", gw_port))

    def collect(self, sn: int, timeout: float) -> tuple[int, int, int]:
        """(items received, SumNum, pages) of the Response/Catalog with this SN."""
        items = pages = 0
        total = -1
        end = time.monotonic() + timeout
        while time.monotonic() < end and items != total:
            try:
                req, body = self.answer_one(max(0.01, end - time.monotonic()))
            except TimeoutError:
                break
            if req is None or req.method != "MESSAGE" or b"<CmdType>Catalog</CmdType>" not in body \
                    or f"<SN>{sn}</SN>".encode() not in body:
                continue
            s, n = _SUMNUM.search(body), _NUM.search(body)
            total = int(s.group(1)) if s else total
            items += int(n.group(1)) if n else 0
            pages += 1
        return items, total, pages


def run(args: argparse.Namespace) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="gbgate-cascat-") as tmpdir:
        tmp = Path(tmpdir)
        upper = Upper()
        gw = Gateway(tmp, keepalive_interval=60)
        config = tmp / "cascade.toml"
        config.write_text(f'[[cascade]]\nid = "{UPPER}"\ndomain = "{UPPER_DOMAIN}"\nhost = "127.0.0.1"\n'
                          f'port = {upper.port}\nkeepalive_interval = 60\n'
                          f'catalog_per_message = {args.per_message[0]}\n', encoding="utf-8")
        gw.env["GBGATE_CONFIG"] = str(config)
        (tmp / "wl.csv").write_text(f"device_id,password,max_channels\n{DEVICE},{gen_devices.PASSWORD},"
                                    f"{args.channels}\n")
        gw.cli("whitelist", "import", str(tmp / "wl.csv"), "--status", "approved")
        results = []
        for per in args.per_message:
            config.write_text(config.read_text().rsplit("catalog_per_message", 1)[0]
                              + f"catalog_per_message = {per}\n", encoding="utf-8")
            gw.start()
            try:
                upper.registered = False
                upper.wait_registered(30)
                if channels_stored(tmp / "gbgate.db") < args.channels:
                    sync = sync_once(gw, args.channels, tmp / "gbgate.db", 60)
                    assert sync["ok"], "the simulated platform's catalog did not arrive"
                sn = 100 + per
                c0, t0 = gw.cpu(), time.monotonic()
                upper.query(gw.sip_port, sn)
                items, total, pages = upper.collect(sn, args.timeout)
                wall, cpu = time.monotonic() - t0, gw.cpu() - c0
            finally:
                gw.stop()
            r = {"per_message": per, "items": items, "sum_num": total, "pages": pages, "wall_s": round(wall, 3),
                 "gw_cpu_s": round(cpu, 2), "ms_per_page": round(1000 * wall / max(1, pages), 3)}
            print(f"catalog answer, {per} item(s) per message: {items:,} of SumNum {total:,} in {pages:,} pages, "
                  f"{wall:.2f} s wall ({r['ms_per_page']} ms per paced page), gateway {cpu:.2f} CPU-s"
                  + ("" if items == total else "  [INCOMPLETE]"), flush=True)
            results.append(r)
        out = results
        with sqlite3.connect(tmp / "gbgate.db") as db:
            shared = db.execute("SELECT count(*) FROM channel WHERE exposed = 1").fetchone()[0]
        print(f"(admitted channels in the store: {shared:,})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=5000)
    ap.add_argument("--per-message", type=int, nargs="+", default=[1, 20])
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    results = run(args)
    print("BENCH_JSON " + json.dumps({"bench": "cascade_catalog", "channels": args.channels, "runs": results}))
    return 0 if all(r["items"] == r["sum_num"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
