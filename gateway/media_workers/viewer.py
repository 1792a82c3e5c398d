"""A viewer's HTTP-FLV / WS-FLV response, written by the media worker on the socket the main
process handed over (issue 15): the main process parsed the request, checked the token and the
channel; the response — headers, FLV preamble, cached GOP, live tags — comes from here.

The hub subscription goes direct exactly as in gateway.outputs.flv_http (one framing per frame
shared by every viewer); a failure to get the stream is the API's JSON error body with the trace.
WS-FLV: the 101 handshake (RFC 6455 §4.2.2), unmasked binary frames; the viewer's frames are read
only to answer pings and notice a close. The heartbeat is aiohttp's, as the main process's WS-FLV
has it (`WebSocketResponse(heartbeat=20)`): after `heartbeat` s without a frame from the viewer we
ping, and a viewer silent for another `heartbeat / 2` s is gone (a dead NAT mapping or a frozen
tab would otherwise hold its subscription until TCP gives up, many minutes later).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import struct
from typing import Any

from gateway.media.errors import StreamError
from gateway.media.fanout import FLV, Subscription
from gateway.media.hub import StreamHub
from gateway.outputs.flv_http import http_chunk, ws_binary

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
IDLE_CHECK_S = 1.0
MAX_WS_INPUT = 64 << 10
HEARTBEAT_S = 20.0
WS_PING = b"\x89\x00"


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def error_response(status: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, default=str).encode()
    return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data


_REASONS = {403: "Forbidden", 404: "Not Found", 409: "Conflict", 410: "Gone", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}

HTTP_FLV_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nCache-Control: no-cache, no-store\r\n"
                 b"Access-Control-Allow-Origin: *\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")


class _ViewerSocket(asyncio.Protocol):
    """The handed-over connection: notices the viewer leaving, answers WS pings."""

    def __init__(self, websocket: bool) -> None:
        self.websocket = websocket
        self.transport: asyncio.Transport | None = None
        self.gone = asyncio.get_running_loop().create_future()
        self.sub: Subscription | None = None
        self._buf = bytearray()
        self.heard_at = asyncio.get_running_loop().time()  # the viewer's last WS frame (heartbeat)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.websocket:
            return  # HTTP-FLV viewers send nothing after the request
        self._buf += data
        if len(self._buf) > MAX_WS_INPUT:
            self._left()
            return
        while (frame := _ws_frame(self._buf)) is not None:
            opcode, payload, size = frame
            del self._buf[:size]
            self.heard_at = asyncio.get_running_loop().time()
            if opcode == 0x8:
                self._left()
                return
            if opcode == 0x9 and self.transport is not None:
                self.transport.write(bytes((0x8A, len(payload))) + payload if len(payload) < 126 else b"")

    def eof_received(self) -> bool | None:
        self._left()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._left()

    def _left(self) -> None:
        if not self.gone.done():
            self.gone.set_result(None)
        if self.sub is not None:
            self.sub.close("viewer_left")


def _ws_frame(buf: bytearray) -> tuple[int, bytes, int] | None:
    """(opcode, unmasked payload, bytes used) of the first whole client frame, or None."""
    if len(buf) < 2:
        return None
    opcode, n, masked = buf[0] & 0x0F, buf[1] & 0x7F, buf[1] & 0x80
    pos = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, pos = struct.unpack_from("!H", buf, 2)[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
    mask = b""
    if masked:
        if len(buf) < pos + 4:
            return None
        mask, pos = bytes(buf[pos:pos + 4]), pos + 4
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos:pos + n])
    if mask and n:
        key = int.from_bytes(mask * (-(-n // 4)), "big") >> (8 * (-n % 4))
        payload = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return opcode, payload, pos + n


async def serve_viewer(hub: StreamHub, facts: dict[str, Any], sock: socket.socket, *,
                       heartbeat: float = HEARTBEAT_S) -> str:
    """Serve one handed-over viewer until either side ends; returns how it ended."""
    loop = asyncio.get_running_loop()
    websocket = bool(facts.get("ws_key"))
    proto = _ViewerSocket(websocket)
    sock.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(lambda: proto, sock)
    try:
        try:
            sub = await hub.subscribe(facts["key"], FLV)
        except StreamError as exc:
            transport.write(error_response(exc.status, {"error": {"code": exc.code, "message": str(exc),
                                                                  "trace": exc.trace}}))
            return exc.code
        proto.sub = sub
        if proto.gone.done():
            sub.close("viewer_left")
            return "viewer_left"
        if websocket:
            transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Accept: " + ws_accept(facts["ws_key"]).encode() + b"\r\n\r\n")
            sub.go_direct(transport, ws_binary)
        else:
            transport.write(HTTP_FLV_HEAD)
            sub.go_direct(transport, http_chunk)
        pinged_at: float | None = None

        def check() -> None:
            nonlocal pinged_at
            if transport.is_closing():
                sub.close("viewer_left")
            elif websocket:
                now = loop.time()
                if pinged_at is not None and proto.heard_at >= pinged_at:
                    pinged_at = None
                if pinged_at is None and now - proto.heard_at >= heartbeat:
                    transport.write(WS_PING)
                    pinged_at = now
                elif pinged_at is not None and now - pinged_at >= heartbeat / 2:
                    sub.close("no_pong")
        await sub.wait_closed(check=check, every=min(IDLE_CHECK_S, heartbeat / 4))
        reason = sub.reason or "closed"
        if reason in ("slow", "no_pong"):
            transport.abort()  # megabytes behind, or nobody there: do not wait for it to drain
            return reason
        if reason != "viewer_left":
            transport.write(b"\x88\x02\x03\xe8" if websocket else b"0\r\n\r\n")
        return reason
    finally:
        if not transport.is_closing():
            transport.close()
