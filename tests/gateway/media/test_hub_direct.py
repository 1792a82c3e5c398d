"""Direct FLV subscribers: the hub writes each frame straight into the viewer's transport.

Checked here with an in-memory transport that reports a write-buffer size we control (the real
sockets are covered by tests/interop/test_media_sipp.py, HTTP-FLV and WS-FLV read by ffprobe).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.media.hub import FLV, Framing, StreamHub, Subscription
from gateway.outputs.flv_http import http_chunk, ws_binary
from tests.gateway.media.test_hub import Opener, feed, flv_tags, frame_at


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


def test_ws_binary_frame_lengths() -> None:
    assert ws_binary(b"x" * 5)[:2] == b"\x82\x05"
    assert ws_binary(b"x" * 300)[:4] == b"\x82\x7e\x01\x2c"
    big = ws_binary(b"x" * 70000)
    assert big[:2] == b"\x82\x7f" and int.from_bytes(big[2:10], "big") == 70000 and len(big) == 70010
    assert http_chunk(b"abc") == b"3\r\nabc\r\n"
