"""One viewer timeline across every source change (sans-IO; issue 12.1).

A stream's source changes under its viewers: a re-INVITE after media loss, a camera that reboots
onto a new port, an SSRC switch, a 90 kHz clock that wraps (33-bit PES, or 32-bit when a camera
copies its RTP timestamp into the PES). Players (mpegts.js, ffplay, VLC) stall when timestamps go
backwards or leap, so the hub maps every source timestamp onto one output timeline that is

* monotonic: video DTS strictly increasing, audio non-decreasing;
* exact inside a source: output deltas equal input deltas (wraps included);
* continuous across a change: the new source starts one frame interval after the newest output
  (video also after the newest presented picture, so B-frame reordering never shows an old
  picture after a new one) — the gap is a small step, whatever the new source's clock says;
* composition time preserved: output PTS − DTS = input PTS − DTS (B-frames stay right).

Audio and video share one offset per source, so lip sync is kept. A change is either announced
(`new_source()`: re-INVITE, re-latch on a new port or SSRC) or detected: a timestamp that is
neither within `max_backward`/`max_forward` of the last one nor a 32-bit wrap of it.

Output values are 90 kHz ticks starting at 0 and never wrap; `ms` is `dts // 90`.
"""

from __future__ import annotations

from dataclasses import dataclass

WRAP33 = 1 << 33
WRAP32 = 1 << 32
_HALF33 = WRAP33 >> 1
_HALF32 = WRAP32 >> 1


@dataclass(slots=True, frozen=True)
class Rebased:
    """A source change as the rebaser handled it (kept in `last_change` for the stream's stats)."""

    reason: str  # "announced" | "jump"
    out_dts: int  # where the new source's first frame landed (90 kHz)
    step: int  # ticks between the newest earlier output and that frame


class TimelineRebaser:
    """Maps (kind, dts, pts) of one stream's frames onto a monotonic, continuous output timeline."""

    __slots__ = (
        "_await_video",
        "_fresh",
        "_last_a",
        "_last_v",
        "_max_out",
        "_max_pts_v",
        "_ref_out",
        "_ref_src",
        "_src_a",
        "_src_v",
        "_started",
        "changes",
        "default_step",
        "last_change",
        "max_backward",
        "max_cts",
        "max_forward",
        "max_step",
        "step",
    )

    def __init__(self, *, max_forward: int = 3 * 90000, max_backward: int = 90000, default_step: int = 3600,
                 max_step: int = 9000, max_cts: int = 10 * 90000) -> None:
        self.max_forward = max_forward
        self.max_backward = max_backward
        self.default_step = default_step
        self.max_step = max_step  # longest frame interval learnt as "the" step (100 ms)
        self.max_cts = max_cts
        self.step = default_step  # the last video frame interval seen, used as the step at a change
        self._started = False
        self._fresh = True
        self._await_video = False  # a new source was anchored on audio; its first video may push it on
        self._ref_src = 0  # raw (33-bit) timestamp of the last frame mapped
        self._ref_out = 0  # its output, before the per-kind clamp
        self._src_v = -1  # raw timestamp of the last video / audio frame of this source (-1: none yet)
        self._src_a = -1
        self._last_v = -1
        self._last_a = -1
        self._max_out = -1
        self._max_pts_v = -1
        self.changes = 0
        self.last_change: Rebased | None = None

    def new_source(self) -> None:
        """The next frame comes from a new source: start it just after the current timeline."""
        self._fresh = True

    @property
    def last_ms(self) -> int:
        return max(self._max_out, 0) // 90

    def map(self, video: bool, dts: int | None, pts: int | None) -> tuple[int, int]:
        """(output DTS, output PTS) in 90 kHz ticks for one frame; cheap, no allocation."""
        t = dts if dts is not None else pts
        if t is None:
            last = self._last_v if video else self._last_a
            out = max(last, 0)
            return out, out
        t %= WRAP33
        cts = 0
        if dts is not None and pts is not None:
            cts = (pts - dts) % WRAP33
            if cts > self.max_cts:
                cts = (pts - dts) % WRAP32  # PTS wrapped a copied 32-bit clock before DTS did
                if cts > self.max_cts:
                    cts = 0  # nonsense (PTS before DTS): present at decode time
        if self._fresh:
            out = self._start(video, t, cts)
        else:
            d = (t - self._ref_src) % WRAP33
            if d >= _HALF33:
                d -= WRAP33
            near = -self.max_backward <= d <= self.max_forward
            if not near:
                d = (t - self._ref_src) % WRAP32  # a camera copying its 32-bit RTP clock wrapped
                if d >= _HALF32:
                    d -= WRAP32
                near = -self.max_backward <= d <= self.max_forward
            if near:
                last = self._src_v if video else self._src_a
                # same kind backwards (or leaping): the camera restarted its clock
                near = last < 0 or _forward(t - last, self.max_forward)
            if not near:
                out = self._start(video, t, cts, reason="jump")
            else:
                out = self._ref_out + d
                self._ref_src, self._ref_out = t, out
        if video:
            same_source = self._src_v >= 0  # the step is learnt only between frames of one source
            self._src_v = t
            if self._await_video:
                self._await_video = False
                need = max(self._last_v + self.step, self._max_pts_v + self.step - cts)
                if out < need:  # the new source's video lags its audio: move the source on, never back
                    self._ref_out += need - out
                    out = need
            if out <= self._last_v:
                out = self._last_v + 1
            elif same_source and out - self._last_v <= self.max_step:
                self.step = out - self._last_v
            self._last_v = out
            p = out + cts
            if p > self._max_pts_v:
                self._max_pts_v = p
        else:
            self._src_a = t
            if out < self._last_a or out < 0:
                out = max(self._last_a, 0)
            self._last_a = out
            p = out
        if out > self._max_out:
            self._max_out = out
        return out, p

    def _start(self, video: bool, t: int, cts: int, *, reason: str = "announced") -> int:
        """Anchor a new source: this frame lands one step after everything output so far."""
        self._fresh = False
        if not self._started:
            self._started = True
            out = 0
        else:
            out = self._max_out + self.step
            if video and self._max_pts_v >= 0:
                out = max(out, self._max_pts_v + self.step - cts)
            self._await_video = not video and self._last_v >= 0
            self.changes += 1
            self.last_change = Rebased(reason, out, out - self._max_out)
        self._ref_src, self._ref_out = t, out
        self._src_v = self._src_a = -1
        return out


def _forward(d: int, limit: int) -> bool:
    """0 <= d <= limit on the 33-bit clock or, failing that, on a copied 32-bit one."""
    return 0 <= d % WRAP33 <= limit or 0 <= d % WRAP32 <= limit
