"""Stream fps / bitrate_bps come from the stream's own sliding window (issue 16.3), not from the
time between two API calls: the very first snapshot is right. The clock is injected."""

from __future__ import annotations

import asyncio

from gateway.media.frames import Codec, MediaFrame
from gateway.media.hub import FRAMES, StreamHub
from gateway.media.session_stats import FrameWindow
from tests.gateway.media.test_hub import Opener, frame_at


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_first_snapshot_shows_the_real_rates() -> None:
    """50 video frames, 25 per s (t = 0 … 1.96 s), each followed by a 160-byte G.711 frame.
    fps = (50 − 1) / 1.96 s = 25.0. bitrate = (all bytes − the window's first frame) · 8 / 1.96 s
    = (V + 50·160 − v₀) · 8 / 1.96 where V is the 50 video frames' bytes and v₀ the first's."""
    clock = Clock()
    opener = Opener(delay=0)
    hub = StreamHub(opener, clock=clock)
    waiter = asyncio.create_task(hub.subscribe("c1", FRAMES))
    while "c1" not in opener.sinks:
        await asyncio.sleep(0.001)
    sink = opener.sinks["c1"]
    start = clock.now
    video_bytes = []
    for k in range(50):
        clock.now = start + k * 0.04
        f = frame_at(k)
        video_bytes.append(len(f.data))
        sink.push(f)
        sink.push(MediaFrame("audio", Codec.G711A, b"\xd5" * 160, f.pts, None, True, 0xC0))
        await asyncio.sleep(0)
    await waiter
    snap = hub.snapshot("c1")
    expected_bps = (sum(video_bytes) + 50 * 160 - video_bytes[0]) * 8 / 1.96
    assert snap["fps"] == 25.0
    assert abs(snap["bitrate_bps"] - expected_bps) <= 1
    # a second call at once gives the same (no "between calls" measuring)
    assert hub.snapshot("c1")["fps"] == 25.0
    # nothing for 6 s: the window is empty, the rates are 0
    clock.now += 6
    snap = hub.snapshot("c1")
    assert snap["fps"] == 0.0 and snap["bitrate_bps"] == 0
    await hub.stop()


def test_window_keeps_only_the_last_seconds() -> None:
    """10 fps for 10 s, then 25 fps for 5 s: a 5 s window at the end sees only the 25 fps part."""
    w = FrameWindow(5.0)
    t = 0.0
    for _ in range(100):
        w.add(t, 100, True)
        t += 0.1
    for _ in range(126):
        w.add(t, 100, True)
        t += 0.04
    fps, bps = w.rates(t - 0.04)
    assert round(fps, 6) == 25.0 and round(bps) == 25 * 100 * 8
