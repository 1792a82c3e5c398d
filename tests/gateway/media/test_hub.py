"""StreamHub: one open per channel, GOP cache, shared FLV bytes, bounded queues, linger."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from gateway.media.frames import Codec, MediaFrame
from gateway.media.hub import FLV, FRAMES, DeviceUnavailable, Stream, StreamHub, StreamTimeout
from tests.gateway.media.vectors import video_frames

FRAMES_264 = video_frames(Codec.H264)  # 25 AUs, IDR at 0/10/20


def frame_at(k: int) -> MediaFrame:
    """k-th frame of an endless loop of the vector, timestamps continuing."""
    f = FRAMES_264[k % len(FRAMES_264)]
    ts = 7200 + 3600 * k
    return MediaFrame("video", f.codec, f.data, ts, ts, f.keyframe)


class Handle:
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1

    def stats(self) -> dict[str, Any]:
        return {"received": 1}


class Opener:
    def __init__(self, *, delay: float = 0.01, fail: Exception | None = None) -> None:
        self.delay = delay
        self.fail = fail
        self.opens: list[str] = []
        self.sinks: dict[str, Stream] = {}
        self.handles: list[Handle] = []

    async def open(self, channel_id: str, sink: Stream) -> Handle:
        self.opens.append(channel_id)
        trace = sink.new_trace()
        trace.add("offer_sent")
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        trace.add("answer", status=200)
        self.sinks[channel_id] = sink
        h = Handle()
        self.handles.append(h)
        return h


async def feed(hub_opener: Opener, channel: str, frames: range, *, wait: bool = True) -> None:
    while channel not in hub_opener.sinks:
        await asyncio.sleep(0.001)
    sink = hub_opener.sinks[channel]
    for k in frames:
        sink.push(frame_at(k))
        if wait:
            await asyncio.sleep(0)


def flv_tags(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, timestamp, body) of every tag after the 13-byte FLV header."""
    assert data[:3] == b"FLV"
    pos, out = 13, []
    while pos + 11 <= len(data):
        t = data[pos]
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | (data[pos + 7] << 24)
        body = data[pos + 11:pos + 11 + size]
        assert struct.unpack(">I", data[pos + 11 + size:pos + 15 + size])[0] == 11 + size
        out.append((t, ts, body))
        pos += 15 + size
    assert pos == len(data)
    return out


async def drain(sub: Any, n: int, timeout: float = 2.0) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out += await sub.get_batch()
    return out


async def test_concurrent_first_subscribers_share_one_open() -> None:
    opener = Opener(delay=0.05)
    hub = StreamHub(opener, linger=0.05)
    feeder = asyncio.create_task(feed(opener, "c1", range(12)))
    subs = await asyncio.gather(*(hub.subscribe("c1", FLV) for _ in range(5)))
    await feeder
    assert opener.opens == ["c1"]
    assert hub.get("c1").viewers == 5
    for s in subs:
        s.close()
    await hub.stop()


async def test_flv_bytes_are_muxed_once_and_shared_and_start_at_keyframe() -> None:
    opener = Opener()
    hub = StreamHub(opener)
    feeder = asyncio.create_task(feed(opener, "c1", range(2)))
    a = await hub.subscribe("c1", FLV)
    b = await hub.subscribe("c1", FLV)
    await feeder
    for k in range(2, 15):
        opener.sinks["c1"].push(frame_at(k))
    ia = await drain(a, 14)
    ib = await drain(b, 14)
    # the live tags (after each one's preamble) are the same objects
    assert all(x is y for x, y in zip(ia[1:], ib[1:], strict=True))
    tags = flv_tags(b"".join(ia))
    assert tags[0][0] == 18  # onMetaData
    assert tags[1][0] == 9 and tags[1][2][:2] == b"\x17\x00"  # AVC sequence header
    assert tags[2][2][:2] == b"\x17\x01"  # first coded frame is a keyframe
    video = [t for t in tags if t[0] == 9 and t[2][1] == 1]
    assert len(video) == 15
    ts = [t[1] for t in video]
    assert ts == sorted(ts) and ts[1] - ts[0] == 40
    assert b"\x01@" in tags[0][2] or b"width" in tags[0][2]  # metadata carries width
    info = hub.stream_info("c1")
    assert info["codec"] == "h264" and (info["width"], info["height"]) == (320, 240)
    key = hub.latest_keyframe("c1")
    assert key is not None and key[0].keyframe and key[1].sps is not None
    await hub.stop()


async def test_late_joiner_starts_at_cached_keyframe() -> None:
    opener = Opener()
    hub = StreamHub(opener)
    feeder = asyncio.create_task(feed(opener, "c1", range(2)))
    first = await hub.subscribe("c1", FRAMES)
    await feeder
    for k in range(2, 15):  # IDR at 10: the cache now holds frames 10..14
        opener.sinks["c1"].push(frame_at(k))
    late = await hub.subscribe("c1", FRAMES)
    got = await drain(late, 5)
    # frames carry the viewer timeline: 0 at the first frame pushed (frame_at(0), pts 7200)
    assert got[0].keyframe and got[0].data == frame_at(10).data and got[0].pts == frame_at(10).pts - 7200
    assert [f.pts for f in got] == [frame_at(k).pts - 7200 for k in range(10, 15)]
    late_flv = await hub.subscribe("c1", FLV)
    tags = flv_tags(b"".join(await drain(late_flv, 6)))
    coded = [t for t in tags if t[0] == 9 and t[2][1] == 1]
    assert coded[0][2][0] == 0x17 and len(coded) == 5
    assert len(await drain(first, 15)) == 15
    snap = hub.snapshot("c1")
    assert snap["viewers"] == 3 and snap["ttff_viewer_ms"]["last"] is not None
    assert snap["keyframes"] == 2 and snap["codec"] == "h264"
    await hub.stop()


async def test_linger_closes_after_last_viewer_and_a_new_viewer_cancels_it() -> None:
    opener = Opener()
    hub = StreamHub(opener, linger=0.1)
    feeder = asyncio.create_task(feed(opener, "c1", range(3)))
    sub = await hub.subscribe("c1", FLV)
    await feeder
    sub.close()
    await asyncio.sleep(0.05)
    sub2 = await hub.subscribe("c1", FLV)  # within the linger: same ingest
    await asyncio.sleep(0.15)
    assert opener.opens == ["c1"] and opener.handles[0].closed == 0
    sub2.close()
    await asyncio.sleep(0.2)
    assert opener.handles[0].closed == 1 and hub.get("c1") is None
    assert hub.counters["streams_closed:linger"] == 1
    await hub.stop()


async def test_timeout_without_keyframe_raises_with_trace_and_closes() -> None:
    opener = Opener()
    hub = StreamHub(opener, ready_timeout=0.1)
    with pytest.raises(StreamTimeout) as info:
        await hub.subscribe("c1", FLV)
    assert info.value.status == 504
    steps = [s["step"] for s in info.value.trace[0]["steps"]]
    assert steps[:2] == ["offer_sent", "answer"] and "timeout" in steps
    assert "no RTP" in info.value.trace[0]["diagnosis"]
    await asyncio.sleep(0.05)
    assert opener.handles[0].closed == 1 and hub.get("c1") is None
    await hub.stop()


async def test_open_failure_reaches_every_waiter() -> None:
    opener = Opener(fail=DeviceUnavailable("device offline"))
    hub = StreamHub(opener)
    results = await asyncio.gather(*(hub.subscribe("c1", FLV) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, DeviceUnavailable) and r.status == 409 for r in results)
    assert opener.opens == ["c1"]
    await asyncio.sleep(0.01)
    assert hub.get("c1") is None


async def test_end_closes_subscribers_with_reason() -> None:
    opener = Opener()
    hub = StreamHub(opener)
    feeder = asyncio.create_task(feed(opener, "c1", range(2)))
    sub = await hub.subscribe("c1", FRAMES)
    await feeder
    opener.sinks["c1"].end("device_bye")
    items = [f async for f in sub]
    assert items and sub.reason == "device_bye"
    await asyncio.sleep(0.01)
    assert opener.handles[0].closed == 1 and hub.counters["streams_ended:device_bye"] == 1


async def test_restart_timestamps_stay_monotonic_and_frames_before_keyframe_dropped() -> None:
    opener = Opener()
    hub = StreamHub(opener)
    feeder = asyncio.create_task(feed(opener, "c1", range(1, 12)))  # frame 1..9 are P frames: dropped
    sub = await hub.subscribe("c1", FLV)
    await feeder
    sink = opener.sinks["c1"]
    assert sink.stats.dropped_before_key == 9
    for k in range(0, 5):  # device restarted: timestamps jump back to the start
        sink.push(frame_at(k))
    tags = flv_tags(b"".join(await drain(sub, 8)))
    ts = [t[1] for t in tags if t[0] == 9 and t[2][1] == 1]
    assert ts == sorted(ts) and sink.stats.ts_rebases == 1
    await hub.stop()
