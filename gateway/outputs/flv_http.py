"""HTTP-FLV and WS-FLV responses over a hub subscription (issue 4 §4).

The hub muxes each frame into FLV once. Here the subscription goes *direct*: after the preamble
and cached GOP are sent, the hub writes every new tag straight into the viewer's transport,
wrapped once per frame in this output's framing (`http_chunk`, `ws_binary`) and shared by every
viewer of that framing — no per-viewer task wake-up, queue or copy on the hot path.

HTTP-FLV is a chunked response that never ends on its own; WS-FLV sends the same bytes as binary
messages (what flv.js / mpegts.js expect; server frames are unmasked, so identical for all
viewers). A viewer that goes away is noticed at the next write, or by a periodic liveness check
while the stream is stalled; its subscription is closed so the hub can linger and hang up. A
viewer whose socket falls `media.viewer_backlog` bytes behind skips to the next keyframe, and is
disconnected ("slow") if that keeps happening.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable

from aiohttp import WSMsgType, web

from gateway.media.fanout import Subscription

IDLE_CHECK_S = 1.0


def http_chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (RFC 9112 §7.1) carrying `data`."""
    return b"".join((b"%x\r\n" % len(data), data, b"\r\n"))


def ws_binary(data: bytes) -> bytes:
    """One unmasked, final WebSocket binary frame (RFC 6455 §5.2) carrying `data`."""
    n = len(data)
    if n < 126:
        head = bytes((0x82, n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x82, 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 127, n)
    return head + data


def _gone(request: web.Request) -> bool:
    t = request.transport
    return t is None or t.is_closing()


async def _until_closed(sub: Subscription, gone: Callable[[], bool]) -> None:
    """Wait for the hub or the viewer to end the subscription (a viewer gone is noticed within
    IDLE_CHECK_S even when no frame comes)."""
    def check() -> None:
        if gone():
            sub.close("viewer_left")
    await sub.wait_closed(check=check, every=IDLE_CHECK_S)


async def serve_http_flv(request: web.Request, sub: Subscription) -> web.StreamResponse:
    """Stream `sub` (kind "flv") as an endless chunked HTTP response."""
    resp = web.StreamResponse(headers={
        "Content-Type": "video/x-flv",
        "Cache-Control": "no-cache, no-store",
        "Access-Control-Allow-Origin": "*",
        "Connection": "close",
    })
    resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
        # Headers and the first chunk (FLV header, metadata, GOP) go through aiohttp, so its
        # chunked writer is in a clean state; after that every chunk is ours.
        first = await sub.get_batch(1 << 16)
        if first:
            await resp.write(b"".join(first))
            transport = request.transport
            if transport is not None and not transport.is_closing():
                sub.go_direct(transport, http_chunk)
                await _until_closed(sub, lambda: _gone(request))
    except (ConnectionError, asyncio.CancelledError, RuntimeError):
        pass
    finally:
        sub.close("viewer_left" if not sub.closed else sub.reason or "closed")
    if sub.reason == "slow" and request.transport is not None:
        request.transport.abort()  # its buffer is megabytes behind: do not wait for it to drain
        return resp
    with contextlib.suppress(Exception):
        await resp.write_eof()
    return resp


async def serve_ws_flv(request: web.Request, sub: Subscription) -> web.WebSocketResponse:
    """Stream `sub` as WebSocket binary messages; closes when either side goes away."""
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024, compress=False)
    await ws.prepare(request)

    async def reader() -> None:
        async for msg in ws:  # viewers send nothing useful; watch for close
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        sub.close("viewer_left")

    watcher = asyncio.create_task(reader())
    try:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            # aiohttp writes pings/close as whole frames with transport.write too, so our
            # frames never interleave with its own.
            sub.go_direct(transport, ws_binary)
            await _until_closed(sub, lambda: ws.closed or _gone(request))
    except (ConnectionError, asyncio.CancelledError, RuntimeError):
        pass
    finally:
        sub.close("viewer_left" if not sub.closed else sub.reason or "closed")
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        with contextlib.suppress(Exception):
            await ws.close()
    return ws
