"""A set of background tasks owned by one component (architecture.md rule 10).

asyncio keeps only a weak reference to a task, so a fire-and-forget `create_task` can be
garbage-collected mid-flight, and an exception nobody awaits surfaces late as "Task exception was
never retrieved". `TaskSet` is the one place that keeps the references, logs what fails, and on
shutdown either waits for the tasks (`join`: work that must finish, like closing a stream) or
cancels them (`close`: loops). Unlike `asyncio.TaskGroup` one failing task does not cancel the
others, and tasks can be spawned from plain callbacks (timers, aiortc events).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class TaskSet:
    """Tasks spawned by one owner; each is referenced until done and its failure is logged."""

    __slots__ = ("_log", "_on_error", "_tasks", "name")

    def __init__(self, name: str, *, logger: logging.Logger | None = None,
                 on_error: Callable[[asyncio.Task[Any], BaseException], None] | None = None) -> None:
        self.name = name  # used in log lines and as the task names' prefix
        self._log = logger or log
        self._on_error = on_error  # after the failure is logged: the owner's counters
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run `coro` as a task of this set (needs a running loop)."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}" if name else None)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so asyncio does not warn about it at GC
        if exc is not None:
            self._log.error("%s: task %s failed", self.name, task.get_name(), exc_info=exc)
            if self._on_error is not None:
                self._on_error(task, exc)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def _others(self) -> list[asyncio.Task[Any]]:
        """The tasks to wait for: all but the caller's own (a task of the set may shut it down)."""
        current = asyncio.current_task()
        return [t for t in self._tasks if t is not current]

    async def join(self) -> None:
        """Wait until every task is done, including tasks spawned while waiting."""
        while tasks := self._others():
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every task and wait for them to finish."""
        while tasks := self._others():
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def on_stop_signals(callback: Callable[[], object]) -> None:
    """Call `callback` on SIGINT or SIGTERM (where the running loop supports signal handlers)."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError):
            pass
