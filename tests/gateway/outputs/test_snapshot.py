"""JPEG snapshots: decode of the vectors' keyframes (H.264, H.265, Main10), parameter sets put
back in front of a bare IDR, the subscription released, the cache, and the HTTP route's errors."""

from __future__ import annotations

import asyncio
from typing import Any

import cv2
import numpy as np
import pytest

from gateway.media.errors import ChannelNotFound
from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import is_keyframe, parameter_sets, split_access_units
from gateway.outputs.snapshot import (
    SnapshotCache,
    SnapshotError,
    SnapshotTimeout,
    complete_keyframe,
    decode_to_jpeg,
    first_keyframe,
    take_snapshot,
)
from tests.gateway.outputs.fakehub import (
    CH,
    CH265,
    DATA,
    DENIED,
    OFFLINE,
    SILENT,
    FakeHub,
    ListSub,
    strip_ps,
    vector_frames,
)


def jpeg_shape(data: bytes) -> tuple[int, ...]:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return tuple(img.shape)


@pytest.mark.parametrize(("codec", "name", "size"), [
    (Codec.H264, "h264.es", (240, 320, 3)),
    (Codec.H265, "h265.es", (240, 320, 3)),
    (Codec.H265, "h265_main10_330x250.es", (250, 330, 3)),
    (Codec.H264, "h264_high444_cqm_interlaced_330x250.es", (250, 330, 3)),
])
def test_decode_keyframe_to_jpeg(codec: Codec, name: str, size: tuple[int, int, int]) -> None:
    aus = split_access_units(codec, (DATA / name).read_bytes())
    key = next(a for a in aus if is_keyframe(codec, a))
    jpeg, w, h = decode_to_jpeg(codec, key)
    assert jpeg[:2] == b"\xff\xd8" and jpeg_shape(jpeg) == size and (h, w, 3) == size


def test_bare_idr_gets_parameter_sets_back() -> None:
    frames = vector_frames(Codec.H264)
    bare = strip_ps(frames[10])
    with pytest.raises(SnapshotError):
        decode_to_jpeg(Codec.H264, bare.data)
    known = parameter_sets(Codec.H264, frames[0].data)
    data = complete_keyframe(bare, known)
    assert parameter_sets(Codec.H264, data).complete
    assert jpeg_shape(decode_to_jpeg(Codec.H264, data)[0]) == (240, 320, 3)
    assert complete_keyframe(frames[0], None) is frames[0].data  # already complete: untouched


def test_garbage_is_a_snapshot_error() -> None:
    with pytest.raises(SnapshotError):
        decode_to_jpeg(Codec.H264, b"\x00\x00\x01\x65" + bytes(100))
    with pytest.raises(SnapshotError):
        decode_to_jpeg(Codec.G711A, b"x")


@pytest.mark.parametrize("channel", [CH, CH265])
async def test_take_snapshot_from_running_stream(hub: FakeHub, channel: str) -> None:
    cache = SnapshotCache()
    snap = await take_snapshot(hub, channel, cache=cache)
    assert jpeg_shape(snap.jpeg) == (240, 320, 3) and (snap.width, snap.height) == (320, 240)
    assert not hub.subs  # the subscription is closed right after the keyframe
    again = await take_snapshot(hub, channel, cache=cache)
    # same keyframe still current (GOP of 10 at 25 fps) → served from the cache, unless a new one came
    assert again is snap or again.pts != snap.pts
    assert cache.hits + cache.misses == 2


async def test_snapshot_waits_for_keyframe_then_times_out() -> None:
    frames = vector_frames(Codec.H264)
    sub = ListSub(frames[1:5])  # no keyframe yet
    with pytest.raises(SnapshotTimeout):
        await first_keyframe(sub, 0.2)
    sub = ListSub(frames[1:3])
    task = asyncio.create_task(first_keyframe(sub, 2))
    await asyncio.sleep(0.05)
    sub.put(frames[10])
    assert (await task) is frames[10]
    sub = ListSub(frames[1:2])
    sub.close("device_bye")
    with pytest.raises(SnapshotError, match="device_bye"):
        await first_keyframe(sub, 1)


async def test_hub_errors_propagate(hub: FakeHub) -> None:
    with pytest.raises(ChannelNotFound):
        await take_snapshot(hub, "34020000001320000099")


def test_cache_is_bounded() -> None:
    from gateway.outputs.snapshot import Snapshot

    cache = SnapshotCache(maxsize=2)
    f = MediaFrame("video", Codec.H264, b"\x00\x00\x01\x65abc", 1, 1, True)
    for ch in ("a", "b", "c"):
        cache.put(ch, f, Snapshot(b"j", 1, 1, "h264", 1))
    assert cache.get("a", f) is None and cache.get("c", f) is not None


# -- the HTTP route ----------------------------------------------------------------------------


async def test_snapshot_http(api: Any, hub: FakeHub) -> None:
    r = await api.get(f"/live/{CH}/snapshot.jpg?token=viewer")
    assert r.status == 200 and r.content_type == "image/jpeg"
    assert jpeg_shape(await r.read()) == (240, 320, 3)
    assert r.headers["X-Frame-Width"] == "320" and r.headers["X-Frame-Codec"] == "h264"
    assert not hub.subs


@pytest.mark.parametrize(("channel", "token", "status", "code"), [
    (CH, None, 401, "unauthorized"),
    (CH, "vendor", 403, "forbidden"),
    ("34020000001320000099", "viewer", 404, "channel_not_found"),
    (OFFLINE, "viewer", 409, "device_unavailable"),
    (DENIED, "viewer", 403, "not_admitted"),
    (SILENT, "viewer", 504, "stream_timeout"),
])
async def test_snapshot_http_errors(api: Any, channel: str, token: str | None, status: int, code: str) -> None:
    r = await api.get(f"/live/{channel}/snapshot.jpg" + (f"?token={token}" if token else ""))
    assert r.status == status and r.content_type == "application/json"
    body = await r.json()
    assert body["error"]["code"] == code
    if code in ("device_unavailable", "stream_timeout"):
        assert body["error"]["trace"]  # the "why no stream" trace reaches the caller
