"""One viewer's side of the hub's fan-out: a bounded queue, or direct writes (architecture.md rule 12).

A `Subscription` is fed by its owner (the hub's `Stream`) through `offer` (queued) or `write`
(direct) and never makes the owner wait:

* queued (kind "flv" bytes or "frames" MediaFrames): `async for item in sub`. A full queue is
  emptied and the viewer skips to the next keyframe (counted).
* direct (FLV only, `go_direct`): the owner writes each frame, framed once per framing and shared
  by every viewer using it (`Framing`: HTTP chunk, WebSocket message), straight into the viewer's
  transport — no queue, future or task wake-up per viewer and frame (§5). The bound is then the
  transport's write buffer (`viewer_backlog` bytes), with the same skip-to-keyframe rule.

A viewer that overflows 4 times within 30 s (by the owner's clock) is disconnected as "slow".
The owner is reached only through `SubscriptionOwner`, so this module does not know the hub.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

FLV, FRAMES = "flv", "frames"
SLOW_DROPS = 4  # overflows …
SLOW_WINDOW_S = 30.0  # … within this many seconds make a viewer "slow"

Framing = Callable[[bytes], bytes]


class WireWriter(Protocol):
    """A viewer's socket as the fan-out sees it (an asyncio.Transport is one)."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


class SubscriptionOwner(Protocol):
    """What a subscription needs of the stream that feeds it."""

    channel_id: str

    @property
    def viewer_backlog(self) -> int:
        """Bytes a direct viewer may fall behind before it skips to the next keyframe."""
        ...

    def now(self) -> float:
        """The owner's clock (monotonic seconds)."""
        ...

    def viewer_dropped(self, kind: str) -> None:
        """A viewer's queue or socket overflowed (it skips to the next keyframe)."""

    def viewer_slow(self, kind: str) -> None:
        """A viewer overflowed too often and is being disconnected."""

    def viewer_first_item(self, waited: float) -> None:
        """A viewer got its first item `waited` s after joining (time to first frame)."""

    def unsubscribe(self, sub: Subscription) -> None:
        """The subscription closed: stop feeding it."""


class Subscription:
    """One viewer's bounded queue. `async for item in sub`; `sub.close()` when done."""

    __slots__ = ("_burst", "_drop_times", "_owner", "_queue", "_waiter", "_wire", "channel_id", "closed",
                 "delivered", "drop_events", "dropped", "framing", "joined_at", "kind", "max_backlog", "maxsize",
                 "need_key", "reason")

    def __init__(self, owner: SubscriptionOwner, kind: str, maxsize: int) -> None:
        self._owner = owner
        self.channel_id = owner.channel_id
        self.kind = kind
        self.maxsize = maxsize
        self._queue: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.reason: str | None = None
        self.need_key = False
        self.dropped = 0  # items skipped (overflow or waiting for a keyframe)
        self.drop_events = 0
        self._drop_times: deque[float] = deque(maxlen=SLOW_DROPS)
        self._burst = 0  # the initial GOP may exceed maxsize once
        self.delivered = 0
        self.joined_at = owner.now()
        self._wire: WireWriter | None = None
        self.framing: Framing | None = None  # set once direct: the owner frames each tag with it
        self.max_backlog = 0

    def __len__(self) -> int:
        return len(self._queue)

    # -- the owner's side ------------------------------------------------------------------

    def prime(self, items: list[Any]) -> None:
        """The first items (preamble, cached GOP); they may exceed `maxsize` this once."""
        self._burst = len(items)
        self._queue.extend(items)
        self._wake()

    def offer(self, item: Any, key: bool) -> None:
        """Queue one item (`key`: a video keyframe); never blocks."""
        if self.closed:
            return
        if self.need_key:
            if not key:
                self.dropped += 1
                return
            self.need_key = False
        q = self._queue
        if len(q) >= self.maxsize + self._burst:
            self.dropped += len(q)
            q.clear()
            if self._note_drop():
                return
            if not key:
                self.need_key = True
                self.dropped += 1
                return
        q.append(item)
        w = self._waiter  # inline _wake: this runs per frame and viewer
        if w is not None and not w.done():
            w.set_result(None)

    def write(self, data: bytes, key: bool) -> None:
        """Direct mode: one frame, already framed, into the viewer's transport.

        Runs per frame and viewer: the usual case (socket keeping up) is tested first and
        `_delivered_one` is inlined."""
        wire = self._wire
        if wire is None or self.closed:
            return
        if wire.is_closing():
            self.close("viewer_left")
            return
        backlog = wire.get_write_buffer_size()
        if self.need_key:
            if not key or backlog > self.max_backlog // 2:
                self.dropped += 1
                return
            self.need_key = False
        elif backlog > self.max_backlog:
            self.dropped += 1
            if not self._note_drop():
                self.need_key = True
            return
        wire.write(data)
        if self.delivered:
            self.delivered += 1
        else:
            self._delivered_one()

    def _note_drop(self) -> bool:
        """Count an overflow; True if this one makes the viewer "slow" (closed)."""
        self.drop_events += 1
        owner = self._owner
        now = owner.now()
        self._drop_times.append(now)
        owner.viewer_dropped(self.kind)
        if len(self._drop_times) == SLOW_DROPS and now - self._drop_times[0] < SLOW_WINDOW_S:
            owner.viewer_slow(self.kind)
            self.close("slow")
            return True
        return False

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _delivered_one(self) -> None:
        if self.delivered == 0:
            self._owner.viewer_first_item(self._owner.now() - self.joined_at)
        self.delivered += 1

    # -- the viewer's side -----------------------------------------------------------------

    def go_direct(self, wire: WireWriter, framing: Framing, *, max_backlog: int | None = None) -> None:
        """From now on the owner writes `framing(tag)` straight to `wire` (FLV only).

        What is still queued (the preamble and GOP not yet taken) is written first, as one
        message. `max_backlog` bytes in the transport's buffer beyond what is there now count
        as an overflow (skip to the next keyframe)."""
        if self.kind != FLV:
            raise ValueError("only FLV subscriptions can go direct")
        if self._queue:
            pending = b"".join(self._queue)
            self._queue.clear()
            wire.write(framing(pending))
            self._delivered_one()
        self._burst = 0
        limit = self._owner.viewer_backlog if max_backlog is None else max_backlog
        self.max_backlog = limit + wire.get_write_buffer_size()
        self._wire = wire
        self.framing = framing

    async def wait_closed(self, *, check: Callable[[], None] | None = None, every: float = 1.0) -> None:
        """Until the subscription is closed (direct mode: the hub or the viewer ended it).

        `check` is called every `every` s meanwhile (has the viewer gone? a heartbeat due?) from
        one re-armed timer: no task, timeout or cancellation per check, for every viewer every
        second. It may close the subscription; what it raises goes to the loop's exception
        handler and the checks go on."""
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal timer
            timer = None
            if self.closed or check is None:
                return
            try:
                check()
            except Exception as exc:
                loop.call_exception_handler({"message": "viewer check failed", "exception": exc})
            if not self.closed:
                timer = loop.call_later(every, tick)

        if check is not None:
            timer = loop.call_later(every, tick)
        try:
            while not self.closed:
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
        finally:
            if timer is not None:
                timer.cancel()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        while not self._queue:
            if self.closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        self._delivered_one()
        item = self._queue.popleft()
        if self._burst and len(self._queue) < self.maxsize:
            self._burst = 0
        return item

    async def get_batch(self, limit: int = 64) -> list[Any]:
        """At least one item (waits), at most `limit`; [] once closed and drained."""
        while not self._queue:
            if self.closed:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        q = self._queue
        n = min(limit, len(q))
        out = [q.popleft() for _ in range(n)]
        if self._burst and len(q) < self.maxsize:
            self._burst = 0
        self._delivered_one()
        return out

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self._wake()
        self._owner.unsubscribe(self)
