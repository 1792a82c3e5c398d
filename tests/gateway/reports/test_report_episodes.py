"""Issue 11.8: an unknown gap or a re-registration inside a continuous fault does not split it."""

from __future__ import annotations

from decimal import Decimal

from gateway.health.timeline import Interval, State
from gateway.reports.deductions import DeductionPolicy, channel_charge

T0 = 1_764_000_000.0
H = 3600.0
POLICY = DeductionPolicy(grace_hours=Decimal(2), rate_per_fault_hour=Decimal("2.5"), cap_at_rent=False)


def ivs(*parts: tuple[float, State, str]) -> list[Interval]:
    out, t = [], T0
    for hours, state, cause in parts:
        out.append(Interval(t, t + hours * H, state, cause))
        t += hours * H
    return out


def test_unknown_gap_inside_a_fault_gives_one_grace() -> None:
    """offline 3 h, unknown 1 h (gateway down), offline 4 h. Hand: one episode, fault 7 h (the
    1 h gap not billed), billable 7 − 2 = 5 h × 2.50 = 12.50. Split (the old rule) would have
    been (3 − 2) + (4 − 2) = 3 h × 2.50 = 7.50."""
    c = channel_charge(
        "c",
        ivs((3, State.offline, "keepalive_lost"), (1, State.unknown, "gateway_down"), (4, State.offline, "")),
        POLICY,
        rent=Decimal(100),
    )
    assert (c.episodes, c.fault_ms, c.billable_ms) == (1, 7 * 3_600_000, 5 * 3_600_000)
    assert c.amount == Decimal("12.5")


def test_reregistration_inside_a_no_video_fault_gives_one_grace() -> None:
    """no_video 3 h, the device re-registers (online, cause registered) for 5 min, the probe finds
    no video again for 3 h 55 min. Hand: one episode; fault 3 h + 3 h 55 min = 6 h 55 min =
    24,900 s; billable 24,900 − 7,200 = 17,700 s = 4.91667 h × 2.50 = 12.2917 (12.29 on the
    sheet). The 5 min online is not billed. Split it would be 1 h + 1 h 55 min = 7.29."""
    c = channel_charge(
        "c",
        ivs(
            (3, State.no_video, "play_timeout"),
            (5 / 60, State.online, "registered"),
            (3 + 55 / 60, State.no_video, "play_timeout"),
        ),
        POLICY,
        rent=Decimal(100),
    )
    assert (c.episodes, c.fault_ms, c.billable_ms) == (1, 24_900_000, 17_700_000)
    assert c.amount.quantize(Decimal("0.01")) == Decimal("12.29")


def test_real_recovery_and_long_online_still_end_the_episode() -> None:
    """no_video 3 h, then online for 31 min after a re-registration (longer than the 30 min
    bridge), then no_video 3 h: two episodes, (3 − 2) + (3 − 2) = 2 h × 2.50 = 5.00. Same with a
    5 min online whose cause is a stream that played (not a registration): 5.00."""
    for minutes, cause in ((31, "registered"), (5, "stream_up")):
        c = channel_charge(
            "c",
            ivs((3, State.no_video, ""), (minutes / 60, State.online, cause), (3, State.no_video, "")),
            POLICY,
            rent=Decimal(100),
        )
        assert (c.episodes, c.billable_ms) == (2, 2 * 3_600_000)
        assert c.amount == Decimal("5")
