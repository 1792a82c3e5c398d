"""The cBPF steering program of a SO_REUSEPORT group (gateway/sip/reuseport.py), on real sockets."""

from __future__ import annotations

import socket
import time

import pytest

from gateway.sip import reuseport


def expected_index(port: int, workers: int, addr: int = 0x7F000001) -> int:
    """What the program computes for 127.0.0.1:port (a test-side copy of its arithmetic)."""
    return ((((addr ^ port) * 0x9E3779B1) & 0xFFFFFFFF) >> 16) % workers + 1


def test_program_is_whole_instructions() -> None:
    assert len(reuseport.program(2)) % 8 == 0
    with pytest.raises(ValueError):
        reuseport.program(0)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_datagrams_go_to_workers_by_source_never_to_main(workers: int) -> None:
    group: list[socket.socket] = []
    senders: list[socket.socket] = []
    try:
        port = 0
        for _ in range(workers + 1):  # index 0 = main, bound first
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", port))
            port = s.getsockname()[1]
            s.setblocking(False)
            group.append(s)
        reuseport.attach(group[0], workers)
        for _ in range(40):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.bind(("127.0.0.1", 0))
            senders.append(c)
            for _ in range(2):  # the same source twice: the same socket twice
                c.sendto(str(c.getsockname()[1]).encode(), ("127.0.0.1", port))
        time.sleep(0.1)
        seen: dict[int, set[int]] = {}
        for index, s in enumerate(group):
            while True:
                try:
                    data = s.recv(100)
                except BlockingIOError:
                    break
                seen.setdefault(int(data), set()).add(index)
        assert len(seen) == 40
        for src, where in seen.items():
            assert where == {expected_index(src, workers)}, src
        assert 0 not in set().union(*seen.values())
    finally:
        for s in group + senders:
            s.close()
