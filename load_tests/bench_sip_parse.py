"""SIP hot-path benchmark: parse a keepalive MESSAGE and an authenticated REGISTER, build and
serialise the 200 OK, and the whole server path (parse → transaction → respond).

Messages come from a pool of distinct devices with fresh branch/tag/Call-ID each, like real
traffic, so the URI intern cache sees what it would see in production.

    python -m load_tests.bench_sip_parse [--n 200000] [--devices 20000]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable

from gateway.sip import Peer, TransactionLayer, make_response, parse_credentials, parse_message, serialize

KA_BODY = (
    b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>43</SN>\r\n'
    b"<DeviceID>%s</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
)


def keepalive(dev: str, i: int) -> bytes:
    body = KA_BODY % dev.encode()
    return (
        f"MESSAGE sip:44010600002000000001@4401060000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.168.{i // 250 % 250}.{i % 250 + 1}:5060;rport;branch=z9hG4bK{i:010d}\r\n"
        f"From: <sip:{dev}@4401060000>;tag={i * 7919 % 10**9:09d}\r\n"
        f"To: <sip:44010600002000000001@4401060000>\r\n"
        f"Call-ID: {i * 104729 % 10**10}\r\n"
        f"CSeq: 20 MESSAGE\r\n"
        f"Content-Type: Application/MANSCDP+xml\r\n"
        f"Max-Forwards: 70\r\n"
        f"User-Agent: IP Camera\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def register(dev: str, i: int) -> bytes:
    return (
        f"REGISTER sip:44010600002000000001@4401060000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.168.1.108:5060;rport;branch=z9hG4bK{i:010d}\r\n"
        f"From: <sip:{dev}@4401060000>;tag={i:09d}\r\n"
        f"To: <sip:{dev}@4401060000>\r\n"
        f"Call-ID: {i}\r\n"
        f"CSeq: 2 REGISTER\r\n"
        f"Contact: <sip:{dev}@192.168.1.108:5060>\r\n"
        f'Authorization: Digest username="{dev}", realm="4401060000", '
        f'nonce="8f2c1d6e9a3b47c0b5e4d21f6a7c9e30", uri="sip:44010600002000000001@4401060000", '
        f'response="990b33666d9318d1c6f496086be91942", algorithm=MD5\r\n'
        f"Max-Forwards: 70\r\nUser-Agent: IP Camera\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def measure(name: str, n: int, fn: Callable[[int], object]) -> None:
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # CPU time per message is the figure to compare: wall time includes other processes.
    print(f"{name:34s} {n / cpu:9.0f} msg/CPU-s  {cpu / n * 1e6:7.2f} µs CPU/msg  "
          f"(wall {wall / n * 1e6:6.2f} µs, cpu {cpu / wall:4.2f} s/s)  maxrss {rss:6.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=20_000)
    args = ap.parse_args()
    n, ndev = args.n, args.devices
    devs = [f"440106000013200{k:05d}" for k in range(ndev)]
    pool = 20_000
    kas = [keepalive(devs[i % ndev], i) for i in range(pool)]
    regs = [register(devs[i % ndev], i) for i in range(pool)]
    print(f"pid {os.getpid()}  keepalive {len(kas[0])} B  register {len(regs[0])} B  devices {ndev}  n {n}")

    measure("parse keepalive MESSAGE", n, lambda i: parse_message(kas[i % pool]))
    hot = kas[0]
    measure("parse same keepalive (hot cache)", n, lambda i: parse_message(hot))

    def reg(i: int) -> None:
        m = parse_message(regs[i % pool])
        parse_credentials(m.headers.get("Authorization") or "")

    measure("parse REGISTER + Authorization", n, reg)
    req = parse_message(kas[0])
    assert not isinstance(req, type(None))
    measure("make + serialise 200 OK", n, lambda i: serialize(
        make_response(req, 200, to_tag="5d02e7b1", received=("192.168.1.108", 5060))))  # type: ignore[arg-type]

    layer = TransactionLayer()
    peer = Peer("udp", "192.168.1.108", 5060)

    def full(i: int) -> None:
        msg = parse_message(kas[i % pool] if i < pool else keepalive(devs[i % ndev], i))
        for ev in layer.receive(msg, peer, i / 5000):
            key = getattr(ev, "key", None)
            if key is not None:
                layer.respond(key, make_response(msg, 200), i / 5000)  # type: ignore[arg-type]
        layer.handle_timer(i / 5000)

    measure("server path (parse→txn→200 OK)", min(n, 100_000), full)
    print(f"live server transactions {len(layer)} (Timer J 32 s at 5,000/s simulated clock)")


if __name__ == "__main__":
    main()
