"""TaskSet: references kept until done, failures logged once, join waits, close cancels."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from gateway.tasks import TaskSet


async def test_spawned_task_is_kept_until_done_and_then_forgotten() -> None:
    ts = TaskSet("t")
    gate = asyncio.Event()
    done: list[int] = []

    async def work() -> None:
        await gate.wait()
        done.append(1)

    ts.spawn(work(), name="w")  # no reference kept by the caller
    gc.collect()
    assert len(ts) == 1 and [t.get_name() for t in ts] == ["t:w"]
    gate.set()
    await ts.join()
    assert done == [1] and len(ts) == 0


async def test_a_failure_is_logged_and_does_not_touch_the_others(caplog: pytest.LogCaptureFixture) -> None:
    ts = TaskSet("owner")
    gate = asyncio.Event()

    async def boom() -> None:
        raise RuntimeError("bad")

    async def other() -> str:
        await gate.wait()
        return "ok"

    with caplog.at_level(logging.ERROR, logger="gateway.tasks"):
        ts.spawn(boom(), name="boom")
        survivor = ts.spawn(other())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    failed = [r for r in caplog.records if "owner: task owner:boom failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None and failed[0].exc_info[0] is RuntimeError
    assert not survivor.done()
    gate.set()
    await ts.join()
    assert survivor.result() == "ok"


async def test_join_waits_for_tasks_spawned_while_waiting() -> None:
    ts = TaskSet("t")
    order: list[str] = []

    async def second() -> None:
        await asyncio.sleep(0)
        order.append("second")

    async def first() -> None:
        await asyncio.sleep(0)
        ts.spawn(second())
        order.append("first")

    ts.spawn(first())
    await ts.join()
    assert order == ["first", "second"] and len(ts) == 0


async def test_close_cancels_and_waits(caplog: pytest.LogCaptureFixture) -> None:
    ts = TaskSet("t")
    cleaned: list[bool] = []

    async def loop_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    tasks = [ts.spawn(loop_forever()) for _ in range(3)]
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="gateway.tasks"):
        await ts.close()
    assert all(t.cancelled() for t in tasks) and cleaned == [True] * 3 and len(ts) == 0
    assert not caplog.records  # a cancellation is not a failure


async def test_a_task_of_the_set_may_close_or_join_it() -> None:
    ts = TaskSet("t")
    sleeper = ts.spawn(asyncio.sleep(3600))

    async def shutdown() -> str:
        await ts.close()  # must not wait for (or cancel) itself
        await ts.join()
        return "closed"

    closer = ts.spawn(shutdown())
    assert await asyncio.wait_for(closer, 5) == "closed"
    assert sleeper.cancelled()


async def test_on_error_hears_each_failure_once_and_cancellations_never() -> None:
    heard: list[tuple[str, type[BaseException]]] = []
    ts = TaskSet("o", on_error=lambda task, exc: heard.append((task.get_name(), type(exc))))

    async def boom() -> None:
        raise ValueError("x")

    ts.spawn(boom(), name="boom")
    ts.spawn(asyncio.sleep(10), name="loop")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await ts.close()
    assert heard == [("o:boom", ValueError)]
