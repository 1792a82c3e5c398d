"""A stream's state: the table alone, then a hub stream driven through it on a fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.media.fanout import FRAMES
from gateway.media.hub import StreamHub
from gateway.media.stream_state import TRANSITIONS, StreamInput, StreamState, next_state
from tests.gateway.media.test_hub import Opener, frame_at

S, In = StreamState, StreamInput


def test_the_table_is_total_and_closed_is_terminal() -> None:
    assert set(TRANSITIONS) == set(itertools.product(StreamState, StreamInput))
    assert all(next_state(S.CLOSED, i) is S.CLOSED for i in StreamInput)
    assert all(next_state(s, In.CLOSE) is S.CLOSED for s in StreamState)


@pytest.mark.parametrize(("state", "event", "after"), [
    (S.OPENING, In.READY, S.LIVE),
    (S.OPENING, In.REINVITE, S.REINVITING),  # an INVITE retry before the first keyframe
    (S.LIVE, In.MEDIA, S.LIVE),
    (S.LIVE, In.REINVITE, S.REINVITING),
    (S.REINVITING, In.REINVITE, S.REINVITING),
    (S.REINVITING, In.MEDIA, S.LIVE),
    (S.REINVITING, In.READY, S.LIVE),
])
def test_transitions(state: StreamState, event: StreamInput, after: StreamState) -> None:
    assert next_state(state, event) is after


def test_values_are_the_strings_the_api_shows() -> None:
    assert [s.value for s in StreamState] == ["opening", "live", "reinviting", "closed"]


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


async def test_hub_stream_goes_opening_live_reinviting_live_closed_on_its_clock() -> None:
    clock = Clock()
    opener = Opener(delay=0)
    hub = StreamHub(opener, clock=clock)
    waiter = asyncio.create_task(hub.subscribe("c1", FRAMES))
    while "c1" not in opener.sinks:
        await asyncio.sleep(0)
    stream = opener.sinks["c1"]
    assert stream.state is S.OPENING and hub.snapshot("c1")["state"] == "opening"
    clock.now += 0.5
    stream.push(frame_at(0))  # the first keyframe: ready one frame later
    assert stream.state is S.OPENING
    clock.now += 0.04
    stream.push(frame_at(1))
    assert stream.state is S.LIVE and stream.stats.ttff_open == 0.5
    sub = await waiter
    assert sub.joined_at == clock.now
    clock.now += 0.25
    await sub.get_batch()
    assert stream.stats.ttff_viewers[-1] == 0.25  # viewer's first frame, on the hub's clock
    clock.now += 3
    snap = hub.snapshot("c1")
    assert snap["state"] == "live" and type(snap["state"]) is str and snap["age_s"] == 3.79

    stream.note_reinvite("rtp_timeout")
    assert stream.state is S.REINVITING and hub.snapshot("c1")["state"] == "reinviting"
    assert hub.counters["reinvites"] == 1 and sub.closed is False  # viewers stay
    stream.push(frame_at(2))  # media again from the new INVITE
    assert stream.state is S.LIVE

    stream.end("device_bye")
    await hub.tasks.join()
    assert stream.state is S.CLOSED and stream.snapshot()["state"] == "closed" and sub.reason == "device_bye"
    stream.note_reinvite("late")  # a closed stream stays closed
    assert stream.state is S.CLOSED and hub.get("c1") is None
    await hub.stop()
