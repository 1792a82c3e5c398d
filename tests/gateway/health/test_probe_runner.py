"""The probe runner on real H.264 keyframes (encoded here with PyAV) from a fake hub."""

from __future__ import annotations

import asyncio
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from gateway.health.errors import ProbeError
from gateway.health.probe_runner import ProbeRunner, decode_keyframe
from gateway.health.timeline import State
from gateway.media.frames import Codec, MediaFrame
from gateway.media.keyframe import complete_keyframe
from gateway.media.nal import H264_PPS, H264_SPS, ParameterSets, nal_type, parameter_sets, split_annexb

sys.path.insert(0, str(Path(__file__).parents[2] / "data" / "health"))
import frames as F

CH = "34020000001320000001"
IDLE = "34020000001320000002"
W, H = 352, 288


def encode(img: np.ndarray, pts: int) -> MediaFrame:
    """One image as a self-contained H.264 IDR access unit (SPS + PPS + slice), Annex-B."""
    ctx: Any = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = W, H, "yuv420p", Fraction(1, 90_000)
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "20"}
    frame = av.VideoFrame.from_ndarray(img, format="bgr24")
    frame.pts = pts
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    return MediaFrame("video", Codec.H264, data, pts, pts, True)


def strip_parameter_sets(frame: MediaFrame) -> tuple[MediaFrame, ParameterSets]:
    ps = parameter_sets(Codec.H264, frame.data)
    nals = [bytes(n) for n in split_annexb(frame.data) if nal_type(Codec.H264, n) not in (H264_SPS, H264_PPS)]
    bare = b"".join(b"\x00\x00\x00\x01" + n for n in nals)
    return MediaFrame("video", Codec.H264, bare, frame.pts, frame.dts, True), ps


class Sub:
    def __init__(self, items: list[MediaFrame]) -> None:
        self.items = list(items)
        self.closed: str | None = None

    def __aiter__(self) -> Sub:
        return self

    async def __anext__(self) -> MediaFrame:
        if not self.items:
            await asyncio.sleep(3600)
        return self.items.pop(0)

    def close(self, reason: str = "closed") -> None:
        self.closed = reason


class Stream:
    def __init__(self, channel_id: str) -> None:
        self.channel_id = channel_id


class FakeHub:
    """latest_keyframe / streams / subscribe, like gateway.media.hub.StreamHub."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[MediaFrame, ParameterSets]] = {}
        self.on_subscribe: dict[str, list[MediaFrame]] = {}
        self.subscribed: list[tuple[str, str]] = []
        self.subs: list[Sub] = []

    def show(self, channel_id: str, frame: MediaFrame) -> None:
        self.latest[channel_id] = (frame, parameter_sets(frame.codec, frame.data))

    def streams(self) -> list[Stream]:
        return [Stream(c) for c in self.latest]

    def latest_keyframe(self, channel_id: str) -> tuple[MediaFrame, ParameterSets] | None:
        return self.latest.get(channel_id)

    async def subscribe(self, channel_id: str, kind: str = "flv", *, timeout: float | None = None) -> Sub:
        self.subscribed.append((channel_id, kind))
        items = self.on_subscribe.get(channel_id, [])
        if items:
            self.show(channel_id, items[-1])
        sub = Sub(items)
        self.subs.append(sub)
        return sub


class FakeHealth:
    """HealthRecorder's set_state/state_of; set_state returns an awaitable like the real one."""

    def __init__(self) -> None:
        self.states: dict[str, State] = {}
        self.events: list[tuple[str, str, str, float, dict[str, Any]]] = []

    def state_of(self, subject: str) -> State | None:
        return self.states.get(subject)

    def set_state(self, subject: str, state: str, cause: str, ts: float, evidence: Any = None) -> Any:
        if self.states.get(subject) is State(state):
            return None
        self.states[subject] = State(state)
        self.events.append((subject, state, cause, ts, dict(evidence or {})))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def rig() -> tuple[FakeHub, FakeHealth, Clock, ProbeRunner]:
    hub, health, clock = FakeHub(), FakeHealth(), Clock()
    health.states[f"channel:{CH}"] = State.online
    return hub, health, clock, ProbeRunner(hub, health, interval=900, repeat=3, clock=clock)


async def probe_round(runner: ProbeRunner, hub: FakeHub, clock: Clock, img: np.ndarray, pts: int) -> Any:
    clock.t += 900
    hub.show(CH, encode(img, pts))
    results = await runner.probe_all()
    return results[0]


async def test_picture_fault_opens_after_repeat_bad_and_closes_after_repeat_good(rig: Any) -> None:
    hub, health, clock, runner = rig
    for i in range(2):
        r = await probe_round(runner, hub, clock, F.pattern(i, W, H), 9000 * i)
        assert r.faults == [] and r.change is None and (r.width, r.height) == (W, H)
    first_bad = clock.t + 900
    for i in range(3):
        r = await probe_round(runner, hub, clock, F.black(W, H), 90_000 + 9000 * i)
        assert r.faults == ["black"]
        assert r.change == ("opened" if i == 2 else None)
    assert [(e[1], e[2], e[3]) for e in health.events] == [("picture_fault", "black", first_bad)]
    evidence = health.events[0][4]
    assert evidence["faults"] == ["black"] and evidence["metrics"]["p98"] < 40
    r = await probe_round(runner, hub, clock, F.pattern(7, W, H), 200_000)  # one good frame is not enough
    assert r.change is None and r.fault_open
    await probe_round(runner, hub, clock, F.black(W, H), 210_000)  # the good streak is broken
    first_good = clock.t + 900
    for i in range(3):
        r = await probe_round(runner, hub, clock, F.pattern(10 + i, W, H), 300_000 + 9000 * i)
        assert r.change == ("closed" if i == 2 else None)
    assert [(e[1], e[2], e[3]) for e in health.events][1:] == [("online", "picture_ok", first_good)]
    assert not r.fault_open and runner.probes == 10


async def test_frozen_needs_a_new_keyframe(rig: Any) -> None:
    hub, _health, clock, runner = rig
    img = F.pattern(3, W, H)
    await probe_round(runner, hub, clock, img, 0)
    r = await probe_round(runner, hub, clock, img, 9000)  # a new keyframe with the very same picture
    assert r.faults == ["frozen"]
    r = await runner.probe_channel(CH)  # the same keyframe probed again: not evidence of freezing
    assert r is not None and r.faults == []


async def test_scheduled_probe_never_opens_a_stream(rig: Any) -> None:
    hub, _health, _clock, runner = rig
    hub.on_subscribe[IDLE] = [encode(F.pattern(1, W, H), 0)]
    assert await runner.probe_all() == []
    assert await runner.probe_channel(IDLE) is None
    assert hub.subscribed == []


async def test_on_demand_probe_opens_the_stream(rig: Any) -> None:
    hub, _health, _clock, runner = rig
    audio = MediaFrame("audio", Codec.G711A, b"\xd5" * 160, 0, 0, False)
    hub.on_subscribe[IDLE] = [audio, encode(F.pattern(1, W, H), 0)]
    r = await runner.probe_channel(IDLE, open_stream=True)
    assert r is not None and r.faults == [] and r.error is None
    assert hub.subscribed == [(IDLE, "frames")] and hub.subs[0].closed == "probe"


async def test_on_demand_probe_times_out(rig: Any) -> None:
    hub, _health, _clock, _runner = rig
    runner = ProbeRunner(hub, FakeHealth(), on_demand_timeout=0.05)
    with pytest.raises(ProbeError, match="no keyframe"):
        await runner.probe_channel(IDLE, open_stream=True)
    assert hub.subs[0].closed == "probe"


async def test_offline_channel_gets_no_picture_fault_and_tracker_restarts(rig: Any) -> None:
    hub, health, clock, runner = rig
    subject = f"channel:{CH}"
    for i in range(3):
        await probe_round(runner, hub, clock, F.black(W, H), 9000 * i)
    assert health.states[subject] is State.picture_fault
    health.states[subject] = State.offline  # keepalive lost, then the camera re-registers
    health.states[subject] = State.online
    for i in range(2):
        r = await probe_round(runner, hub, clock, F.black(W, H), 90_000 + 9000 * i)
        assert r.change is None  # the tracker started over: 3 bad probes needed again
    r = await probe_round(runner, hub, clock, F.black(W, H), 200_000)
    assert r.change == "opened"
    health.states[subject] = State.offline
    for i in range(3):
        r = await probe_round(runner, hub, clock, F.black(W, H), 300_000 + 9000 * i)
        assert r.change is None  # nothing recorded over an offline channel
    assert [e[1] for e in health.events] == ["picture_fault", "picture_fault"]


async def test_fault_from_before_a_restart_is_closed(rig: Any) -> None:
    hub, health, clock, runner = rig
    health.states[f"channel:{CH}"] = State.picture_fault
    for i in range(3):
        r = await probe_round(runner, hub, clock, F.pattern(i, W, H), 9000 * i)
    assert r.change == "closed" and health.events[-1][1:3] == ("online", "picture_ok")


async def test_bare_idr_decodes_with_the_hubs_parameter_sets(rig: Any) -> None:
    hub, _health, _clock, runner = rig
    bare, ps = strip_parameter_sets(encode(F.pattern(2, W, H), 0))
    assert not parameter_sets(Codec.H264, bare.data).complete
    with pytest.raises(ProbeError):
        decode_keyframe(Codec.H264, bare.data)
    assert decode_keyframe(Codec.H264, complete_keyframe(bare, ps)).shape == (H, W, 3)
    hub.latest[CH] = (bare, ps)
    r = await runner.probe_channel(CH)
    assert r is not None and r.error is None and r.faults == []


async def test_undecodable_keyframe_is_an_error_not_a_fault(rig: Any) -> None:
    hub, health, _clock, runner = rig
    hub.latest[CH] = (
        MediaFrame("video", Codec.H264, b"\x00\x00\x00\x01\x65garbage", 0, 0, True),
        ParameterSets(None, None, None),
    )
    r = await runner.probe_channel(CH)
    assert r is not None and r.error and r.faults == [] and health.events == []
    assert runner.failures == 1


async def test_background_loop_probes_every_interval(rig: Any) -> None:
    hub, health, clock, _ = rig
    runner = ProbeRunner(hub, health, interval=0.02, repeat=1, clock=clock)
    hub.show(CH, encode(F.black(W, H), 0))
    await runner.start()
    try:
        for _ in range(200):
            if health.events:
                break
            await asyncio.sleep(0.02)
    finally:
        await runner.stop()
    assert health.events[0][:3] == (f"channel:{CH}", "picture_fault", "black")
