"""Memory cost of digest replay protection at N devices (issue 10 #6).

Every device registers once within the nonce TTL (a registration storm: the worst case for the
ReplayGuard, which keeps one entry per nonce used in the last TTL + 6 s), with a real nonce.
Run: `python -m load_tests.bench_replay [devices]`; prints bytes in total and per device.
"""

from __future__ import annotations

import sys
import tracemalloc

from gateway.sip.digest import NonceIssuer, NonceState, ReplayGuard


def measure(devices: int = 20_000) -> tuple[int, float]:
    issuer = NonceIssuer(b"k" * 32, ttl=300)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    guard = ReplayGuard(ttl=300)
    for i in range(devices):
        # the nonce string (as parsed from the device's Authorization) stays alive as the key
        n = issuer.issue(1000.0 + i * 0.001, f"udp:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:5060")
        assert guard.accept(n, "00000001", NonceIssuer.issued_at(n), 1000.0 + i * 0.001) is NonceState.VALID
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return total, total / devices


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    total, per = measure(n)
    print(f"ReplayGuard at {n} devices: {total / 1e6:.2f} MB ({per:.0f} B per device, nonce strings included)")
