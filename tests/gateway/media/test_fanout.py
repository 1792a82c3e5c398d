"""Fan-out (gateway.media.fanout): bounded queues, direct writes, the "slow" rule.

Unit tests drive a Subscription through a fake owner and clock; the rest go through the hub.
Direct FLV subscribers are checked with an in-memory transport that reports a write-buffer size we
control, and once against a real TCP transport whose send buffer fills (the end-to-end sockets are
covered by tests/interop/test_media_sipp.py, HTTP-FLV and WS-FLV read by ffprobe).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from gateway.media.fanout import FLV, FRAMES, SLOW_WINDOW_S, Framing, Subscription
from gateway.media.frames import MediaFrame
from gateway.media.hub import StreamHub
from gateway.outputs.flv_http import http_chunk, ws_binary
from tests.gateway.media.test_hub import Opener, feed, flv_tags, frame_at


class Owner:
    """A SubscriptionOwner in memory, with a clock the test sets."""

    channel_id = "c1"
    viewer_backlog = 1000

    def __init__(self) -> None:
        self.t = 100.0
        self.drops: list[str] = []
        self.slow: list[str] = []
        self.first: list[float] = []
        self.gone: list[Subscription] = []

    def now(self) -> float:
        return self.t

    def viewer_dropped(self, kind: str) -> None:
        self.drops.append(kind)

    def viewer_slow(self, kind: str) -> None:
        self.slow.append(kind)

    def viewer_first_item(self, waited: float) -> None:
        self.first.append(waited)

    def unsubscribe(self, sub: Subscription) -> None:
        self.gone.append(sub)


def overflow(sub: Subscription, owner: Owner, at: float) -> None:
    """Offer keyframes at owner time `at` until the queue overflows once."""
    owner.t = at
    before = sub.drop_events
    while sub.drop_events == before and not sub.closed:
        sub.offer(b"key", True)


async def test_time_to_first_item_is_measured_on_the_owners_clock() -> None:
    owner = Owner()
    sub = Subscription(owner, FRAMES, 4)
    assert sub.joined_at == 100.0
    sub.prime([b"a", b"b"])
    owner.t = 101.25
    assert await sub.get_batch() == [b"a", b"b"]
    sub.offer(b"c", False)
    owner.t = 200.0
    assert await sub.get_batch() == [b"c"]
    assert owner.first == [1.25] and sub.delivered == 2


async def test_overflows_spread_over_the_window_are_not_slow_but_a_burst_is() -> None:
    owner = Owner()
    sub = Subscription(owner, FRAMES, 2)
    for at in (0.0, 10.0, 20.0, 40.0, 41.0):  # any 4 in a row span more than 30 s
        overflow(sub, owner, at)
    assert sub.drop_events == 5 and not sub.closed and owner.drops == [FRAMES] * 5 and owner.slow == []
    overflow(sub, owner, 20.0 + SLOW_WINDOW_S - 0.5)  # 20, 40, 41, 49.5: within 30 s
    assert sub.closed and sub.reason == "slow" and owner.slow == [FRAMES] and owner.gone == [sub]


async def test_queue_overflow_on_a_delta_frame_waits_for_the_next_keyframe() -> None:
    owner = Owner()
    sub = Subscription(owner, FRAMES, 2)
    sub.offer(b"k0", True)
    sub.offer(b"p1", False)
    sub.offer(b"p2", False)  # full: emptied, and p2 is no place to resume
    assert len(sub) == 0 and sub.need_key and sub.dropped == 3
    sub.offer(b"p3", False)
    sub.offer(b"k4", True)
    assert await sub.get_batch() == [b"k4"] and sub.dropped == 4
    sub.close("done")
    assert await sub.get_batch() == [] and owner.gone == [sub]


async def test_wait_closed_runs_the_check_every_period_until_it_closes() -> None:
    """The viewer's idle check runs from one timer every `every` s; a check that raises is
    reported to the loop and the checks go on; a check that closes ends the wait; none is left armed."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    sub = Subscription(Owner(), FLV, 4)
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("transport gone odd")
        if calls == 4:
            sub.close("viewer_left")

    await asyncio.wait_for(sub.wait_closed(check=check, every=0.01), 2)
    assert calls == 4 and sub.reason == "viewer_left"
    assert len(errors) == 1 and isinstance(errors[0]["exception"], RuntimeError)
    other = Subscription(Owner(), FLV, 4)
    waiter = asyncio.create_task(other.wait_closed(check=lambda: None, every=0.01))
    await asyncio.sleep(0.03)
    other.close("closed")  # closed by the hub: the wait ends and its timer is cancelled
    await asyncio.wait_for(waiter, 1)
    assert not [h for h in getattr(loop, "_scheduled", []) if not h.cancelled()]
    loop.set_exception_handler(None)


def test_only_flv_goes_direct() -> None:
    sub = Subscription(Owner(), FRAMES, 2)
    with pytest.raises(ValueError, match="only FLV"):
        sub.go_direct(Wire(), http_chunk)


async def test_slow_subscriber_drops_to_keyframe_without_stalling_others() -> None:
    opener = Opener()
    hub = StreamHub(opener, queue_size=8)
    feeder = asyncio.create_task(feed(opener, "c1", range(2)))
    slow = await hub.subscribe("c1", FRAMES)
    fast = await hub.subscribe("c1", FRAMES)
    await feeder
    got_fast: list[MediaFrame] = list(await fast.get_batch())
    for k in range(2, 21):  # slow never reads: its queue overflows at 8 items
        opener.sinks["c1"].push(frame_at(k))
        got_fast += await fast.get_batch()
    assert [f.pts for f in got_fast] == [frame_at(k).pts - 7200 for k in range(21)]  # fast got everything
    assert slow.drop_events >= 1 and slow.dropped > 0 and hub.get("c1").stats.viewer_drops >= 1
    items = await slow.get_batch(100)
    assert items[0].keyframe  # after the drop it resumed at a keyframe (frame 20)
    assert items[0].data == frame_at(20).data
    assert hub.counters["viewer_drops:frames"] >= 1
    await hub.stop()


async def test_subscriber_that_stays_behind_is_disconnected() -> None:
    opener = Opener()
    hub = StreamHub(opener, queue_size=4)
    feeder = asyncio.create_task(feed(opener, "c1", range(2)))
    slow = await hub.subscribe("c1", FLV)
    await feeder
    for k in range(2, 200):
        opener.sinks["c1"].push(frame_at(k))
    assert slow.closed and slow.reason == "slow"
    assert hub.counters["viewers_disconnected:slow"] == 1
    rest = []
    async for item in slow:  # what was queued is still readable, then iteration ends
        rest.append(item)
    assert len(rest) <= 4 + 1
    await hub.stop()





class Wire:
    """What the hub needs of an asyncio transport; `backlog` is what the kernel did not take."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.backlog = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return self.closing


def dechunk(chunks: list[bytes]) -> bytes:
    out = bytearray()
    for c in chunks:
        head, _, rest = c.partition(b"\r\n")
        n = int(head, 16)
        assert rest[n:] == b"\r\n" and len(rest) == n + 2
        out += rest[:n]
    return bytes(out)


async def direct_viewers(n: int, framing: Framing, first_frames: int, **hub_kw: Any) -> tuple[
        Opener, StreamHub, list[tuple[Subscription, Wire]]]:
    """Channel c1 streaming `first_frames` frames, with `n` FLV viewers gone direct on Wires."""
    opener = Opener()
    hub = StreamHub(opener, **hub_kw)
    feeder = asyncio.create_task(feed(opener, "c1", range(first_frames)))
    subs = [await hub.subscribe("c1", FLV) for _ in range(n)]
    await feeder
    viewers = [(sub, Wire()) for sub in subs]
    for sub, wire in viewers:
        sub.go_direct(wire, framing)
    return opener, hub, viewers


async def test_direct_viewers_share_one_framed_copy_per_frame() -> None:
    opener, hub, [(a, wa), (_b, wb)] = await direct_viewers(2, http_chunk, 3)
    assert len(wa.chunks) == 1  # the queued preamble + GOP, as one chunk
    for k in range(3, 12):
        opener.sinks["c1"].push(frame_at(k))
    live_a, live_b = wa.chunks[1:], wb.chunks[1:]
    assert len(live_a) == 9 and all(x is y for x, y in zip(live_a, live_b, strict=True))
    tags = flv_tags(dechunk(wa.chunks))
    coded = [t for t in tags if t[0] == 9 and t[2][1] == 1]
    assert len(coded) == 12 and coded[0][2][0] == 0x17  # 3 from the GOP + 9 live, starting at the IDR
    assert [t[1] for t in coded] == sorted(t[1] for t in coded)
    assert a.delivered == 10
    await hub.stop()


async def test_direct_viewer_behind_skips_to_keyframe_then_is_disconnected() -> None:
    opener, hub, [(slow, ws), (fast, wf)] = await direct_viewers(2, ws_binary, 2, viewer_backlog=1000)
    ws.backlog = 5000  # the socket stopped draining
    for k in range(2, 10):
        opener.sinks["c1"].push(frame_at(k))
    assert len(ws.chunks) == 1 and slow.drop_events == 1 and slow.need_key
    ws.backlog = 0  # it drained: resumes only at the next keyframe (frame 10)
    opener.sinks["c1"].push(frame_at(10))
    assert len(ws.chunks) == 2 and ws.chunks[1][0] == 0x82
    body = ws.chunks[1][4:] if ws.chunks[1][1] == 126 else ws.chunks[1][10:]
    assert body[11] == 0x17  # an AVC keyframe tag
    assert len(wf.chunks) == 10  # the other viewer never missed a frame
    ws.backlog = 5000
    for k in range(11, 200):  # stays behind: dropped again and again, then disconnected
        opener.sinks["c1"].push(frame_at(k))
        if k % 10 == 0:
            ws.backlog = 0
            opener.sinks["c1"].push(frame_at(k))
            ws.backlog = 5000
    assert slow.closed and slow.reason == "slow"
    assert hub.counters["viewers_disconnected:slow"] == 1 and not fast.closed
    assert slow not in hub.get("c1").flv_subs
    await hub.stop()


async def test_direct_viewer_that_went_away_is_closed_at_the_next_frame() -> None:
    opener, hub, [(sub, w)] = await direct_viewers(1, http_chunk, 2, linger=0.05)
    waiter = asyncio.create_task(sub.wait_closed())
    w.closing = True
    opener.sinks["c1"].push(frame_at(2))
    await asyncio.wait_for(waiter, 1)
    assert sub.reason == "viewer_left" and len(w.chunks) == 1
    await asyncio.sleep(0.15)
    assert hub.get("c1") is None and opener.handles[0].closed == 1  # lingered, then hung up
    await hub.stop()


async def _tcp_pair() -> tuple[asyncio.Transport, socket.socket, asyncio.AbstractServer]:
    """A server-side transport on this loop (as a viewer's response has it) and the raw client socket."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[asyncio.Transport] = loop.create_future()

    class P(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            got.set_result(transport)  # type: ignore[arg-type]

    server = await loop.create_server(P, "127.0.0.1", 0)
    client = socket.create_connection(("127.0.0.1", server.sockets[0].getsockname()[1]))
    return await asyncio.wait_for(got, 5), client, server


async def test_a_tcp_viewer_gets_the_bytes_of_an_in_memory_one_also_when_the_socket_fills() -> None:
    """A direct viewer on a real TCP transport receives byte for byte what a viewer on an
    in-memory wire gets, through a send buffer that fills (the transport buffers) and drains."""
    opener = Opener()
    hub = StreamHub(opener, viewer_backlog=64 << 20)
    feeder = asyncio.create_task(feed(opener, "c1", range(2)))
    real_sub, ref_sub = await hub.subscribe("c1", FLV), await hub.subscribe("c1", FLV)
    await feeder
    transport, client, server = await _tcp_pair()
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ref = Wire()
    real_sub.go_direct(transport, http_chunk)
    ref_sub.go_direct(ref, http_chunk)
    filled = False
    for k in range(2, 60):
        f = frame_at(k)
        opener.sinks["c1"].push(MediaFrame(f.kind, f.codec, f.data + b"\x00\x00\x01\x0c" + b"\xff" * 30000, f.pts,
                                           f.dts, f.keyframe, f.stream_id, None))
        filled = filled or transport.get_write_buffer_size() > 0
    assert filled  # the kernel stopped taking it: the rest went through the transport, in order
    want = b"".join(ref.chunks)

    def read_all() -> bytes:  # the viewer, in a thread: the loop goes on draining the transport
        got = bytearray()
        client.settimeout(10)
        while len(got) < len(want):
            data = client.recv(1 << 16)
            if not data:
                break
            got += data
        return bytes(got)
    assert await asyncio.get_running_loop().run_in_executor(None, read_all) == want
    assert real_sub.delivered == ref_sub.delivered and not real_sub.dropped
    real_sub.close("viewer_left")
    transport.close()
    client.close()
    server.close()
    await hub.stop()
