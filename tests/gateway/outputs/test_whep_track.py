"""The WHEP track: keyframe start, parameter sets, bounded queue, timestamps; and the HEVC transcoder."""

from __future__ import annotations

import asyncio
import itertools

import av
import pytest

from gateway.media.frames import Codec
from gateway.media.nal import H264_IDR, H264_PPS, H264_SPS, nal_type, parameter_sets, split_annexb
from gateway.outputs.whep_track import BURST_STEP, FrameTrack, HevcTranscoder
from tests.gateway.outputs.fakehub import ListSub, strip_ps, vector_frames


async def test_track_starts_at_keyframe_and_adds_parameter_sets() -> None:
    frames = vector_frames(Codec.H264)
    sub = ListSub()
    track = FrameTrack(sub, initial_ps=parameter_sets(Codec.H264, frames[0].data))
    sub.put(frames[1])  # P frame before any keyframe: skipped
    sub.put(strip_ps(frames[10]))  # an IDR without SPS/PPS
    sub.put(frames[11])
    p1 = await asyncio.wait_for(track.recv(), 2)
    p2 = await asyncio.wait_for(track.recv(), 2)
    assert isinstance(p1, av.Packet)
    types = [nal_type(Codec.H264, n) for n in split_annexb(bytes(p1))]
    assert types[:2] == [H264_SPS, H264_PPS] and H264_IDR in types
    assert bytes(p2) == frames[11].data  # passed through byte for byte
    assert p1.time_base.denominator == 90000
    assert p2.pts - p1.pts == BURST_STEP  # queued before the first recv(): backlog, sent as a burst
    assert track.dropped == 1
    track.stop()
    assert sub.closed


async def test_track_bursts_the_cached_gop_then_keeps_source_spacing() -> None:
    frames = vector_frames(Codec.H264)
    sub = ListSub(frames[:5])  # the hub primes with a GOP of 5
    track = FrameTrack(sub)
    pts = [(await asyncio.wait_for(track.recv(), 2)).pts for _ in range(5)]
    sub.put(frames[5])
    pts.append((await asyncio.wait_for(track.recv(), 2)).pts)
    assert [b - a for a, b in itertools.pairwise(pts)] == [BURST_STEP] * 4 + [3600]
    track.stop()


async def test_track_backlog_before_first_recv_is_burst_too() -> None:
    frames = vector_frames(Codec.H264)
    sub = ListSub(frames[:2])  # primed GOP: 2 frames
    track = FrameTrack(sub)
    for f in frames[2:6]:  # arrive while ICE/DTLS connect, before aiortc's first recv()
        sub.put(f)
    await asyncio.sleep(0.02)
    pts = [(await asyncio.wait_for(track.recv(), 2)).pts for _ in range(6)]
    sub.put(frames[6])
    pts.append((await asyncio.wait_for(track.recv(), 2)).pts)
    assert [b - a for a, b in itertools.pairwise(pts)] == [BURST_STEP] * 5 + [3600]
    track.stop()


async def test_track_overflow_drops_to_next_keyframe() -> None:
    frames = vector_frames(Codec.H264)  # keyframes at 0, 10, 20
    sub = ListSub()
    track = FrameTrack(sub, max_queue=4)
    for f in frames[:10]:
        sub.put(f)
    await asyncio.sleep(0.05)  # pump runs; nobody calls recv
    assert track.drop_events >= 1 and len(track._queue) < 5
    for f in frames[10:13]:
        sub.put(f)
    await asyncio.sleep(0.05)
    got = [await asyncio.wait_for(track.recv(), 2) for _ in range(len(track._queue))]
    assert got[0].is_keyframe or parameter_sets(Codec.H264, bytes(got[0])).complete
    assert bytes(got[-1]) == frames[12].data
    track.stop()


async def test_track_ends_when_source_ends() -> None:
    from aiortc.mediastreams import MediaStreamError

    sub = ListSub(vector_frames(Codec.H264)[:1])
    track = FrameTrack(sub)
    await track.recv()
    sub.close("device_bye")
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(track.recv(), 2)
    assert track.readyState == "ended" and track.end_reason == "device_bye"


def test_hevc_transcoder_gives_decodable_h264() -> None:
    tx = HevcTranscoder()
    out = [p for f in vector_frames(Codec.H265) for p in tx.feed(f.data, f.keyframe)]
    assert len(out) == 25 and out[0][1] and parameter_sets(Codec.H264, out[0][0]).complete
    assert [k for _, k in out].count(True) == 3  # an IDR at every source IRAP (0, 10, 20)
    dec = av.CodecContext.create("h264", "r")
    pics = [f for d, _ in out for f in dec.decode(av.Packet(d))] + list(dec.decode(None))
    assert len(pics) == 25 and (pics[0].width, pics[0].height) == (320, 240)
