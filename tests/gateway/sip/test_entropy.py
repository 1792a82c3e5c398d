"""The shared pool of OS random bytes behind tags, branches, Call-IDs and nonces."""

from __future__ import annotations

import os
import threading

import pytest

from gateway.sip import entropy
from gateway.sip.digest import NonceIssuer
from gateway.sip.message import new_branch, new_call_id, new_tag


def test_identifiers_keep_their_shapes_and_never_repeat_across_refills() -> None:
    tags = [new_tag() for _ in range(5000)]  # 25,000 bytes: several 4 KiB refills
    assert all(len(t) == 10 and int(t, 16) >= 0 for t in tags)
    assert len(set(tags)) == len(tags)
    branch = new_branch()
    assert branch.startswith("z9hG4bK") and len(branch) == 7 + 16
    call_id, _, host = new_call_id("192.0.2.1").partition("@")
    assert len(call_id) == 24 and host == "192.0.2.1"


def test_each_byte_is_handed_out_once_in_order() -> None:
    pool = entropy.EntropyPool(size=64)
    got = b"".join(pool.take(5) for _ in range(40))  # refills every 12 takes
    assert len(got) == 200
    # 200 OS-random bytes: a repeated 5-byte draw would mean bytes were handed out twice
    draws = [got[i:i + 5] for i in range(0, 200, 5)]
    assert len(set(draws)) == len(draws)
    assert len(pool.take(100)) == 100  # more than one refill holds: drawn at once


def test_concurrent_threads_never_get_the_same_bytes() -> None:
    pool = entropy.EntropyPool(size=512)
    out: list[list[bytes]] = [[] for _ in range(4)]

    def draw(k: int) -> None:
        for _ in range(3000):
            out[k].append(pool.take(6))

    threads = [threading.Thread(target=draw, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [b for chunk in out for b in chunk]
    assert len(set(everything)) == len(everything) == 12000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
def test_a_forked_child_does_not_repeat_its_parents_bytes() -> None:
    entropy.POOL.take(1)  # the parent holds a filled pool
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tags, to the parent
        try:
            os.write(w, "".join(new_tag() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(w)
    child = b""
    while chunk := os.read(r, 4096):
        child += chunk
    os.close(r)
    os.waitpid(pid, 0)
    parent = "".join(new_tag() for _ in range(50)).encode()
    assert len(child) == len(parent) == 500
    assert child != parent


def test_nonces_draw_their_random_part_from_the_pool() -> None:
    issuer = NonceIssuer(b"k" * 100)  # a secret longer than BLAKE2b's 64-byte key: hashed down
    nonces = {issuer.issue(1000.0, "udp:192.0.2.1:5060") for _ in range(3000)}
    assert len(nonces) == 3000  # same millisecond, told apart by the random part alone
    assert all(len(n) == 48 for n in nonces)
