"""One end of the main ↔ SIP worker socketpair (asyncio shell around sip_ipc's codec).

Messages sent during one event-loop iteration leave in one write (`call_soon` flush): a burst of
keepalives read in one go becomes one batch, with no timer and no added latency.

Reports nothing waits on (a keepalive's new deadline, an already-answered refresh) go through
`send_later`: held up to `COALESCE_S`, the latest per key kept, and written ahead of any `send`, so
the order main sees is unchanged. At a steady few thousand keepalives a second, one arrives per
loop iteration; without this each cost a write here and a wakeup and read in main, which made a
request in a worker half again as dear as in one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from typing import Any, cast

from gateway.app.sip_ipc import FrameDecoder, IpcError, Kind, Message, encode

log = logging.getLogger("gateway.sip.workers")

#: How long a `send_later` report may wait: far below any keepalive deadline (tens of seconds).
COALESCE_S = 0.02


class Link(asyncio.Protocol):
    def __init__(self, on_message: Callable[[Message], None], on_lost: Callable[[], None] | None = None) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._decoder = FrameDecoder()
        self._out: list[bytes] = []
        self._armed = False
        self._later: dict[Hashable, bytes] = {}
        self._later_timer: asyncio.TimerHandle | None = None

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
        if self._later:
            self._take_later()  # what was reported earlier is read earlier
        self._out.append(encode(kind, *fields))
        if not self._armed:
            self._armed = True
            asyncio.get_running_loop().call_soon(self.flush)

    def send_later(self, key: Hashable, kind: Kind, *fields: Any) -> None:
        """A report main may read up to `COALESCE_S` late, replaced by a later one with the same
        `key` (it moves to the end: reports keep the order of their latest version)."""
        if self.transport is None:
            return
        self._later.pop(key, None)
        self._later[key] = encode(kind, *fields)
        if self._later_timer is None:
            self._later_timer = asyncio.get_running_loop().call_later(COALESCE_S, self._flush_later)

    def _take_later(self) -> None:
        self._out.extend(self._later.values())
        self._later.clear()
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None

    def _flush_later(self) -> None:
        self._later_timer = None
        self._take_later()
        self.flush()

    def flush(self) -> None:
        self._armed = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def close(self) -> None:
        self._take_later()
        self.flush()
        if self.transport is not None:
            self.transport.close()
