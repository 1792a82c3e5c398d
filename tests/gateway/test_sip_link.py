"""The worker ↔ main link: `send_later` reports are coalesced per key and never overtake a `send`."""

from __future__ import annotations

import asyncio
import socket

from gateway.app import sip_link
from gateway.app.sip_ipc import Kind, Message
from gateway.app.sip_link import Link


async def _pair() -> tuple[Link, list[Message], list[int]]:
    """A worker-side Link and what main's side reads (messages, and the reads they came in)."""
    a, b = socket.socketpair()
    loop = asyncio.get_running_loop()
    got: list[Message] = []
    reads: list[int] = []

    class Main(Link):
        def data_received(self, data: bytes) -> None:
            reads.append(len(data))
            super().data_received(data)

    _, worker = await loop.create_unix_connection(lambda: Link(lambda m: None), sock=a)
    await loop.create_unix_connection(lambda: Main(got.append), sock=b)
    return worker, got, reads


async def _until(cond: object, limit: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond() and loop.time() < end:  # type: ignore[operator]
        await asyncio.sleep(0.002)


async def test_later_reports_keep_the_latest_per_key_and_go_ahead_of_a_send() -> None:
    worker, got, _ = await _pair()
    worker.send_later(("ka", "A"), Kind.KEEPALIVE, "A", 1.0)
    worker.send_later(("ka", "B"), Kind.KEEPALIVE, "B", 2.0)
    worker.send_later(("ka", "A"), Kind.KEEPALIVE, "A", 3.0)  # replaces A's first, moves after B
    worker.send(Kind.UNREGISTER, "A", 4.0)
    await _until(lambda: len(got) >= 3)
    await asyncio.sleep(sip_link.COALESCE_S * 2)  # nothing else is still on its way
    assert got == [(Kind.KEEPALIVE, "B", 2.0), (Kind.KEEPALIVE, "A", 3.0), (Kind.UNREGISTER, "A", 4.0)]
    worker.close()


async def test_later_reports_alone_leave_after_the_window_in_one_write() -> None:
    worker, got, reads = await _pair()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(200):
        worker.send_later(("ka", f"D{i % 50}"), Kind.KEEPALIVE, f"D{i % 50}", float(i))
    await asyncio.sleep(0)  # one loop iteration: a plain `send` would have been written by now
    assert got == []
    await _until(lambda: len(got) >= 50)
    assert loop.time() - t0 >= sip_link.COALESCE_S * 0.9
    assert got == [(Kind.KEEPALIVE, f"D{i % 50}", float(i)) for i in range(150, 200)]
    assert len(reads) == 1
    worker.close()


async def test_close_writes_what_was_held() -> None:
    worker, got, _ = await _pair()
    worker.send_later(("login", "A"), Kind.LOGIN, 0, "A", "10.0.0.1", 5060, "c1", "", "", 3600, 1.0)
    worker.close()
    await _until(lambda: len(got) >= 1)
    assert got == [(Kind.LOGIN, 0, "A", "10.0.0.1", 5060, "c1", "", "", 3600, 1.0)]
