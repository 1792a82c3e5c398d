"""Issue 11.1: after a restart, a device not heard from within keepalive × count becomes offline."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gateway.health.journal import Journal, replay_file
from gateway.health.recorder import CAUSE_SILENT_AFTER_RESTART, HealthRecorder, silent_after_restart
from gateway.health.timeline import Event, State, build_intervals, totals_of

T0 = 1_764_000_000.0  # last evidence before the crash
T1 = T0 + 3600.0  # restart
WINDOW = 60.0 * 3  # keepalive_interval 60 s × keepalive_timeout_count 3


class FakeStore:
    def __init__(self, latest: Iterable[Event]) -> None:
        self._latest = {e.subject: e for e in latest}
        self.inserted: list[Event] = []

    async def latest(self) -> dict[str, Event]:
        return dict(self._latest)

    async def insert(self, events: Iterable[Event]) -> None:
        self.inserted.extend(events)

    async def last_ts(self) -> float | None:
        return max((e.ts for e in self._latest.values()), default=None)


def _online(subject: str) -> Event:
    return Event(f"pre:{subject}", subject, T0, State.online, "registered", {})


async def test_silent_device_goes_offline_after_keepalive_window(tmp_path: Path) -> None:
    """D (and its channel C) were online at T0, the gateway died, restarted at T0 + 1 h.
    E registers again 30 s after the restart; F's persisted binding is found expired and the
    registrar records it offline (cause expired) at once. Only D and C are silent: at
    T1 + 180 s they become offline. Hand, over [T0, T1 + 3600): D is unknown T0 → T1 + 180
    (3,780 s: the restart gap and the window in which it could still speak) and offline
    T1 + 180 → T1 + 3600 (3,420 s); E and F are never marked silent."""
    now = [T1]
    store = FakeStore(_online(s) for s in ("device:D", "channel:C", "device:E", "device:F"))
    journal = Journal(tmp_path / "journal.log", fsync_interval=0.01)
    rec = HealthRecorder(journal, store, heartbeat_path=tmp_path / "hb", clock=lambda: now[0], silent_after=3600.0 * 24)
    rec.silent_after = WINDOW  # the task armed above sleeps a day; the test runs the check itself
    await rec.start()
    rec.set_state("device:E", "online", "registered", T1 + 30)
    rec.set_state("device:F", "offline", "expired", T1 + 1)
    silent = rec.expire_silent()
    assert sorted(e.subject for e in silent) == ["channel:C", "device:D"]
    assert {e.ts for e in silent} == {T1 + WINDOW}
    assert {e.cause for e in silent} == {CAUSE_SILENT_AFTER_RESTART}
    assert rec.state_of("device:D") is State.offline
    assert rec.state_of("device:E") is State.online
    assert rec.expire_silent() == []  # already offline: nothing twice
    now[0] = T1 + 3600
    await rec.stop()
    events = [e for e in replay_file(tmp_path / "journal.log") if e.subject == "device:D"]
    events += [e for e in store.inserted if e.subject == "device:D" and e.event_id not in {x.event_id for x in events}]
    ivs = build_intervals(events, start=T0, end=T1 + 3600, initial=State.online)
    t = totals_of(ivs)
    assert t[State.unknown] == 3_780_000
    assert t[State.offline] == 3_420_000


def test_pure_rule_skips_heard_and_known_subjects() -> None:
    """Pure form: a subject heard since the start, one already offline, the gateway and a link
    are never marked; an unknown device not heard is, at start + window."""
    last = {
        "device:A": State.unknown,
        "device:B": State.unknown,
        "device:X": State.offline,
        "gateway": State.unknown,
        "link:L1": State.unknown,
    }
    out = silent_after_restart(last, {"device:B"}, started=T1, silent_after=WINDOW)
    assert [(e.subject, e.ts, e.state) for e in out] == [("device:A", T1 + WINDOW, State.offline)]


def test_event_ids_never_repeat_across_recorders_or_a_fork() -> None:
    import os

    from gateway.health.recorder import EventIds

    a, b = EventIds(), EventIds()
    ids = [a() for _ in range(1000)] + [b() for _ in range(1000)]
    assert len(set(ids)) == 2000 and all(len(i) <= 100 for i in ids)  # health_event.event_id: 100
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child continues with the parent's EventIds object
        os.write(w, a().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 200).decode()
    os.close(r)
    os.close(w)
    assert child not in ids and child.rpartition("-")[0] != ids[0].rpartition("-")[0]
