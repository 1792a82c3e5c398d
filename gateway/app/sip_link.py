"""One end of the main ↔ SIP worker socketpair (asyncio shell around sip_ipc's codec).

Messages sent during one event-loop iteration leave in one write (`call_soon` flush): a burst of
keepalives read in one go becomes one batch, with no timer and no added latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from gateway.app.sip_ipc import FrameDecoder, IpcError, Kind, Message, encode

log = logging.getLogger("gateway.sip.workers")


class Link(asyncio.Protocol):
    def __init__(self, on_message: Callable[[Message], None], on_lost: Callable[[], None] | None = None) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._decoder = FrameDecoder()
        self._out: list[bytes] = []
        self._armed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except IpcError as exc:
            log.error("SIP worker link: %s; closing it", exc)
            self.close()
            return
        for msg in messages:
            try:
                self.on_message(msg)
            except Exception:
                log.exception("SIP worker link: handling %r failed", Kind(msg[0]) if msg[0] in Kind else msg[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_lost is not None:
            self.on_lost()

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, kind: Kind, *fields: Any) -> None:
        if self.transport is None:
            return
        self._out.append(encode(kind, *fields))
        if not self._armed:
            self._armed = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._armed = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def close(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()
