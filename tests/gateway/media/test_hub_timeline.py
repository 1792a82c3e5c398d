"""Every viewer kind sees one timeline across a source change (issue 12.1): FLV tags (HTTP-FLV and
WS-FLV share them) and frame viewers (WebRTC, snapshots), with B-frame composition times kept."""

from __future__ import annotations

import asyncio
import itertools

from gateway.media.frames import MediaFrame
from gateway.media.hub import FLV, FRAMES, StreamHub
from tests.gateway.media.test_hub import FRAMES_264, Opener, drain, flv_tags

CTS = (7200, 0, 3600)  # an I/P/B-like pattern of composition delays (90 kHz)


def src_frame(k: int, start: int) -> MediaFrame:
    """k-th frame of a source whose clock starts at `start`; 25 fps; PTS = DTS + CTS[k % 3]."""
    f = FRAMES_264[k % len(FRAMES_264)]
    dts = (start + 3600 * k) % (1 << 33)
    return MediaFrame("video", f.codec, f.data, (dts + CTS[k % 3]) % (1 << 33), dts, f.keyframe)


async def test_flv_and_frame_viewers_continue_across_a_reinvite_with_b_frames() -> None:
    """Source A (clock 8e9, near the 33-bit wrap) gives frames 0..24; the opener re-INVITEs;
    source B (clock 1000) gives 25 frames starting at its keyframe. Viewers see DTS 0, 40, … ms
    straight through: frame 25 at 1000 ms (one 40 ms step after 960), composition times 80/0/40 ms."""
    opener = Opener()
    hub = StreamHub(opener)
    feeder = asyncio.create_task(_feed(opener, [src_frame(k, 8_000_000_000) for k in range(1)]))
    flv = await hub.subscribe("c1", FLV)
    frames = await hub.subscribe("c1", FRAMES)
    await feeder
    sink = opener.sinks["c1"]
    for k in range(1, 25):
        sink.push(src_frame(k, 8_000_000_000))
    sink.note_reinvite("no media for 2 s")
    for k in range(25):
        sink.push(src_frame(k, 1000))
    got = await drain(frames, 50)
    dts = [f.dts for f in got]
    assert dts == [3600 * k for k in range(50)]
    assert [f.pts - f.dts for f in got] == [CTS[k % 3] for k in range(25)] * 2
    tags = [t for t in flv_tags(b"".join(await drain(flv, 51))) if t[0] == 9 and t[2][1] == 1]
    ts = [t[1] for t in tags]
    assert ts == [40 * k for k in range(50)]
    cts = [int.from_bytes(t[2][2:5], "big") for t in tags]
    assert cts == [CTS[k % 3] // 90 for k in range(25)] * 2
    assert sink.stats.ts_rebases == 1 and hub.counters["source_changes:reinvite"] == 1
    assert all(b > a for a, b in itertools.pairwise(dts))
    await hub.stop()


async def _feed(opener: Opener, frames: list[MediaFrame]) -> None:
    while "c1" not in opener.sinks:
        await asyncio.sleep(0.001)
    for f in frames:
        opener.sinks["c1"].push(f)
