"""An in-memory stand-in for gateway.media.hub.StreamHub ("frames" subscriptions only).

It loops a vector from tests/data/media at `fps` in real time (pts advancing by 90000/fps), keeps
the frames since the last keyframe as its GOP cache and primes every new subscriber with it, like
the real hub. Channel states make subscribe() raise the hub's own errors.
"""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path
from typing import Any

from gateway.api.auth import Principal, Role
from gateway.media.errors import ChannelNotFound, DeviceUnavailable, NotAdmitted, StreamTimeout
from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import (
    H264_PPS,
    H264_SPS,
    is_keyframe,
    nal_type,
    parameter_sets,
    split_access_units,
    split_annexb,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "media"
CH = "34020000001320000001"
CH265 = "34020000001320000002"
OFFLINE = "34020000001320000009"
DENIED = "34020000001320000008"
SILENT = "34020000001320000007"
UNKNOWN = "34020000001320000099"


def vector_frames(codec: Codec) -> list[MediaFrame]:
    es = (DATA / ("h264.es" if codec == Codec.H264 else "h265.es")).read_bytes()
    return [MediaFrame("video", codec, au, 3600 * k, 3600 * k, is_keyframe(codec, au))
            for k, au in enumerate(split_access_units(codec, es))]


class FakeSub:
    def __init__(self, hub: FakeHub, channel_id: str, maxsize: int = 256) -> None:
        self.hub = hub
        self.channel_id = channel_id
        self.kind = "frames"
        self.maxsize = maxsize
        self._q: deque[MediaFrame] = deque()
        self._event = asyncio.Event()
        self.closed = False
        self.reason: str | None = None

    def put(self, frame: MediaFrame) -> None:
        if not self.closed and len(self._q) < self.maxsize + 600:
            self._q.append(frame)
            self._event.set()

    def __len__(self) -> int:
        return len(self._q)

    def __aiter__(self) -> FakeSub:
        return self

    async def __anext__(self) -> MediaFrame:
        while not self._q:
            if self.closed:
                raise StopAsyncIteration
            self._event.clear()
            await self._event.wait()
        return self._q.popleft()

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self._event.set()
        self.hub.subs.discard(self)


def strip_ps(frame: MediaFrame) -> MediaFrame:
    nals = [bytes(n) for n in split_annexb(frame.data) if nal_type(Codec.H264, n) not in (H264_SPS, H264_PPS)]
    data = b"".join(b"\x00\x00\x00\x01" + n for n in nals)
    return MediaFrame("video", frame.codec, data, frame.pts, frame.dts, frame.keyframe)


class ListSub(FakeSub):
    """A subscription fed by the test."""

    def __init__(self, frames: list[MediaFrame] | None = None) -> None:
        super().__init__(FakeHub(), CH)
        for f in frames or []:
            self.put(f)


class FakeHub:
    """Channels CH (H.264) and CH265 (H.265) stream; the others fail like the real hub."""

    def __init__(self, *, fps: float = 25.0, ready_timeout: float = 2.0) -> None:
        self.fps = fps
        self.ready_timeout = ready_timeout
        self.subs: set[FakeSub] = set()
        self.subscribed = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.gop: dict[str, list[MediaFrame]] = {}
        self.codecs = {CH: Codec.H264, CH265: Codec.H265}

    async def subscribe(self, channel_id: str, kind: str = "flv", *, timeout: float | None = None) -> FakeSub:
        assert kind == "frames"
        if channel_id == OFFLINE:
            raise DeviceUnavailable(f"device of {channel_id} is offline", trace=[{"step": "offline"}])
        if channel_id == DENIED:
            raise NotAdmitted(f"{channel_id} is not admitted")
        if channel_id == SILENT:
            raise StreamTimeout(f"no video from {channel_id}", trace=[{"step": "invite_sent"}])
        if channel_id not in self.codecs:
            raise ChannelNotFound(f"no channel {channel_id}")
        if channel_id not in self._tasks:
            self._tasks[channel_id] = asyncio.get_running_loop().create_task(self._produce(channel_id))
            while not self.gop.get(channel_id):
                await asyncio.sleep(0.005)
        sub = FakeSub(self, channel_id)
        for f in self.gop[channel_id]:
            sub.put(f)
        self.subs.add(sub)
        self.subscribed += 1
        return sub

    async def _produce(self, channel_id: str) -> None:
        frames = vector_frames(self.codecs[channel_id])
        n = 0
        while True:
            src = frames[n % len(frames)]
            f = MediaFrame("video", src.codec, src.data, 3600 * n, 3600 * n, src.keyframe)
            if f.keyframe:
                self.gop[channel_id] = []
            self.gop.setdefault(channel_id, []).append(f)
            for sub in list(self.subs):
                if sub.channel_id == channel_id:
                    sub.put(f)
            n += 1
            await asyncio.sleep(1.0 / self.fps)

    def stream_info(self, channel_id: str) -> dict[str, Any] | None:
        c = self.codecs.get(channel_id)
        return None if c is None or channel_id not in self._tasks else {"codec": c.value, "width": 320, "height": 240}

    def latest_keyframe(self, channel_id: str) -> Any:
        gop = self.gop.get(channel_id)
        if not gop:
            return None
        return gop[0], parameter_sets(gop[0].codec, gop[0].data)

    async def stop(self) -> None:
        for sub in list(self.subs):
            sub.close("shutdown")
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


class FakeTokens:
    """tokens.resolve for the API middleware: "viewer" is an integrator, "vendor" may not watch."""

    async def resolve(self, token: str) -> Principal | None:
        return {"viewer": Principal(Role.INTEGRATOR, "t"), "vendor": Principal(Role.VENDOR, "v"),
                "ops": Principal(Role.OPS, "o")}.get(token)
