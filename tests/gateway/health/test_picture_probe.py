"""Picture-quality probe on generated frames, and the repeat filter."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gateway.health.errors import ProbeError
from gateway.health.probe import FaultTracker, PictureFault, ProbeThresholds, assess, measure

sys.path.insert(0, str(Path(__file__).parents[2] / "data" / "health"))
import frames as F

T = ProbeThresholds()
PATTERN = F.pattern(0)
NEXT = F.pattern(1)  # the next keyframe of a live camera: same scene, new sensor noise


@pytest.mark.parametrize("seed", [0, 3, 7])
@pytest.mark.parametrize("size", [(1920, 1080), (1280, 720), (704, 576), (352, 288)])
def test_normal_pattern_has_no_fault(seed: int, size: tuple[int, int]) -> None:
    w, h = size
    assert assess(F.pattern(seed, w, h), F.pattern(seed + 100, w, h), T) == []


@pytest.mark.parametrize(
    ("frame", "previous", "fault"),
    [
        (F.black(), None, PictureFault.black),
        (F.white(), None, PictureFault.white),
        (F.blue_screen(), None, PictureFault.signal_loss),
        (F.grey_card(), None, PictureFault.signal_loss),
        (PATTERN, PATTERN.copy(), PictureFault.frozen),
        (F.blurred(PATTERN), None, PictureFault.blur),
        (F.covered(PATTERN), NEXT, PictureFault.occlusion),
        (F.colour_shifted(PATTERN), None, PictureFault.colour_cast),
    ],
    ids=["black", "white", "blue_screen", "grey_card", "frozen", "blur", "covered", "colour_shift"],
)
def test_each_fault_detected_alone(
    frame: np.ndarray, previous: np.ndarray | None, fault: PictureFault
) -> None:
    assert assess(frame, previous, T) == [fault]


def test_empty_screens_report_only_the_screen() -> None:
    # a black frame is also "frozen" against another black frame and "blurred", but only black is useful
    assert assess(F.black(), F.black(), T) == [PictureFault.black]


def test_several_faults_together() -> None:
    bad = F.colour_shifted(F.blurred(PATTERN))
    assert set(assess(bad, bad.copy(), T)) == {
        PictureFault.frozen,
        PictureFault.blur,
        PictureFault.colour_cast,
    }


def test_mild_cast_in_a_grey_scene_found_by_cast_factor() -> None:
    scene = cv2.cvtColor(cv2.cvtColor(PATTERN, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert assess(scene, None, T) == []
    tinted = np.clip(scene.astype(np.int16) + np.array([-20, 0, 20], np.int16), 0, 255).astype(np.uint8)
    m = measure(tinted, None, T)
    assert m.cast_d < T.cast_strong_d and m.cast_ratio >= T.cast_min_ratio
    assert assess(tinted, None, T) == [PictureFault.colour_cast]


def test_thresholds_are_configurable_and_metrics_are_evidence() -> None:
    blurred = F.blurred(PATTERN)
    m = measure(blurred, None, T)
    lenient = ProbeThresholds(blur_min_laplacian_var=m.laplacian_var / 2)
    assert PictureFault.blur not in assess(blurred, None, lenient)
    ev = m.as_evidence()
    assert ev["frozen_diff"] is None and isinstance(ev["laplacian_var"], float)


def test_different_sized_previous_is_not_compared() -> None:
    assert assess(PATTERN, cv2.resize(PATTERN, (640, 360)), T) == []


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((720, 1280), np.uint8),
        np.zeros((720, 1280, 3), np.float32),
        np.zeros((4, 4, 3), np.uint8),
        None,
    ],
)
def test_not_a_bgr_image(bad: object) -> None:
    with pytest.raises(ProbeError):
        assess(bad, None, T)  # type: ignore[arg-type]


def test_tracker_opens_after_repeat_failures_and_closes_after_repeat_passes() -> None:
    tr = FaultTracker(repeat=3)
    blur, occl = [PictureFault.blur], [PictureFault.occlusion]
    assert tr.update(blur, 10) is None
    assert tr.update(blur, 20) is None
    assert tr.update([], 30) is None  # streak broken
    assert tr.update(blur, 40) is None
    assert tr.update(occl, 50) is None
    change = tr.update(blur, 60)
    assert change is not None and change.opened and change.ts == 40
    assert change.faults == (PictureFault.blur, PictureFault.occlusion)
    assert change.cause == "blur,occlusion"
    assert tr.is_open
    assert tr.update(blur, 70) is None
    assert tr.update([], 80) is None
    assert tr.update([], 90) is None
    assert tr.update(blur, 100) is None  # one bad frame resets the closing streak
    assert tr.update([], 110) is None and tr.update([], 120) is None
    change = tr.update([], 130)
    assert change is not None and not change.opened and change.ts == 110 and change.cause == "picture_ok"
    assert not tr.is_open


def test_tracker_repeat_one_and_validation() -> None:
    tr = FaultTracker(repeat=1)
    ch = tr.update([PictureFault.black], 5)
    assert ch is not None and ch.opened and ch.ts == 5
    assert tr.update([PictureFault.black], 6) is None  # already open
    with pytest.raises(ValueError):
        FaultTracker(repeat=0)
