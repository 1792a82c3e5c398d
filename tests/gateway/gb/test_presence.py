"""Presence: online = registered and keepalives arriving (gb28181.md §3.1, §4.3)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.gb.presence import OfflineCause, Presence, PresenceState

DEV = "34020000001320000001"


def reg(p: Presence, now: float, *, expires: float = 3600, call_id: str = "c1", conn_id: int | None = None):
    return p.register(
        DEV, transport="udp", host="127.0.0.1", port=5060, conn_id=conn_id, call_id=call_id, contact="",
        expires=expires, now=now,
    )


def test_register_brings_online_once() -> None:
    p = Presence(keepalive_interval=60, keepalive_count=3)
    _, t, new = reg(p, 0)
    assert t is not None and t.state is PresenceState.ONLINE and new
    _, t2, new2 = reg(p, 10)  # refresh, same Call-ID
    assert t2 is None and not new2
    _, _, new3 = reg(p, 20, call_id="c2")  # reboot: new Call-ID is a new login
    assert new3


def test_keepalive_lost_after_interval_times_count() -> None:
    p = Presence(keepalive_interval=60, keepalive_count=3)
    reg(p, 0)
    assert p.next_deadline() == 180
    assert p.expire(179.9) == []
    out = p.expire(180)
    assert [(t.state, t.cause) for t in out] == [(PresenceState.OFFLINE, OfflineCause.KEEPALIVE_LOST.value)]
    assert p.online_count() == 0 and DEV in p  # still registered


def test_keepalive_pushes_deadline_and_revives() -> None:
    p = Presence(keepalive_interval=60, keepalive_count=3)
    reg(p, 0)
    assert p.activity(DEV, 100, keepalive=True) is None
    assert p.expire(180) == []
    assert p.next_deadline() == 280
    p.expire(280)
    t = p.activity(DEV, 300, keepalive=True)
    assert t is not None and t.state is PresenceState.ONLINE and t.cause == "keepalive_resumed"


def test_registration_expiry_wins_when_shorter() -> None:
    p = Presence(keepalive_interval=60, keepalive_count=3)
    reg(p, 0, expires=100)
    assert p.next_deadline() == 100
    out = p.expire(100)
    assert [t.cause for t in out] == [OfflineCause.EXPIRED.value]
    assert DEV not in p


def test_unregister_and_connection_close() -> None:
    p = Presence()
    reg(p, 0)
    t = p.unregister(DEV, 5, OfflineCause.UNREGISTERED)
    assert t is not None and t.state is PresenceState.OFFLINE
    assert p.unregister(DEV, 6, OfflineCause.UNREGISTERED) is None
    reg(p, 10, conn_id=7)
    out = p.drop_connection(7, 11)
    assert [x.cause for x in out] == [OfflineCause.CONNECTION_CLOSED.value]


@given(st.lists(st.floats(min_value=0.1, max_value=400), min_size=1, max_size=30))
def test_online_iff_recent_keepalive(gaps: list[float]) -> None:
    """After any keepalive sequence, the device is online exactly when the last one is < 180 s old."""
    p = Presence(keepalive_interval=60, keepalive_count=3)
    reg(p, 0, expires=10**9)
    now = 0.0
    for gap in gaps:
        now += gap
        p.expire(now - 1e-9)
        p.activity(DEV, now, keepalive=True)
    rec = p.get(DEV)
    assert rec is not None and rec.online
    p.expire(now + 179.999)
    assert rec.online
    p.expire(now + 180)
    assert not rec.online


def test_registration_running_out_while_offline_is_reported_for_cleanup() -> None:
    """keepalive 60 × 3 → offline at 180 (keepalive_lost); the registration (expires 300) runs out at
    300 without a transition, so it is reported by drain_dropped() once (its stored binding goes)."""
    from gateway.gb.presence import Presence

    p = Presence(keepalive_interval=60, keepalive_count=3)
    p.register("34020000001320000001", transport="udp", host="h", port=1, conn_id=None, call_id="c",
               contact="", expires=300, now=0.0)
    assert [t.cause for t in p.expire(180.0)] == ["keepalive_lost"]
    assert p.drain_dropped() == []
    assert p.expire(300.0) == []
    assert p.drain_dropped() == ["34020000001320000001"]
    assert p.drain_dropped() == []


def test_restored_registration_comes_online_with_its_first_keepalive() -> None:
    from gateway.gb.presence import Presence

    p = Presence(keepalive_interval=60, keepalive_count=3)
    rec = p.restore("34020000001320000001", transport="udp", host="h", port=1, call_id="c", contact="",
                    expires_at=1000.0, registered_at=100.0, now=500.0)
    assert not rec.online and p.next_deadline() == 1000.0
    t = p.activity("34020000001320000001", 510.0, keepalive=True)
    assert t is not None and t.cause == "keepalive_resumed" and rec.online
    assert p.next_deadline() == 690.0  # 510 + 60 × 3, before the expiry


def test_a_platforms_channels_go_offline_because_of_the_platform() -> None:
    from gateway.gb.presence import PLATFORM_OFFLINE, OfflineCause, channel_offline_cause

    plat, nvr = "34020000002000000001", "34020000001180000001"
    for cause in (OfflineCause.KEEPALIVE_LOST, OfflineCause.EXPIRED, OfflineCause.UNREGISTERED,
                  OfflineCause.CONNECTION_CLOSED):
        assert channel_offline_cause(plat, cause.value) == PLATFORM_OFFLINE
        assert channel_offline_cause(nvr, cause.value) == cause.value  # an NVR's channels keep its cause
    # our own doing is not the platform's fault
    assert channel_offline_cause(plat, OfflineCause.SHUTDOWN.value) == "gateway_stopped"
    assert channel_offline_cause(plat, OfflineCause.REVOKED.value) == "revoked"
    # 215/216 are org nodes, never registering platforms
    assert channel_offline_cause("34020000002160000001", "keepalive_lost") == "keepalive_lost"


def test_keepalives_move_one_heap_entry_lazily() -> None:
    """A keepalive pushes no heap entry: the device's one entry moves on when it surfaces, and the
    deadlines seen from outside are exact."""
    p = Presence(keepalive_interval=60, keepalive_count=3)
    reg(p, 0)
    for k in range(1, 1001):
        assert p.activity(DEV, k * 0.5, keepalive=True) is None
    assert len(p._heap) == 1
    assert p.next_deadline() == 500 + 180 and len(p._heap) == 1
    assert p.expire(679.9) == [] and len(p._heap) == 1
    out = p.expire(680)
    assert [(t.state, t.cause) for t in out] == [(PresenceState.OFFLINE, OfflineCause.KEEPALIVE_LOST.value)]
    assert p.next_deadline() == 3600


def test_a_keepalive_after_the_clock_stepped_back_is_watched_at_its_earlier_deadline() -> None:
    p = Presence(keepalive_interval=60, keepalive_count=3)
    reg(p, 100)
    p.activity(DEV, 50, keepalive=True)
    assert p.next_deadline() == 230
    assert [t.cause for t in p.expire(230)] == [OfflineCause.KEEPALIVE_LOST.value]


def test_a_workers_replica_never_grows_a_heap() -> None:
    from gateway.app.sip_shared import ReplicaPresence

    p = ReplicaPresence(keepalive_interval=60, keepalive_count=3)
    p.put(DEV, transport="udp", host="127.0.0.1", port=5060, call_id="c1", online=True, now=0)
    for k in range(100):
        p.activity(DEV, float(k), keepalive=True)
    assert p._heap == [] and p.expire(10**9) == [] and DEV in p
