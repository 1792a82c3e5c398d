"""SendBatch (gateway/app/sip_sendbatch.py): a loop pass's UDP answers in one sendmmsg — the same
datagrams to the same addresses in the same order as one sendto each; odd addresses, a full
socket buffer and errors handled as the transport's sendto handles them. On asyncio and uvloop."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.app.sip_sendbatch import MAX_BATCH, SendBatch


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Any], Any]]:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        yield lambda coro: uvloop.run(coro)
    else:
        yield asyncio.run


def _receiver() -> socket.socket:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    return rx


def _drain(rx: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(rx.recv(2048))
        except BlockingIOError:
            return out


async def _sender() -> tuple[socket.socket, asyncio.DatagramTransport]:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    tx.setblocking(False)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(asyncio.DatagramProtocol, sock=tx)
    return tx, transport


async def _pass() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_one_pass_leaves_in_order_in_few_calls(run: Callable[[Any], Any]) -> None:
    async def main() -> None:
        rx, rx2 = _receiver(), _receiver()
        tx, transport = await _sender()
        errors: list[int] = []
        b = SendBatch(tx, transport, lambda: errors.append(1))
        n = MAX_BATCH + 40
        for i in range(n):
            b.sendto(b"a%d" % i, rx.getsockname())
            if i % 3 == 0:
                b.sendto(b"b%d" % i, rx2.getsockname())
        assert _drain(rx) == []  # nothing before the pass ends
        await _pass()
        assert _drain(rx) == [b"a%d" % i for i in range(n)]
        assert _drain(rx2) == [b"b%d" % i for i in range(0, n, 3)]
        assert not errors
        if b.batched:
            assert b.sent_batches == 2  # one sendmmsg per MAX_BATCH datagrams
        transport.close()
        rx.close()
        rx2.close()

    run(main())


def test_an_address_sendmmsg_is_not_given_goes_to_the_transport_in_order(run: Callable[[Any], Any]) -> None:
    async def main() -> None:
        rx = _receiver()
        tx, transport = await _sender()
        errors: list[int] = []
        b = SendBatch(tx, transport, lambda: errors.append(1))
        b.sendto(b"1", rx.getsockname())
        b.sendto(b"x", ("::1", 5060))  # another family: the transport refuses it
        b.sendto(b"y", ("localhost", rx.getsockname()[1]))  # a name: the transport resolves or refuses it
        b.sendto(b"2", rx.getsockname())
        await _pass()
        got = _drain(rx)
        assert got in ([b"1", b"2"], [b"1", b"y", b"2"])
        assert len(errors) <= 2  # counted where the transport raises (uvloop), as SipEndpoint._send counts it
        transport.close()
        rx.close()

    run(main())


def test_a_full_buffer_or_an_error_is_handled_per_datagram(run: Callable[[Any], Any]) -> None:
    """sendmmsg sending part of a batch, EAGAIN (the transport queues the rest, in order), and a
    datagram the socket refuses (counted, the others still sent)."""
    async def main() -> None:
        rx = _receiver()
        tx, transport = await _sender()
        errors: list[int] = []
        b = SendBatch(tx, transport, lambda: errors.append(1))
        if not b.batched:
            pytest.skip("no sendmmsg here")
        real = b._call
        assert real is not None
        script = iter([2, -errno.EAGAIN])

        def fake(fd: int, hdr: int, k: int, flags: int) -> int:
            step = next(script, None)
            if step is None or step > 0:
                return real(fd, hdr, min(k, step or k), flags)
            import ctypes

            ctypes.set_errno(-step)
            return -1

        b._call = fake
        for i in range(6):
            b.sendto(b"%d" % i, rx.getsockname())
        await _pass()
        await asyncio.sleep(0.01)
        # 0, 1 by sendmmsg; EAGAIN: 2 by the transport, then 3, 4, 5 by the transport too
        # (it may hold 2: order first); a refused one would be counted, not resent
        got = _drain(rx)
        assert got == [b"0", b"1", b"2", b"3", b"4", b"5"]
        assert not errors
        script = iter([-errno.EPERM])
        for i in range(3):
            b.sendto(b"e%d" % i, rx.getsockname())
        await _pass()
        assert _drain(rx) == [b"e1", b"e2"] and errors == [1]
        transport.close()
        rx.close()

    run(main())


def test_nothing_is_sent_once_the_transport_closes(run: Callable[[Any], Any]) -> None:
    async def main() -> None:
        rx = _receiver()
        tx, transport = await _sender()
        b = SendBatch(tx, transport, lambda: None)
        b.sendto(b"late", rx.getsockname())
        transport.close()
        await _pass()
        assert _drain(rx) == []
        rx.close()

    run(main())
