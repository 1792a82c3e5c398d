"""adapters/rtsp.py without a peer: admission at open (the attacker's cases), redaction, back-off,
health, the routed opener. The real RTSP server is in tests/interop/test_rtsp_source.py."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

import adapters.rtsp as rtsp
from adapters.rtsp import PullSettings, PullSources, backoff
from gateway.media.errors import NotAdmitted, StreamTimeout
from gateway.media.hub import StreamHub
from gateway.media.routing import RoutedOpener
from whitelist.decide import Policy
from whitelist.model import Entry, EntryStatus, parse_networks

CH = "34020000001310000001"
PASSWORD = "n0t-in-any-log"
NOW = 1_796_000_000.0


@dataclass(frozen=True)
class Src:
    channel_id: str
    url: str
    username: str = "admin"
    password: str = field(default=PASSWORD, repr=False)
    enabled: bool = True
    always_on: bool = False


class Audit:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def append_audit(self, **kw: Any) -> None:
        self.records.append(kw)


class Health:
    def __init__(self) -> None:
        self.states: list[tuple[str, str, str]] = []

    def set_state(self, subject: str, state: str, cause: str, ts: float, evidence: Any = None) -> None:
        self.states.append((subject, state, cause))


def pulls(sources: str = "192.168.1.0/24", resolved: dict[str, list[str]] | None = None,
          **kw: Any) -> tuple[PullSources, Audit, Health]:
    policy = Policy([Entry(device_id=CH, status=EntryStatus.APPROVED, allowed_sources=parse_networks([sources]))])
    audit, health = Audit(), Health()
    table = resolved or {}

    async def resolver(host: str) -> list[str]:
        return table.get(host, [host])

    p = PullSources(policy=policy, health=health, auditor=audit, resolver=resolver, wall_clock=lambda: NOW,
                    settings=PullSettings(timeout=0.2, backoff_min=0.01, backoff_max=0.04, hold_timeout=0.3), **kw)
    return p, audit, health


async def test_open_refuses_a_host_outside_the_whitelist_audits_once_and_logs_no_password(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p, audit, _ = pulls()
    p.put(Src(CH, "rtsp://10.9.9.9/admin"))
    hub = StreamHub(p, ready_timeout=0.5)
    for _ in range(3):  # a viewer hammering a refused source: one audit record, not three
        with pytest.raises(NotAdmitted) as err:
            await hub.subscribe(CH)
        assert "NOT_ADMITTED" in str(err.value) and PASSWORD not in str(err.value)
    assert len(audit.records) == 1 and audit.records[0]["action"] == "pull_refused"
    assert audit.records[0]["after"]["url"] == "rtsp://admin:***@10.9.9.9/admin"
    assert PASSWORD not in caplog.text and PASSWORD not in str(audit.records)
    await hub.stop()


async def test_a_name_resolving_outside_is_refused_and_one_inside_is_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    p, _, _ = pulls(resolved={"evil.example": ["192.168.1.9", "10.0.0.1"], "cam.example": ["192.168.1.9"]})
    p.put(Src(CH, "rtsp://evil.example/x"))
    hub = StreamHub(p, ready_timeout=0.5)
    with pytest.raises(NotAdmitted, match=r"evil.example \(10.0.0.1\)"):
        await hub.subscribe(CH)
    opened: list[str] = []

    def fake_open(url: str, **kw: Any) -> Any:
        opened.append(url)
        raise OSError(f"[Errno 111] Connection refused: '{url}'")

    monkeypatch.setattr(rtsp.av, "open", fake_open)
    p.put(Src(CH, "rtsp://cam.example:8554/x"))
    with pytest.raises(Exception):  # noqa: B017 - no video: the hub's timeout
        await hub.subscribe(CH, timeout=0.3)
    assert opened and all(u == f"rtsp://admin:{PASSWORD}@192.168.1.9:8554/x" for u in opened)
    await hub.stop()


async def test_unreachable_source_backs_off_goes_offline_and_never_leaks_the_password(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p, _, health = pulls()
    calls: list[dict[str, str]] = []

    def fake_open(url: str, *, options: dict[str, str], timeout: Any) -> Any:
        calls.append(options)
        raise OSError(f"Server returned 401 Unauthorized: '{url}'")

    monkeypatch.setattr(rtsp.av, "open", fake_open)
    p.put(Src(CH, "rtsp://192.168.1.5/live"))
    hub = StreamHub(p, ready_timeout=0.5)
    with pytest.raises(StreamTimeout) as err:
        await hub.subscribe(CH, timeout=0.4)
    snap = p.sessions.get(CH)
    await hub.stop()
    why = err.value.trace[-1]["diagnosis"]   # "why no stream", as /api/v1/streams and the 504 say
    assert why.startswith("the source could not be opened: Server returned 401")
    assert PASSWORD not in str(err.value.trace)
    assert len(calls) >= 3
    assert [c["rtsp_transport"] for c in calls[:3]] == ["tcp", "udp", "tcp"]  # a server refusing TCP gets UDP
    assert (f"channel:{CH}", "offline", "pull_unreachable") in health.states
    assert PASSWORD not in caplog.text
    assert snap is None or PASSWORD not in str(snap.stats())


def test_a_revoked_channel_has_its_pulled_stream_ended() -> None:
    p, _, _ = pulls()
    ended: list[tuple[str, str]] = []
    p.hub = type("Hub", (), {"end": lambda self, c, r: ended.append((c, r))})()  # type: ignore[assignment]
    p.put(Src(CH, "rtsp://192.168.1.5/live"))
    p.on_dropped("34020000001320000001")  # a GB device: not ours
    p.on_dropped(CH)
    assert ended == [(CH, "revoked")]


def test_backoff_is_capped_exponential() -> None:
    assert [backoff(i, 0.5, 30) for i in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff(10_000, 0.5, 30) == 30


async def test_routed_opener_sends_pull_channels_to_the_pull_sources() -> None:
    p, _, _ = pulls()
    p.put(Src(CH, "rtsp://10.9.9.9/x"))
    seen: list[str] = []

    class Gb:
        async def open(self, channel_id: str, sink: Any) -> Any:
            seen.append(channel_id)
            raise NotAdmitted("gb")

    routes = RoutedOpener(Gb())
    routes.add(p.owns, p)
    assert routes.opener_for(CH) is p and routes.opener_for("34020000001320000001") is routes.default
    hub = StreamHub(routes, ready_timeout=0.5)
    with pytest.raises(NotAdmitted, match="gb"):
        await hub.subscribe("34020000001320000001")
    assert seen == ["34020000001320000001"]
    p.remove(CH)
    assert routes.opener_for(CH) is routes.default
    await hub.stop()


async def test_always_on_sources_are_held_and_released(monkeypatch: pytest.MonkeyPatch) -> None:
    p, _, _ = pulls()
    opens = asyncio.Event()

    def fake_open(url: str, **kw: Any) -> Any:
        opens.set()
        raise OSError("down")

    monkeypatch.setattr(rtsp.av, "open", fake_open)
    hub = StreamHub(p, ready_timeout=0.5)
    p.hub = hub
    p.put(Src(CH, "rtsp://192.168.1.5/live", always_on=True))
    await asyncio.wait_for(opens.wait(), 2)  # opened with no viewer at all
    assert CH in p.snapshot()["always_on_held"]
    p.put(Src(CH, "rtsp://192.168.1.5/live", always_on=False))
    await asyncio.sleep(0)
    assert CH not in p.snapshot()["always_on_held"]
    await p.stop()
    await hub.stop()


async def test_reload_follows_the_table_adds_changes_and_removals() -> None:
    table: list[Src] = [Src(CH, "rtsp://192.168.1.5/a")]

    async def loader() -> list[Src]:
        return list(table)

    p, _, _ = pulls(loader=loader)
    ended: list[tuple[str, str]] = []

    class Hub:
        def end(self, channel_id: str, reason: str) -> None:
            ended.append((channel_id, reason))

    p.hub = Hub()  # type: ignore[assignment]
    await p.reload()
    assert p.owns(CH)
    await p.reload()
    assert ended == []                                   # same values: the open stream is left alone
    table[0] = Src(CH, "rtsp://192.168.1.6/b")           # changed with `gbgate source add` elsewhere
    await p.reload()
    assert ended == [(CH, "source_changed")] and p.book[CH].url.endswith("/b")
    table.clear()
    await p.reload()
    assert not p.owns(CH) and ended[-1] == (CH, "source_removed")


async def test_a_file_without_video_frames_backs_off_instead_of_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    p, _, _ = pulls(sources="127.0.0.1/32")
    p.settings = PullSettings(timeout=0.2, backoff_min=0.05, backoff_max=0.05, file_root="/srv")
    opens: list[str] = []

    from types import SimpleNamespace

    class Empty:  # a container with an H.264 stream and no packets (EOF at once)
        streams = SimpleNamespace(audio=[], video=[SimpleNamespace(
            index=0, time_base=None, codec_context=SimpleNamespace(name="h264", extradata=None))])

        def demux(self, *a: Any) -> list[Any]:
            return []

        def close(self) -> None:
            pass

    def fake_open(url: str, **kw: Any) -> Any:
        opens.append(url)
        return Empty()

    monkeypatch.setattr(rtsp.av, "open", fake_open)
    monkeypatch.setattr(rtsp.os.path, "realpath", lambda path: path)
    p.put(Src(CH, "file:///srv/empty.mp4", username="", password=""))
    hub = StreamHub(p, ready_timeout=0.5)
    with pytest.raises(StreamTimeout):
        await hub.subscribe(CH, timeout=0.3)
    await hub.stop()
    assert 2 <= len(opens) <= 10  # ~0.3 s / 0.05 s back-off, not thousands of reopenings
