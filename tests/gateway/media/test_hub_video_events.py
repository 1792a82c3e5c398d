"""The hub tells its observer (the health ledger) when a channel delivered video and when it did not."""

from __future__ import annotations

import asyncio

import pytest

from gateway.media.hub import FRAMES, StreamHub, StreamTimeout
from tests.gateway.media.test_hub import Opener, feed


async def test_timeout_then_video_are_reported() -> None:
    events: list[tuple[str, bool, str]] = []
    opener = Opener()
    hub = StreamHub(opener, linger=0.05, ready_timeout=0.2)
    hub.on_video = lambda ch, ok, cause, ev: events.append((ch, ok, cause))
    with pytest.raises(StreamTimeout):
        await hub.subscribe("34020000001310000001", FRAMES)  # the camera answers but sends nothing
    assert events == [("34020000001310000001", False, "no_video_after_invite")]
    await asyncio.sleep(0.1)  # lingers out
    feeder = asyncio.create_task(feed(opener, "34020000001310000002", range(30)))
    sub = await hub.subscribe("34020000001310000002", FRAMES)
    await feeder
    assert ("34020000001310000002", True, "video_ok") in events
    sub.close()


async def test_a_failing_observer_never_breaks_the_stream() -> None:
    opener = Opener()
    hub = StreamHub(opener, linger=0.05, ready_timeout=1.0)

    def boom(*_: object) -> None:
        raise RuntimeError("observer bug")

    hub.on_video = boom
    feeder = asyncio.create_task(feed(opener, "34020000001310000003", range(30)))
    sub = await hub.subscribe("34020000001310000003", FRAMES)
    await feeder
    assert hub.counters["video_observer_errors"] == 1
    sub.close()
