"""load_tests/sip_blast.py sends what sipp's keepalive.xml sends and counts honestly."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from gateway.gb.keepalive_fast import quick_keepalive
from gateway.sip import fastpath
from gateway.sip.framer import parse_datagram
from load_tests.sip_blast import KeepaliveWave

DEVICES = [[f"3402000000132000000{i}" for i in range(3)], [f"3402000000132000001{i}" for i in range(3)]]


class Responder:
    """A UDP peer that parses every request with the gateway's parser and answers 200 (the
    first `drop` requests get nothing)."""

    def __init__(self, drop: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.addr = self.sock.getsockname()
        self.drop = drop
        self.seen: list[tuple[str, str, int, str]] = []  # (From user, Call-ID, source port, keepalive device)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            msg = parse_datagram(data)
            assert msg is not None
            ka = quick_keepalive(msg.body)
            assert ka is not None
            self.seen.append((msg.from_.uri.user or "", msg.call_id, addr[1], ka.device_id))
            if len(self.seen) <= self.drop:
                continue
            s = fastpath.scan(data)
            assert s is not None  # the fast path's shape, as sipp's
            self.sock.sendto(fastpath.respond(s, 200, addr, to_tag="t"), addr)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def responder(request: pytest.FixtureRequest) -> Iterator[Responder]:
    r = Responder(getattr(request, "param", 0))
    yield r
    r.close()


def test_every_device_every_round_from_its_slice_port(responder: Responder) -> None:
    ports = free_ports(2)
    res = KeepaliveWave(responder.addr, DEVICES, ports, rounds=2, limit=2).run()
    assert (res["ok"], res["failed"]) == (12, 0)
    assert res["sipp_cpu_s"] >= 0
    assert len({call_id for _, call_id, _, _ in responder.seen}) == 12  # a fresh request each time
    for slice_devices, port in zip(DEVICES, ports, strict=True):
        sent = sorted(user for user, _, src, body_id in responder.seen if src == port and user == body_id)
        assert sent == sorted(slice_devices * 2)


@pytest.mark.parametrize("responder", [1], indirect=True)
def test_a_lost_request_is_counted_failed(responder: Responder) -> None:
    res = KeepaliveWave(responder.addr, DEVICES[:1], free_ports(1), rounds=1, limit=1, idle_timeout=0.3).run()
    assert (res["ok"], res["failed"]) == (0, 3)  # one in flight, never answered: the wave stalls
