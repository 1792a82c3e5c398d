"""Random bytes for SIP identifiers (tags, branches, Call-IDs, nonces' random parts), drawn from
the OS in 4 KiB refills instead of one getrandom() each.

The bytes are the OS's, as `secrets.token_hex` gives them; only the syscall is shared. That
matters beyond the syscall itself: `os.urandom` releases the GIL, and while the store's writer
thread waits for it, each release hands the GIL over and back — a registration paid several
µs of CPU per identifier for that. Fork-safe (a child starts with an empty pool, so no two
processes hand out the same bytes) and thread-safe (the cursor moves under a lock).
"""

from __future__ import annotations

import os
import threading

_REFILL = 4096


class EntropyPool:
    """OS random bytes handed out once each, in order, refilled `size` bytes at a time."""

    __slots__ = ("_buf", "_lock", "_pos", "size")

    def __init__(self, size: int = _REFILL) -> None:
        self.size = size
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bytes:
        """`n` bytes never handed out before (n ≤ size)."""
        with self._lock:
            pos = self._pos
            if pos + n > len(self._buf):
                self._buf, pos = os.urandom(max(self.size, n)), 0
            self._pos = pos + n
            return self._buf[pos:pos + n]

    def reset(self) -> None:
        """Forget the pool (a forked child must not repeat its parent's bytes)."""
        self._buf, self._pos, self._lock = b"", 0, threading.Lock()


POOL = EntropyPool()
os.register_at_fork(after_in_child=POOL.reset)


def token_hex(nbytes: int) -> str:
    """`secrets.token_hex(nbytes)`, from the shared pool."""
    return POOL.take(nbytes).hex()
