"""A media worker's viewer socket: WS frames from the viewer, and the heartbeat main's WS-FLV has."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from gateway.media.hub import StreamHub
from gateway.media_workers.viewer import _ws_frame, serve_viewer
from tests.gateway.media.test_hub import Opener, frame_at

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def client_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.3), masked byte by byte as the RFC states it."""
    n = len(payload)
    head = bytes((0x80 | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 1 << 16:
        head += bytes((0x80 | 126,)) + struct.pack("!H", n)
    else:
        head += bytes((0x80 | 127,)) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@given(st.binary(max_size=70_000), st.binary(min_size=4, max_size=4), st.sampled_from([0x1, 0x2, 0x9, 0xA]))
def test_client_frames_are_unmasked_exactly(payload: bytes, mask: bytes, opcode: int) -> None:
    data = bytearray(client_frame(opcode, payload, mask) + b"\x81")
    assert _ws_frame(data) == (opcode, payload, len(data) - 1)
    assert _ws_frame(data[:len(data) - 2]) is None  # a frame cut short waits for the rest


def server_frames(buf: bytearray) -> list[int]:
    """Opcodes of the whole unmasked server frames at the front of `buf` (consumed)."""
    out = []
    while len(buf) >= 2:
        n, pos = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, pos = struct.unpack_from("!H", buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < pos + n:
            break
        out.append(buf[0] & 0x0F)
        del buf[:pos + n]
    return out


async def feeder(opener: Opener) -> None:
    while "c1" not in opener.sinks:
        await asyncio.sleep(0.001)
    for k in range(10_000):
        opener.sinks["c1"].push(frame_at(k))
        await asyncio.sleep(0.02)


async def ws_session(*, answer_pings: bool, seconds: float) -> tuple[str | None, list[int]]:
    """A WS-FLV viewer on a socketpair for `seconds` (heartbeat 0.2 s); (how it ended, opcodes seen)."""
    loop = asyncio.get_running_loop()
    opener = Opener()
    hub = StreamHub(opener, linger=0.05)
    feed = asyncio.create_task(feeder(opener))
    server, client = socket.socketpair()
    client.setblocking(False)
    served = asyncio.create_task(serve_viewer(hub, {"key": "c1", "ws_key": WS_KEY}, server, heartbeat=0.2))
    buf, seen = bytearray(), []
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(client, 4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        buf += head.split(b"\r\n\r\n", 1)[1]
        deadline = loop.time() + seconds
        while not served.done() and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    buf += await loop.sock_recv(client, 1 << 16)
            for op in server_frames(buf):
                seen.append(op)
                if op == 0x9 and answer_pings:
                    await loop.sock_sendall(client, client_frame(0xA, b"", os.urandom(4)))
        ended = served.result() if served.done() else None
        if ended is None:
            await loop.sock_sendall(client, client_frame(0x8, b"\x03\xe8", os.urandom(4)))
            async with asyncio.timeout(3):
                ended = await served
            assert ended == "viewer_left"
            ended = None
        return ended, seen
    finally:
        feed.cancel()
        served.cancel()
        client.close()


async def test_a_ws_viewer_that_never_answers_the_ping_is_dropped() -> None:
    ended, seen = await ws_session(answer_pings=False, seconds=3.0)
    assert ended == "no_pong"
    assert 0x9 in seen and 0x2 in seen  # pinged, after binary FLV frames


async def test_a_ws_viewer_that_answers_pings_stays() -> None:
    ended, seen = await ws_session(answer_pings=True, seconds=1.2)
    assert ended is None  # still served after several heartbeats; left only when it closed
    assert seen.count(0x9) >= 2
