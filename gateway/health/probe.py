"""Picture-quality checks on one decoded keyframe (issue 5 §2), and the repeat filter.

`assess(frame, previous, thresholds)` looks at a BGR uint8 image (as PyAV's `to_ndarray(
format="bgr24")` gives) and returns the faults it sees. The frame is first shrunk to
`analysis_width` pixels wide (INTER_AREA), so a probe costs about the same for 720p and 4K and
the thresholds do not depend on the camera's resolution.

Checks, in order; a screen that is black, white or a uniform/blue "no signal" screen reports only
that fault, since blur, occlusion, cast and freezing mean nothing on an empty picture:

* black / white — 98th luma percentile below `black_max_p98` / 2nd percentile above `white_min_p2`.
* signal_loss — one quantised colour covers ≥ `uniform_min_share` of the picture (a flat grey, a
  logo card), or a saturated blue covers ≥ `blue_min_share` (the DVR "NO SIGNAL" blue screen,
  which usually carries a text box).
* frozen — mean absolute difference to the previous keyframe (full resolution, all channels) below
  `frozen_max_diff`: a live sensor always has some noise, an encoder replaying a stuck buffer has
  none. Frames of different sizes are not compared.
* blur — variance of the Laplacian below `blur_min_laplacian_var` (Pech-Pacheco et al. 2000).
* occlusion — the largest connected group of flat blocks (`occlusion_block` px squares whose luma
  std is below `occlusion_block_max_std`) covers ≥ `occlusion_min_share` of the picture.
* colour_cast — in CIELab, the mean chroma offset D = |(ā, b̄)| over the chroma spread
  M = |(σa, σb)|: cast when D ≥ `cast_min_d` and D / M ≥ `cast_min_ratio` (the "cast factor"
  K = D/M of Xu et al.; a colourful scene has large M, a tinted one a large D), or whenever
  D ≥ `cast_strong_d` (a cast that strong is a fault even in a colourful scene).

`FaultTracker` turns probe results into `picture_fault` transitions only after `repeat`
consecutive failures (and closes after `repeat` passes) so that one bad frame, a car's headlights
or a passing bird never bills anybody.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from gateway.health.errors import ProbeError

if TYPE_CHECKING:  # numpy and OpenCV load with the first probe, not with the gateway
    import numpy as np
    from numpy.typing import NDArray

    Frame = NDArray[np.uint8]



class PictureFault(StrEnum):
    signal_loss = "signal_loss"
    black = "black"
    white = "white"
    frozen = "frozen"
    blur = "blur"
    occlusion = "occlusion"
    colour_cast = "colour_cast"


@dataclass(slots=True, frozen=True)
class ProbeThresholds:
    """Probe thresholds (config section `probe`); defaults tuned on 320-px-wide analysis frames."""

    analysis_width: int = 320
    black_max_p98: float = 40.0  # luma 0..255: nothing in the picture brighter than a dark grey
    white_min_p2: float = 225.0  # nothing darker than a light grey
    uniform_min_share: float = 0.92  # share of pixels in the dominant colour (16 levels/channel)
    blue_min_share: float = 0.60  # share of saturated blue pixels for a "no signal" screen
    frozen_max_diff: float = 0.5  # mean |Δluma| to the previous keyframe, at full resolution
    blur_min_laplacian_var: float = 60.0
    occlusion_block: int = 16
    occlusion_block_max_std: float = 4.0
    occlusion_min_share: float = 0.30
    cast_min_d: float = 12.0  # Lab chroma units (8-bit Lab, a/b centred on 128)
    cast_min_ratio: float = 1.5
    cast_strong_d: float = 30.0  # a cast this strong counts even in a colourful scene


@dataclass(slots=True, frozen=True)
class FrameMetrics:
    """What the probe measured; stored as the evidence of a picture_fault event."""

    p2: float
    p98: float
    dominant_share: float
    blue_share: float
    frozen_diff: float | None
    laplacian_var: float
    occluded_share: float
    cast_d: float
    cast_ratio: float

    def as_evidence(self) -> dict[str, float | None]:
        return {k: (None if v is None else round(v, 3)) for k, v in asdict(self).items()}


def _prepare(frame: Frame, width: int) -> NDArray[Any]:
    import cv2  # lazy: OpenCV loads with the first probe, not with the gateway
    import numpy as np

    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ProbeError(f"expected an HxWx3 uint8 BGR image, got {getattr(frame, 'shape', type(frame))}")
    h, w = frame.shape[:2]
    if h < 8 or w < 8:
        raise ProbeError(f"frame too small to assess: {w}x{h}")
    if w <= width:
        return frame
    return cv2.resize(frame, (width, max(8, round(h * width / w))), interpolation=cv2.INTER_AREA)


def _occluded_share(gray: NDArray[Any], block: int, max_std: float) -> float:
    import cv2  # lazy: OpenCV loads with the first probe, not with the gateway
    import numpy as np

    h, w = gray.shape
    rows, cols = h // block, w // block
    if rows == 0 or cols == 0:
        return 0.0
    tiles = gray[: rows * block, : cols * block].astype(np.float32).reshape(rows, block, cols, block)
    flat = (tiles.std(axis=(1, 3)) < max_std).astype(np.uint8)
    count, _labels, stats, _ = cv2.connectedComponentsWithStats(flat, connectivity=4)
    if count <= 1:
        return 0.0
    largest = int(stats[1:, cv2.CC_STAT_AREA].max())
    return float(largest / (rows * cols))


def measure(frame: Frame, previous: Frame | None, thresholds: ProbeThresholds) -> FrameMetrics:
    """Measure one frame (and its difference to the previous keyframe, if given)."""
    import cv2  # lazy: OpenCV loads with the first probe, not with the gateway
    import numpy as np

    small = _prepare(frame, thresholds.analysis_width)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    p2, p98 = (float(v) for v in np.percentile(gray, (2, 98)))
    quant = (small >> 4).astype(np.int32)
    codes = (quant[..., 0] << 8) | (quant[..., 1] << 4) | quant[..., 2]
    dominant = float(np.bincount(codes.ravel(), minlength=4096).max()) / codes.size
    b, g, r = (small[..., i].astype(np.int16) for i in range(3))
    blue = float(np.count_nonzero((b > 150) & (b - r > 80) & (b - g > 60))) / codes.size
    frozen_diff = None
    if previous is not None:
        # full resolution: shrinking would average away the sensor noise that tells live from stuck
        _prepare(previous, previous.shape[1])
        if previous.shape == frame.shape:
            frozen_diff = float(cv2.absdiff(frame, previous).mean())
    lap = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    occl = _occluded_share(gray, thresholds.occlusion_block, thresholds.occlusion_block_max_std)
    lab = cv2.cvtColor(small, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)
    da, db = float(lab[:, 1].mean()) - 128.0, float(lab[:, 2].mean()) - 128.0
    d = float(np.hypot(da, db))
    m = float(np.hypot(lab[:, 1].std(), lab[:, 2].std()))
    return FrameMetrics(p2, p98, dominant, blue, frozen_diff, lap, occl, d, d / max(m, 1e-6))


def faults_from(m: FrameMetrics, t: ProbeThresholds) -> list[PictureFault]:
    """The faults a set of metrics shows (see the module docstring for the order)."""
    if m.p98 <= t.black_max_p98:
        return [PictureFault.black]
    if m.p2 >= t.white_min_p2:
        return [PictureFault.white]
    if m.dominant_share >= t.uniform_min_share or m.blue_share >= t.blue_min_share:
        return [PictureFault.signal_loss]
    out = []
    if m.frozen_diff is not None and m.frozen_diff < t.frozen_max_diff:
        out.append(PictureFault.frozen)
    if m.laplacian_var < t.blur_min_laplacian_var:
        out.append(PictureFault.blur)
    if m.occluded_share >= t.occlusion_min_share:
        out.append(PictureFault.occlusion)
    if m.cast_d >= t.cast_min_d and (m.cast_ratio >= t.cast_min_ratio or m.cast_d >= t.cast_strong_d):
        out.append(PictureFault.colour_cast)
    return out


def assess(
    frame: Frame, previous: Frame | None, thresholds: ProbeThresholds | None = None
) -> list[PictureFault]:
    """Faults seen in `frame` (empty list: the picture is fine). CPU-bound: call in a worker thread."""
    t = thresholds or ProbeThresholds()
    return faults_from(measure(frame, previous, t), t)


@dataclass(slots=True, frozen=True)
class FaultChange:
    """A confirmed transition: `opened` a picture_fault (with its faults) or closed it, at `ts`."""

    opened: bool
    ts: float
    faults: tuple[PictureFault, ...]

    @property
    def cause(self) -> str:
        return ",".join(self.faults) if self.opened else "picture_ok"


class FaultTracker:
    """Debounce probe results for one channel (pure; the caller supplies `now`).

    A fault opens after `repeat` consecutive failing probes and is dated from the first of them
    (that frame is the evidence); it closes after `repeat` consecutive passes, dated from the
    first pass.
    """

    __slots__ = ("_run", "_run_faults", "_run_start", "is_open", "repeat")

    def __init__(self, repeat: int = 3) -> None:
        if repeat < 1:
            raise ValueError("repeat must be >= 1")
        self.repeat = repeat
        self.is_open = False
        self._run = 0
        self._run_start = 0.0
        self._run_faults: set[PictureFault] = set()

    def update(self, faults: list[PictureFault], now: float) -> FaultChange | None:
        """Feed one probe result; returns a change when one is confirmed."""
        failing = bool(faults)
        if failing == self.is_open:  # the result agrees with the current state: streak broken
            self._run = 0
            self._run_faults.clear()
            return None
        if self._run == 0:
            self._run_start = now
        self._run += 1
        self._run_faults.update(faults)
        if self._run < self.repeat:
            return None
        self.is_open = failing
        change = FaultChange(failing, self._run_start, tuple(sorted(self._run_faults)))
        self._run = 0
        self._run_faults.clear()
        return change
