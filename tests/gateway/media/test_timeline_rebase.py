"""TimelineRebaser: one monotonic, continuous viewer timeline across source changes (issue 12.1)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.timeline_rebase import WRAP32, WRAP33, TimelineRebaser

MAX_SKEW = 18000  # audio up to 200 ms before/after its video in a source


@dataclass
class Seg:
    change: str  # how this source replaced the previous one: first | reinvite | ssrc | reboot
    start: int  # first video DTS on the source's clock
    clock: int  # the source clock's modulus: 2**33 (PES) or 2**32 (a copied RTP timestamp)
    frames: int
    interval: int  # 90 kHz ticks between video frames
    bframes: bool
    audio: bool
    skew: int  # audio timestamp − video DTS


def _seg(change: str) -> st.SearchStrategy[Seg]:
    clocks = st.sampled_from([WRAP33, WRAP32])
    return st.builds(
        Seg, st.just(change),
        # starts near both wrap points are drawn often, so wraps happen inside sources
        st.one_of(st.integers(0, WRAP33 - 1), st.integers(WRAP32 - 40 * 3600, WRAP32 - 1),
                  st.integers(WRAP33 - 40 * 3600, WRAP33 - 1)),
        clocks, st.integers(1, 60), st.sampled_from([1800, 3000, 3600, 7200]), st.booleans(), st.booleans(),
        st.integers(-MAX_SKEW, MAX_SKEW))


sequences = st.tuples(_seg("first"), st.lists(
    st.sampled_from(["reinvite", "ssrc", "reboot"]).flatmap(_seg), max_size=6))


def _far(a: int, b: int, r: TimelineRebaser) -> bool:
    """`b` is outside the continuity windows of `a` on both clocks (an unannounced jump is detectable)."""
    for wrap in (WRAP33, WRAP32):
        d = (b - a) % wrap
        if d >= wrap // 2:
            d -= wrap
        if -r.max_backward - MAX_SKEW <= d <= r.max_forward + MAX_SKEW:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(sequences)
def test_monotonic_exact_inside_a_source_small_step_across(seq: tuple[Seg, list[Seg]]) -> None:
    first, rest = seq
    r = TimelineRebaser()
    out: list[tuple[int, str, int, int, int]] = []  # (segment, kind, out_dts, out_pts, cts)
    last_src: int | None = None
    for i, s in enumerate([first, *rest]):
        if s.change in ("reinvite", "ssrc") or (s.change == "reboot" and last_src is not None
                                                and not _far(last_src, s.start % s.clock, r)):
            r.new_source()  # announced; an unannounced one must be detectably far
        for k in range(s.frames):
            dts = (s.start + k * s.interval) % s.clock
            cts = (k % 3) * s.interval if s.bframes else 0
            vd, vp = r.map(True, dts, (dts + cts) % s.clock)
            out.append((i, "video", vd, vp, cts))
            last_src = dts
            if s.audio:
                ats = (s.start + k * s.interval + s.skew) % s.clock
                ad, ap = r.map(False, None, ats)
                assert ad == ap
                out.append((i, "audio", ad, ap, 0))
                last_src = ats
    segs = [first, *rest]
    video = [o for o in out if o[1] == "video"]
    audio = [o for o in out if o[1] == "audio"]
    # monotonic: video DTS strictly, audio non-decreasing; composition times kept
    assert all(b[2] > a[2] for a, b in itertools.pairwise(video))
    assert all(b[2] >= a[2] for a, b in itertools.pairwise(audio))
    assert all(v[3] - v[2] == v[4] for v in video)
    # the step the rebaser can know: the frame interval of the latest source that showed two frames
    known = [3600]
    for s in segs:
        known.append(s.interval if s.frames >= 2 else known[-1])
    max_pts = -1
    for a, b in itertools.pairwise(video):
        max_pts = max(max_pts, a[3])
        if a[0] == b[0]:
            assert b[2] - a[2] == segs[a[0]].interval  # exact inside a source, wraps included
        else:
            prev = segs[a[0]]
            assert b[3] > max_pts  # never presents an old picture after a new one
            skew = abs(prev.skew) + abs(segs[b[0]].skew) if prev.audio or segs[b[0]].audio else 0
            # the step: one known frame interval, plus the B-frame delay and A/V skew it must clear
            assert 0 < b[2] - a[2] <= known[a[0] + 1] + 2 * prev.interval + skew
    for a, b in itertools.pairwise(audio):
        if a[0] == b[0]:
            # exact, or less while audio that lags the source's anchor is held at the last output
            assert 0 <= b[2] - a[2] <= segs[a[0]].interval


def test_added_step_at_a_reinvite_is_one_frame_interval() -> None:
    """25 fps, no B-frames: old source ends at DTS 1000 + 24·3600; the new one starts at 5, an
    arbitrary clock. The new first frame lands 3600 ticks (40 ms) after the last: no extra gap."""
    r = TimelineRebaser()
    old = [r.map(True, 1000 + k * 3600, 1000 + k * 3600)[0] for k in range(25)]
    assert old == [k * 3600 for k in range(25)]
    r.new_source()
    new = [r.map(True, 5 + k * 3600, 5 + k * 3600)[0] for k in range(3)]
    assert new == [25 * 3600, 26 * 3600, 27 * 3600]
    assert r.last_change is not None and r.last_change.step == 3600 and r.changes == 1


def test_unannounced_backward_jump_is_rebased() -> None:
    r = TimelineRebaser()
    for k in range(10):
        r.map(True, 900_000 + k * 3600, None)
    assert r.map(True, 100, None)[0] == 10 * 3600  # a camera reboot, same port: jump detected
    assert r.last_change is not None and r.last_change.reason == "jump"


def test_32_bit_wrap_of_a_copied_rtp_clock_is_continuous() -> None:
    """PES PTS = RTP timestamp: 2**32 − 1800 is followed by 1800 (3600 ticks later), not a jump."""
    r = TimelineRebaser()
    assert r.map(True, WRAP32 - 1800, None)[0] == 0
    assert r.map(True, 1800, None)[0] == 3600 and r.changes == 0


def test_audio_anchored_source_moves_on_for_its_lagging_video() -> None:
    """New source: audio first at its clock 10_000, video DTS 9_000 (lags by 1000 ticks). Old video
    ended at 3600. Audio lands at 3600 + 3600 = 7200 (max output + step); video would map to 6200 <
    7200 = need, so the source moves on by 1000: video 7200, later audio 7200 + 3600 + 1000."""
    r = TimelineRebaser()
    r.map(True, 0, 0)
    r.map(True, 3600, 3600)
    r.new_source()
    assert r.map(False, None, 10_000) == (7200, 7200)
    assert r.map(True, 9_000, 9_000) == (7200, 7200)
    assert r.map(False, None, 13_600) == (11_800, 11_800)


def test_frames_without_timestamps_repeat_the_last_output() -> None:
    r = TimelineRebaser()
    r.map(True, 50, 50)
    r.map(True, 3650, 3650)
    assert r.map(True, None, None) == (3600, 3600)
    assert r.map(False, None, None) == (0, 0)


def test_small_backward_jump_of_one_kind_is_a_restart() -> None:
    """Video at 43200, then the camera restarts at 7200 (440 ms back): within the A/V skew window,
    but video never goes backwards inside a source, so it is a new source one step (3600) on."""
    r = TimelineRebaser()
    r.map(True, 39600, None)
    r.map(True, 43200, None)
    assert r.map(True, 7200, None)[0] == 7200 and r.changes == 1
