"""What every `gbgate` command shares: the one error type, the invocation, the store and loop helpers.

CliError is the CLI's only error: a handler raises it with a one-line reason and `gbgate` prints
`gbgate: <reason>` on standard error and exits 2 (contract.md: "each exits non-zero with a one-line
reason on failure"). Errors of the packages a command calls (ReportError, WhitelistError,
CertError, OSError, …) are translated into it at the edge, with `reasons()`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigError
from gateway.tasks import on_stop_signals

EXIT_FAILURE = 2  # a one-line reason on standard error (contract.md)


class CliError(Exception):
    """A one-line reason for a non-zero exit (status 2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Invocation:
    """One run of one command: the settings, the parsed arguments and the clock it reads "now" from.

    `clock` is read once per command (`now()`), so the whole command sees one "now" and tests pass a
    fixed one.
    """

    settings: Any
    args: argparse.Namespace
    clock: Callable[[], float] = field(default=time.time)

    def now(self) -> float:
        return self.clock()


Handler = Callable[[Invocation], "int | Awaitable[int]"]


@contextmanager
def reasons(*kinds: type[BaseException], describe: Callable[[Any], str] = str) -> Iterator[None]:
    """Translate the named foreign errors into CliError (one line, exit 2)."""
    try:
        yield
    except CliError:
        raise
    except kinds as exc:
        raise CliError(describe(exc)) from exc


def cli_actor() -> str:
    """Who the audit log names for a change made on the command line."""
    return f"cli:{os.environ.get('USER') or getpass.getuser() or 'operator'}"


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for (or "auto" and installed); None means asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("runtime.event_loop", "uvloop is not installed (pip install uvloop)") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(coro: Coroutine[Any, Any, int], settings: Any) -> int:
    """Run one command's coroutine on the event loop `runtime.event_loop` names."""
    choice = getattr(getattr(settings, "runtime", None), "event_loop", "asyncio")
    try:
        factory = event_loop_factory(choice)
    except BaseException:
        coro.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


async def until_signal(duration: float = 0, *, on_ready: Callable[[], object] | None = None) -> None:
    """Return on SIGINT/SIGTERM, or after `duration` seconds when it is positive. `on_ready` runs
    once the handlers are in place: a "ready" line printed before them could be answered by a stop
    signal that still meets Python's defaults (KeyboardInterrupt, exit 130; or death by SIGTERM)."""
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    if on_ready is not None:
        on_ready()
    if duration > 0:
        asyncio.get_running_loop().call_later(duration, stop.set)
    await stop.wait()


async def with_store(settings: Any, fn: Callable[[Any], Awaitable[int]]) -> int:
    """Migrate the database, open a session factory, run `fn(sessions)`, dispose the engine."""
    from gateway.store import migrate
    from gateway.store.db import make_engine, make_sessionmaker

    await asyncio.to_thread(migrate.upgrade, settings.database.url)
    engine = make_engine(settings.database.url)
    try:
        return int(await fn(make_sessionmaker(engine)))
    finally:
        await engine.dispose()
