"""One end of the main ⇄ worker control socket: fire-and-forget messages and awaited calls.

`send(op, ...)` queues one message; `call(op, ...)` also waits for the peer's `reply`. Messages
arrive in order on one stream socket, so a trace step sent before a call's reply is applied
before the reply is seen. A lost peer fails every pending call with `LinkLost` at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable
from typing import Any

from gateway.media_workers.wire import Unpacker, WireError, pack

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], bytes], None]


class LinkLost(ConnectionError):
    """The other process is gone (crashed, stopped): no answer will come."""


class Link(asyncio.Protocol):
    """Messages over a connected unix stream socket; `handler(msg, payload)` gets each one that
    is not a reply."""

    def __init__(self, handler: Handler, on_lost: Callable[[], None] | None = None) -> None:
        self.handler = handler
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._unpacker = Unpacker()
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.lost = False

    @classmethod
    async def connect(cls, sock: socket.socket, handler: Handler, on_lost: Callable[[], None] | None = None) -> Link:
        link = cls(handler, on_lost)
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: link, sock)
        return link

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._unpacker.feed(data)
        except WireError:
            log.exception("media link: bad data, closing")
            if self.transport is not None:
                self.transport.abort()
            return
        for msg, payload in messages:
            re = msg.get("re")
            if re is not None:
                fut = self._calls.pop(re, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                continue
            try:
                self.handler(msg, payload)
            except Exception:
                log.exception("media link: handling %s failed", msg.get("op"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        calls, self._calls = self._calls, {}
        for fut in calls.values():
            if not fut.done():
                fut.set_exception(LinkLost("media link lost"))
                fut.exception()
        if self.on_lost is not None:
            self.on_lost()

    # -- sending -------------------------------------------------------------------------------

    def send(self, msg: dict[str, Any], payload: bytes = b"") -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(pack(msg, payload))

    async def call(self, msg: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        if self.transport is None or self.lost:
            raise LinkLost("media link lost")
        cid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[cid] = fut
        self.send({**msg, "id": cid})
        try:
            return await asyncio.wait_for(fut, timeout) if timeout else await fut
        finally:
            self._calls.pop(cid, None)

    def reply(self, msg: dict[str, Any], **result: Any) -> None:
        self.send({"re": msg["id"], **result})

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
