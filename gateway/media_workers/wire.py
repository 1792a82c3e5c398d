"""The main process ⇄ media worker link: length-prefixed messages over a unix socket pair.

A message is a small JSON object (the control: "open this ingest", "the stream is ready", a
trace step, a tick of viewer counts) and an optional binary payload (a frame's bytes for a feed,
never a viewer's FLV: viewers are served by the worker itself). Layout: two unsigned 32-bit
big-endian lengths (JSON, payload), then both. Viewer sockets travel on a second socket pair as
SCM_RIGHTS ancillary data (`send_fd`/`recv_fd`), one datagram per viewer with its facts as JSON.
"""

from __future__ import annotations

import array
import json
import socket
import struct
from typing import Any

_HEAD = struct.Struct("!II")
MAX_JSON = 4 << 20
MAX_PAYLOAD = 64 << 20


class WireError(Exception):
    """The peer sent something that is not a message (a bug or a dead peer, never user input)."""


def pack(msg: dict[str, Any], payload: bytes = b"") -> bytes:
    body = json.dumps(msg, separators=(",", ":"), default=str).encode()
    return _HEAD.pack(len(body), len(payload)) + body + payload


class Unpacker:
    """Incremental: feed bytes, take whole (message, payload) pairs (house rule 6)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[dict[str, Any], bytes]] = []
        pos = 0
        n = len(buf)
        while n - pos >= 8:
            jlen, plen = _HEAD.unpack_from(buf, pos)
            if jlen > MAX_JSON or plen > MAX_PAYLOAD:
                raise WireError(f"message too large ({jlen}, {plen})")
            end = pos + 8 + jlen + plen
            if end > n:
                break
            try:
                msg = json.loads(bytes(buf[pos + 8:pos + 8 + jlen]))
            except ValueError as exc:
                raise WireError(f"bad message: {exc}") from None
            out.append((msg, bytes(buf[pos + 8 + jlen:end])))
            pos = end
        if pos:
            del buf[:pos]
        return out


def send_fd(sock: socket.socket, facts: dict[str, Any], fd: int) -> None:
    """One viewer: its socket's fd and the request facts, in one datagram."""
    sock.sendmsg([json.dumps(facts).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def recv_fd(sock: socket.socket) -> tuple[dict[str, Any], int] | None:
    """(facts, fd) or None when there is nothing (non-blocking) or the peer is gone."""
    try:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 65536, 1)
    except (BlockingIOError, InterruptedError):
        return None
    if not msg and not fds:
        raise EOFError("fd channel closed")
    if not fds:
        raise WireError("viewer message without a socket")
    try:
        facts = json.loads(msg)
    except ValueError:
        for fd in fds:
            socket.close(fd)
        raise WireError("bad viewer facts") from None
    return facts, fds[0]
