"""JPEG snapshots: the channel's latest keyframe, decoded with PyAV, encoded with OpenCV.

`take_snapshot` subscribes "frames" (the hub primes a subscriber from its GOP cache, so for a
running stream the first item is already the latest keyframe; otherwise the stream is opened and
we wait for its first keyframe), closes the subscription at once, and decodes in a worker thread
(architecture.md rule 11). The decoder gets SPS/PPS (and VPS) put in front of the keyframe when the
access unit lacks them, from the hub's last known parameter sets. Repeated requests for the same
keyframe (thumbnail walls poll) reuse the JPEG from a small cache instead of decoding again.

Errors (rooted at GbgateError; `status`/`code` feed the JSON error body); hub errors (404/409/
403/504/410 StreamError) pass through to the caller unchanged:

    SnapshotError        502  decode or encode failed
    └── SnapshotTimeout  504  subscribed, but no keyframe within the timeout
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from gateway.errors import GbgateError
from gateway.media.frames import Codec, MediaFrame
from gateway.media.keyframe import KeyframeError, complete_keyframe, decode_keyframe
from gateway.media.nal import ParameterSets

JPEG_QUALITY = 85


class SnapshotError(GbgateError):
    status = 502
    code = "snapshot_failed"


class SnapshotTimeout(SnapshotError):
    status, code = 504, "snapshot_timeout"


@dataclass(slots=True, frozen=True)
class Snapshot:
    jpeg: bytes
    width: int
    height: int
    codec: str
    pts: int | None


def decode_to_jpeg(codec: Codec, data: bytes, *, quality: int = JPEG_QUALITY) -> tuple[bytes, int, int]:
    """Decode one keyframe access unit and encode it as JPEG. Blocking: call in a worker thread."""
    import cv2  # lazy: OpenCV loads with the first snapshot, not with the gateway

    try:
        frame = decode_keyframe(codec, data)
    except KeyframeError as exc:
        raise SnapshotError(str(exc)) from None
    bgr = frame.to_ndarray(format="bgr24")
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SnapshotError("JPEG encoding failed")
    return buf.tobytes(), frame.width, frame.height


class SnapshotCache:
    """channel → (keyframe identity, Snapshot); bounded LRU so polling does not re-decode."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, tuple[tuple[Any, ...], Snapshot]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(frame: MediaFrame) -> tuple[Any, ...]:
        return frame.codec, frame.pts, frame.dts, len(frame.data), frame.data[-32:]

    def get(self, channel_id: str, frame: MediaFrame) -> Snapshot | None:
        item = self._items.get(channel_id)
        if item is not None and item[0] == self.key(frame):
            self._items.move_to_end(channel_id)
            self.hits += 1
            return item[1]
        self.misses += 1
        return None

    def put(self, channel_id: str, frame: MediaFrame, snap: Snapshot) -> None:
        self._items[channel_id] = (self.key(frame), snap)
        self._items.move_to_end(channel_id)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)


async def first_keyframe(sub: Any, timeout: float) -> MediaFrame:
    """The first video keyframe the subscription yields (the cached one for a running stream)."""

    async def wait() -> MediaFrame:
        async for frame in sub:
            if frame.kind == "video" and frame.keyframe:
                return frame  # type: ignore[no-any-return]
        raise SnapshotError(f"the stream ended before a keyframe ({getattr(sub, 'reason', None) or 'closed'})")

    try:
        return await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        raise SnapshotTimeout(f"no keyframe within {timeout:g} s") from None


async def take_snapshot(hub: Any, channel_id: str, *, timeout: float = 10.0,
                        cache: SnapshotCache | None = None, quality: int = JPEG_QUALITY) -> Snapshot:
    """Subscribe, take the first keyframe, unsubscribe, decode off the loop. Hub StreamErrors
    (unknown channel, offline, not admitted, timeout) propagate."""
    sub = await hub.subscribe(channel_id, "frames")
    return await snapshot_from(hub, channel_id, sub, timeout=timeout, cache=cache, quality=quality)


async def snapshot_from(hub: Any, channel_id: str, sub: Any, *, timeout: float = 10.0,
                        cache: SnapshotCache | None = None, quality: int = JPEG_QUALITY) -> Snapshot:
    """`take_snapshot` for a "frames" subscription the caller already has (closed here)."""
    try:
        frame = await first_keyframe(sub, timeout)
    finally:
        sub.close("snapshot")
    if cache is not None and (hit := cache.get(channel_id, frame)) is not None:
        return hit
    known: ParameterSets | None = None
    latest = getattr(hub, "latest_keyframe", None)
    if latest is not None:
        with contextlib.suppress(Exception):
            lk = latest(channel_id)
            if lk is not None:
                known = lk[1]
    data = complete_keyframe(frame, known)
    jpeg, width, height = await asyncio.to_thread(decode_to_jpeg, frame.codec, data, quality=quality)
    snap = Snapshot(jpeg, width, height, frame.codec.value, frame.pts)
    if cache is not None:
        cache.put(channel_id, frame, snap)
    return snap
