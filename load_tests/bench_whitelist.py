"""Benchmark whitelist.decide: 100,000 entries (1–2 CIDRs each) and 1,000 range rules.

Run: python -m load_tests.bench_whitelist [--entries N] [--rules N] [--calls N]
Prints µs per call (mean, p50, p99), calls/s, CPU seconds per wall second and RSS.
Budget (issue 3): ≤ 20 µs per call.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import time
from datetime import UTC, datetime

from whitelist.decide import Policy, Request, RequestKind
from whitelist.model import Credential, Entry, EntryStatus, Rule, RuleAction


def _rss_mb() -> float:
    try:
        import psutil
        return float(psutil.Process(os.getpid()).memory_info().rss) / 2**20
    except ImportError:  # pragma: no cover
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(n_entries: int, n_rules: int, rng: random.Random) -> tuple[Policy, list[Request]]:
    shared = Credential.from_password("shared", "3402000000", "pw")
    entries = []
    for i in range(n_entries):
        device_id = f"3402000000132{i:07d}"
        a, b = (i >> 8) & 0xFF, i & 0xFF
        nets = [f"10.{a}.{b}.0/24"] if i % 2 else [f"10.{a}.{b}.7", f"fd00::{i >> 16:x}:{i & 0xFFFF:x}/128"]
        entries.append(Entry(device_id=device_id, status=EntryStatus.APPROVED, allowed_sources=nets,
                             credential=shared))
    rules = []
    for j in range(n_rules):
        length = rng.choice((6, 8, 10, 12, 14))
        prefix = "44" + "".join(rng.choice("0123456789") for _ in range(length - 2))
        rules.append(Rule(id=f"r{j}", id_prefix=prefix, type_code=rng.choice((None, "131", "132")),
                          allowed_sources=(f"172.{16 + j % 16}.0.0/16",), priority=rng.randrange(10),
                          action=RuleAction.ALLOW if j % 4 else RuleAction.DENY, credential=shared))
    policy = Policy(entries, rules)

    reqs: list[Request] = []
    for k in range(20_000):
        kind = k % 4
        i = rng.randrange(n_entries)
        a, b = (i >> 8) & 0xFF, i & 0xFF
        if kind == 0:    # known approved, right source
            src = f"10.{a}.{b}.9" if i % 2 else f"10.{a}.{b}.7"
            reqs.append(Request(f"3402000000132{i:07d}", src, "udp", RequestKind.REGISTER))
        elif kind == 1:  # unknown, covered by a rule
            j = rng.randrange(n_rules)
            r = rules[j]
            tail = "0" * (20 - len(r.id_prefix))
            device_id = r.id_prefix + tail
            if r.type_code and len(r.id_prefix) <= 10:
                device_id = device_id[:10] + r.type_code + device_id[13:]
            reqs.append(Request(device_id, f"172.{16 + j % 16}.1.2", "udp", RequestKind.MESSAGE))
        elif kind == 2:  # unknown, default deny
            reqs.append(Request(f"5{rng.randrange(10**19):019d}", "192.0.2.1", "udp", RequestKind.REGISTER))
        else:            # known, wrong source
            reqs.append(Request(f"3402000000132{i:07d}", "198.51.100.1", "tcp", RequestKind.INVITE))
    return policy, reqs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--rules", type=int, default=1_000)
    ap.add_argument("--calls", type=int, default=400_000)
    args = ap.parse_args()
    rng = random.Random(28181)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    policy, reqs = build(args.entries, args.rules, rng)
    build_s = time.perf_counter() - t0
    rss1 = _rss_mb()
    now = datetime.now(UTC)
    decide = policy.decide
    for r in reqs:                       # warm the address cache as a running gateway would be
        decide(r, now)
    gc.collect()
    n = len(reqs)
    rounds = max(1, args.calls // n)
    samples: list[float] = []
    reasons: dict[str, int] = {}
    for r in reqs:
        reasons[decide(r, now).reason.value] = reasons.get(decide(r, now).reason.value, 0) + 1
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        for r in reqs:
            decide(r, now)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    calls = rounds * n
    pc = time.perf_counter_ns
    for r in reqs:                       # per-call timing for the tail
        t = pc()
        decide(r, now)
        samples.append((pc() - t) / 1000)
    samples.sort()
    print(f"entries={args.entries} rules={args.rules} build={build_s:.2f}s mix={reasons}")
    print(f"decide: mean={wall / calls * 1e6:.2f} us  p50={samples[len(samples) // 2]:.2f} us  "
          f"p99={samples[int(len(samples) * 0.99)]:.2f} us  max={samples[-1]:.2f} us")
    print(f"rate={calls / wall:,.0f} calls/s  cpu={cpu / wall:.2f} s/s  "
          f"rss={_rss_mb():.0f} MB (policy ≈ {rss1 - rss0:.0f} MB)")


if __name__ == "__main__":
    main()
