"""The guards the SIP processes share (gateway/app/sip_shared.py) and `sip.workers` (sans-IO)."""

from __future__ import annotations

import pytest

from gateway.app.sip_shared import ObservedPresence, ReplicaPresence, SharedFlood, SharedLockout
from gateway.config import load_settings, worker_count
from gateway.errors import ConfigError
from gateway.gb.presence import OfflineCause
from whitelist.decide import Reason

DEV = "34020000001320000001"


def test_lockout_copies_agree_when_they_see_the_same_events() -> None:
    """Failures counted on two workers, each relayed to the other: both lock at max_failures."""
    a, b = SharedLockout(max_failures=3), SharedLockout(max_failures=3)
    sent: list[tuple[str, str, str, float]] = []
    a.on_event = b.on_event = lambda *e: sent.append(e)
    a.record_failure(DEV, "10.0.0.1", 1.0)
    b.record_failure(DEV, "10.0.0.2", 2.0)
    assert [e[0] for e in sent] == ["failure", "failure"]
    b.apply_failure(*sent[0][1:])
    a.apply_failure(*sent[1][1:])
    assert a.record_failure(DEV, "10.0.0.1", 3.0) is Reason.LOCKED_ID  # third failure, counted on a
    b.apply_failure(*sent[2][1:])
    assert a.is_locked(DEV, "10.0.0.9", 4.0) is b.is_locked(DEV, "10.0.0.9", 4.0) is Reason.LOCKED_ID
    assert len(sent) == 3  # apply_* reports nothing


def test_success_is_reported_only_when_it_clears_something() -> None:
    lock = SharedLockout()
    sent: list[object] = []
    lock.on_event = lambda *e: sent.append(e)
    lock.record_success(DEV, "10.0.0.1", 1.0)
    assert sent == []
    lock.record_failure(DEV, "10.0.0.1", 1.0)
    lock.record_success(DEV, "10.0.0.1", 2.0)
    assert [e[0] for e in sent] == ["failure", "success"]  # type: ignore[index]


def test_a_new_flood_ban_is_announced_once_and_applies_elsewhere() -> None:
    flood, other = SharedFlood(max_per_second=2, ban_for=10), SharedFlood(max_per_second=2, ban_for=10)
    bans: list[tuple[str, float]] = []
    flood.on_ban = lambda host, until: bans.append((host, until))
    results = [flood.allow("10.0.0.1", 100.0) for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert bans == [("10.0.0.1", 110.0)]
    other.ban(*bans[0])
    assert not other.allow("10.0.0.1", 105.0) and other.allow("10.0.0.1", 111.0)


def test_observed_presence_tells_binding_changes_not_refreshes() -> None:
    p = ObservedPresence(keepalive_interval=10, keepalive_count=1)
    told: list[tuple[str, bool | None]] = []
    p.listener = lambda d, rec: told.append((d, None if rec is None else rec.online))
    kw = dict(transport="udp", host="10.0.0.1", port=5060, conn_id=None, call_id="c", contact="", expires=60)
    p.register(DEV, now=0.0, **kw)
    p.register(DEV, now=1.0, **kw)  # a refresh from the same place: nothing to tell
    p.activity(DEV, 2.0, keepalive=True)
    assert told == [(DEV, True)]
    p.expire(20.0)  # keepalive lost: offline
    p.activity(DEV, 21.0, keepalive=True)  # back
    p.unregister(DEV, 22.0, OfflineCause.UNREGISTERED)
    assert told == [(DEV, True), (DEV, False), (DEV, True), (DEV, None)]


def test_replica_keeps_no_deadlines() -> None:
    r = ReplicaPresence()
    r.put(DEV, transport="udp", host="10.0.0.1", port=5060, call_id="c", online=False, now=0.0)
    rec = r.get(DEV)
    assert rec is not None and not rec.online and r.next_deadline() is None and r.expire(1e12) == []
    r.drop(DEV)
    assert r.get(DEV) is None


def test_workers_setting() -> None:
    assert worker_count("auto", 4) == 4 and worker_count("2") == 2 and worker_count("1") == 1
    assert load_settings(env={"GBGATE_SIP__WORKERS": "auto"}).sip.workers == "auto"
    assert load_settings(env={}).sip.workers == "1"
    for bad in ("0", "many", "-1"):
        with pytest.raises(ConfigError, match=r"sip\.workers"):
            load_settings(env={"GBGATE_SIP__WORKERS": bad})
