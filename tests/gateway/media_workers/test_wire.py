"""The worker link's message framing, port slices, ownership and the media.workers setting."""

from __future__ import annotations

import os
import socket

import pytest

from gateway.config import ConfigError, even_ports, load_settings, media_worker_count, worker_count
from gateway.media.errors import ChannelNotFound, StreamError, StreamTimeout
from gateway.media.pool import PoolExhausted, PortPool
from gateway.media_workers.pool import owner_index, port_slices
from gateway.media_workers.wire import Unpacker, WireError, pack, recv_fd, send_fd
from gateway.media_workers.worker import error_reply, raise_reply

MESSAGES = [({"op": "tick", "streams": {"a": [1, 0]}}, b""), ({"op": "frame", "feed": 3}, bytes(range(256)) * 40),
            ({"re": 7, "ok": True}, b"")]


def test_messages_round_trip_whole_byte_by_byte_and_with_trailing_data() -> None:
    wire = b"".join(pack(m, p) for m, p in MESSAGES)
    assert Unpacker().feed(wire) == MESSAGES
    u = Unpacker()
    got = [x for i in range(len(wire)) for x in u.feed(wire[i:i + 1])]
    assert got == MESSAGES
    u = Unpacker()
    first = pack(*MESSAGES[0])
    assert u.feed(first + pack(*MESSAGES[1])[:5]) == [MESSAGES[0]]


def test_garbage_and_oversized_messages_are_refused() -> None:
    with pytest.raises(WireError):
        Unpacker().feed(b"\x00\x00\x00\x02\x00\x00\x00\x00{x")
    with pytest.raises(WireError):
        Unpacker().feed(b"\xff\xff\xff\xff\x00\x00\x00\x00")


def test_a_socket_travels_with_its_facts() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    x, y = socket.socketpair()
    with a, b, x, y:
        send_fd(a, {"key": "c1", "ws_key": ""}, x.fileno())
        got = recv_fd(b)
        assert got is not None
        facts, fd = got
        with socket.socket(fileno=fd) as dup:
            dup.sendall(b"hello")
            assert facts == {"key": "c1", "ws_key": ""} and y.recv(5) == b"hello"
        b.setblocking(False)
        assert recv_fd(b) is None


def test_port_slices_cover_the_even_ports_without_overlap() -> None:
    slices = port_slices(30000, 30999, 3)
    assert slices[0][0] == 30000 and slices[-1][1] == 30999
    ports = [p for lo, hi in slices for p in range(lo, hi, 2)]
    assert ports == list(range(30000, 31000, 2))
    with pytest.raises(ValueError):
        port_slices(30000, 30002, 3)


def test_ownership_is_stable_and_spread() -> None:
    keys = [f"340200000013200{i:05d}" for i in range(1000)]
    owners = [owner_index(k, 2) for k in keys]
    assert owners == [owner_index(k, 2) for k in keys]
    assert 400 < owners.count(0) < 600


def test_worker_count_setting() -> None:
    assert worker_count("1") == 1 and worker_count("4") == 4 and worker_count("auto", cpus=8) == 8
    assert load_settings(env={"GBGATE_MEDIA__WORKERS": "auto"}).media.workers == "auto"
    assert load_settings(env={}).media.workers == "auto"  # issue 15: one per core by default
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-1"):
        with pytest.raises(ConfigError, match=r"media\.workers"):
            load_settings(env={"GBGATE_MEDIA__WORKERS": bad})


def test_auto_never_asks_for_more_workers_than_port_slices() -> None:
    small = {"GBGATE_MEDIA__PORT_MIN": "30001", "GBGATE_MEDIA__PORT_MAX": "30006"}  # even ports 30002/4/6
    media = load_settings(env=small).media
    assert even_ports(media) == 3
    assert media_worker_count(media, cpus=8) == 3 and media_worker_count(media, cpus=2) == 2
    assert port_slices(media.port_min, media.port_max, media_worker_count(media, cpus=8)) == \
        [(30002, 30003), (30004, 30005), (30006, 30007)]
    with pytest.raises(ConfigError, match=r"media\.workers.*3"):
        load_settings(env={**small, "GBGATE_MEDIA__WORKERS": "4"})


def test_stream_errors_cross_the_link_with_their_class() -> None:
    for exc in (ChannelNotFound("no such channel"), StreamTimeout("no answer"), StreamError("x")):
        with pytest.raises(type(exc)) as got:
            raise_reply(error_reply(exc))
        assert got.value.status == exc.status and got.value.code == exc.code and str(got.value) == str(exc)
    raise_reply({"ok": True})


async def test_a_full_fd_channel_is_waited_on_not_blocked_on() -> None:
    import asyncio

    from gateway.config import MediaSettings
    from gateway.media_workers.pool import MediaWorkers

    mw = MediaWorkers(MediaSettings(port_min=45000, port_max=45099), 1, domain="3402000000")
    w = mw.workers[0]
    main_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    x, y = socket.socketpair()
    with main_end, worker_end, x, y:
        main_end.setblocking(False)
        w.fd_sock = main_end
        w.ready.set()
        w.link.lost = False
        sent = 0
        with pytest.raises(BlockingIOError):
            while True:
                send_fd(main_end, {"key": "k"}, x.fileno())
                sent += 1
        task = asyncio.create_task(mw.hand_off("k", x.fileno(), {}))
        await asyncio.sleep(0.05)
        assert not task.done()  # waiting, the loop still runs
        worker_end.setblocking(False)
        got = 0
        while (r := recv_fd(worker_end)) is not None:
            socket.close(r[1])
            got += 1
            if got == sent:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(task, 2)
        assert got == sent + 1 and mw.counters["handed_off"] == 1
        w.fd_sock = None


def test_with_workers_main_leases_its_own_ports_from_their_slices() -> None:
    """The cascade relay binds in main: with media workers its ports come from the slices' pools,
    so no port is both main's and a worker's (main's full-range pool would hand out a port a
    worker is bound to)."""
    from gateway.app.media import MediaPlane
    from gateway.media_workers.pool import MediaWorkers

    media = load_settings(env={"GBGATE_MEDIA__PORT_MIN": "30000", "GBGATE_MEDIA__PORT_MAX": "30007"}).media
    workers = MediaWorkers(media, 2, domain="3402000000")
    full = PortPool(media.port_min, media.port_max, "3402000000")
    plane = MediaPlane(full, invites=None, hub=None, workers=workers)  # type: ignore[arg-type]
    streams = [w.pool.allocate() for w in workers.workers]  # one stream on each worker
    relay = [plane.own_ports.allocate() for _ in range(2)]
    held = [lease.port for lease in streams + relay]
    assert sorted(held) == [30000, 30002, 30004, 30006] and full.in_use == 0
    with pytest.raises(PoolExhausted):
        plane.own_ports.allocate()
    assert MediaPlane(full, invites=None, hub=None).own_ports is full  # type: ignore[arg-type]
