"""HTTP-FLV and WS-FLV responses over a hub subscription (issue 4 §4).

The subscription yields FLV bytes already muxed once per frame and shared by every viewer; this
module only writes them. HTTP-FLV is a chunked response that never ends on its own; WS-FLV sends
the same bytes as binary messages (what flv.js / mpegts.js expect). A viewer that goes away is
noticed at the next write, or by a periodic liveness check while the stream is stalled, and its
subscription is closed so the hub can linger and hang up.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import WSMsgType, web

IDLE_CHECK_S = 1.0
BATCH = 64


def _gone(request: web.Request) -> bool:
    t = request.transport
    return t is None or t.is_closing()


async def serve_http_flv(request: web.Request, sub: Any) -> web.StreamResponse:
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
        while True:
            try:
                batch = await asyncio.wait_for(sub.get_batch(BATCH), IDLE_CHECK_S)
            except TimeoutError:
                if _gone(request):
                    break
                continue
            if not batch:
                break  # the stream ended (device BYE, offline, slow viewer dropped)
            await resp.write(batch[0] if len(batch) == 1 else b"".join(batch))
    except (ConnectionError, asyncio.CancelledError, RuntimeError):
        pass
    finally:
        sub.close("viewer_left" if not sub.closed else sub.reason or "closed")
    with contextlib.suppress(Exception):
        await resp.write_eof()
    return resp


async def serve_ws_flv(request: web.Request, sub: Any) -> web.WebSocketResponse:
    """Stream `sub` as WebSocket binary messages; closes when either side goes away."""
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
    await ws.prepare(request)

    async def reader() -> None:
        async for msg in ws:  # viewers send nothing useful; watch for close
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        sub.close("viewer_left")

    watcher = asyncio.create_task(reader())
    try:
        while not ws.closed:
            batch = await sub.get_batch(BATCH)
            if not batch:
                break
            await ws.send_bytes(batch[0] if len(batch) == 1 else b"".join(batch))
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
