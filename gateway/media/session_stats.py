"""Per-stream statistics and the "why no stream" trace (issue 4 §5).

The most common complaint about GB platforms is "the stream never arrives" with no hint why.
Every INVITE therefore gets a `Trace`: offer sent, answer received (status), ACK, TCP connect,
first RTP seen and from where, SSRC expected vs seen, first PS pack, first keyframe — each step
once, with milliseconds since the request. It is returned in the error body of a failed play.

`RateMeter` turns monotonically growing totals into rates over the last few seconds without any
per-packet work: it samples the totals when someone asks (API, metrics scrape).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

MAX_TRACE_STEPS = 48


class Trace:
    """Steps of one INVITE attempt; `add` appends, `once` appends only the first occurrence.
    `on_step` also hears every step (main's view of a stream in a media worker forwards them to
    the worker's stream, which viewers ask), even past the local cap."""

    __slots__ = ("_clock", "_on_step", "_seen", "attempt", "started", "steps")

    def __init__(self, *, attempt: int = 1, clock: Callable[[], float] = time.monotonic,
                 on_step: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self._clock = clock
        self._on_step = on_step
        self.started = clock()
        self.attempt = attempt
        self.steps: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def add(self, step: str, **detail: Any) -> None:
        if len(self.steps) < MAX_TRACE_STEPS:
            self._seen.add(step)
            self.steps.append({"step": step, "ms": round((self._clock() - self.started) * 1000, 1), **detail})
        if self._on_step is not None:
            self._on_step(step, detail)

    def once(self, step: str, **detail: Any) -> None:
        if step not in self._seen:
            self.add(step, **detail)

    def has(self, step: str) -> bool:
        return step in self._seen

    def as_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "steps": list(self.steps), "diagnosis": self.diagnosis()}

    def diagnosis(self) -> str:
        """One sentence saying where the chain stopped (the first missing link)."""
        if self.has("first_keyframe"):
            return "streaming"
        if self.has("pull"):  # a pulled source (adapters/rtsp.py): no INVITE, no RTP of ours
            return self._pull_diagnosis()
        for step, message in (
            ("offer_sent", "the INVITE was not sent (device unreachable or not registered?)"),
            ("answer", "the device never answered the INVITE"),
        ):
            if not self.has(step):
                return message
        for s in self.steps:
            if s["step"] == "answer" and s.get("status") != 200:
                return f"the device refused the INVITE ({s.get('status')} {s.get('reason', '')})".rstrip()
        if self.has("tcp_connect_failed") and not self.has("tcp_connected"):
            return "could not connect to the device's TCP media port"
        if not self.has("first_rtp"):
            if self.has("setup_conflict") and not self.has("tcp_connected"):
                return ("setup roles: both active (we offered a=setup:active, the device answered "
                        "a=setup:active too) and the device never connected to us")
            if self.has("dropped_wrong_source"):
                return "RTP arrived only from an unexpected address (dropped)"
            if self.has("ssrc_mismatch"):
                return "RTP arrived only with an unexpected SSRC (dropped)"
            return "no RTP arrived at the negotiated port (firewall/NAT, or the device sends elsewhere)"
        if not self.has("first_ps_pack"):
            return "RTP arrived but carried no MPEG-PS pack (wrong payload format?)"
        return "PS arrived but no keyframe yet (waiting for an IDR, or the video codec is not H.264/H.265)"

    def _pull_diagnosis(self) -> str:
        if self.has("ready"):
            return "streaming"
        errors = [s for s in self.steps if s["step"] == "pull_error"]
        if self.has("pull_connected"):
            return "connected to the source, waiting for a keyframe"
        if errors:
            return f"the source could not be opened: {errors[-1].get('error', '')}".rstrip(": ")
        return "connecting to the source"


class FrameWindow:
    """Frame rate and bit rate of a stream over its own last `window` seconds (issue 16.3).

    Fed by every frame the hub takes (one deque append, amortised O(1) trimming), so the first
    API call already shows the real rates instead of a rate measured between two API calls.
    fps = (video frames − 1) / (now − first video frame in the window); bit rate likewise over all
    bytes after the window's first frame. Both fall to 0 once nothing arrived for `window` s.
    """

    __slots__ = ("_bytes", "_frames", "_video", "window")

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._video: deque[float] = deque()  # arrival times of video frames
        self._frames: deque[tuple[float, int]] = deque()  # (arrival, bytes) of every frame
        self._bytes = 0

    def add(self, now: float, nbytes: int, video: bool) -> None:
        if video:
            self._video.append(now)
        self._frames.append((now, nbytes))
        self._bytes += nbytes
        if now - self._frames[0][0] > self.window:
            self._trim(now)

    def _trim(self, now: float) -> None:
        limit = now - self.window
        v, f = self._video, self._frames
        while v and v[0] < limit:
            v.popleft()
        while f and f[0][0] < limit:
            self._bytes -= f.popleft()[1]

    def rates(self, now: float) -> tuple[float, float]:
        """(frames per second, bits per second) at `now`."""
        self._trim(now)
        v, f = self._video, self._frames
        fps = (len(v) - 1) / (now - v[0]) if len(v) >= 2 and now > v[0] else 0.0
        bps = (self._bytes - f[0][1]) * 8 / (now - f[0][0]) if len(f) >= 2 and now > f[0][0] else 0.0
        return fps, bps


class StreamStats:
    """What the hub measures per channel; `snapshot()` is the API's JSON view."""

    __slots__ = (
        "_window",
        "audio_codec",
        "audio_frames",
        "bytes",
        "codec",
        "dropped_before_key",
        "fps_declared",
        "frames",
        "gop_frames",
        "height",
        "keyframe_interval",
        "keyframes",
        "last_frame_at",
        "mux_errors",
        "opened_at",
        "opens",
        "reopens",
        "ts_rebases",
        "ttff_open",
        "ttff_viewers",
        "viewer_drops",
        "viewers_disconnected",
        "width",
    )

    def __init__(self) -> None:
        self.codec: str | None = None
        self.audio_codec: str | None = None
        self.width = self.height = 0
        self.fps_declared = 0.0
        self.frames = self.audio_frames = self.keyframes = self.bytes = 0
        self.gop_frames = 0
        self.keyframe_interval: float | None = None  # seconds between the last two keyframes
        self.dropped_before_key = 0
        self.viewer_drops = 0
        self.viewers_disconnected = 0
        self.mux_errors = 0
        self.opens = self.reopens = self.ts_rebases = 0
        self.opened_at: float | None = None
        self.last_frame_at: float | None = None
        self.ttff_open: float | None = None  # seconds from the first request to the first keyframe
        self.ttff_viewers: deque[float] = deque(maxlen=32)  # per-viewer join → first bytes
        self._window = FrameWindow()

    def count(self, now: float, nbytes: int, video: bool) -> None:
        """One frame taken by the hub (feeds the sliding window of `fps` and `bitrate_bps`)."""
        self._window.add(now, nbytes, video)

    def snapshot(self, now: float) -> dict[str, Any]:
        ttffs = list(self.ttff_viewers)
        fps, bps = self._window.rates(now)
        return {
            "codec": self.codec,
            "audio_codec": self.audio_codec,
            "width": self.width,
            "height": self.height,
            "bitrate_bps": round(bps),
            "fps": round(fps, 2),
            "keyframe_interval_s": None if self.keyframe_interval is None else round(self.keyframe_interval, 3),
            "frames": self.frames,
            "audio_frames": self.audio_frames,
            "keyframes": self.keyframes,
            "bytes": self.bytes,
            "dropped_before_keyframe": self.dropped_before_key,
            "viewer_drops": self.viewer_drops,
            "viewers_disconnected": self.viewers_disconnected,
            "mux_errors": self.mux_errors,
            "reinvites": self.reopens,
            "ttff_open_ms": None if self.ttff_open is None else round(self.ttff_open * 1000, 1),
            "ttff_viewer_ms": {
                "last": round(ttffs[-1] * 1000, 1) if ttffs else None,
                "max": round(max(ttffs) * 1000, 1) if ttffs else None,
            },
            "idle_s": None if self.last_frame_at is None else round(now - self.last_frame_at, 3),
        }
