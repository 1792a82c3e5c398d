"""The composition root: planes report their own status on /healthz, and a failed start unwinds."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.app.status import ComponentStatus
from gateway.health.rules import NoVideoRule
from gateway.health.timeline import State
from tests.interop.conftest import gateway_settings

COMPONENTS = ("database", "sip", "health_journal", "media", "scheduler")


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_settings(tmp_path))
    await g.start()
    yield g
    await g.stop()


async def _healthz(gw: Gateway) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{gw.http_url}/healthz") as resp:
        return resp.status, await resp.json()


async def test_healthz_reports_every_plane_ok(gw: Gateway) -> None:
    status, body = await _healthz(gw)
    assert status == 200 and body["status"] == "ok"
    assert body["components"] == dict.fromkeys(COMPONENTS, "ok")
    assert gw.http_port != 0  # the bound port, not the configured 0


async def test_a_stopped_component_shows_not_ok(gw: Gateway) -> None:
    assert gw.services is not None and gw.media is not None
    await gw.services.reports.scheduler.stop()
    status, body = await _healthz(gw)
    assert status == 503 and body["status"] == "degraded"
    assert body["components"]["scheduler"] == "stopped"
    assert body["components"]["database"] == "ok"
    await gw.media.hub.stop()
    _, body = await _healthz(gw)
    assert body["components"]["media"] == "stopped"


async def test_a_failed_start_unwinds_the_planes_already_started(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        g = Gateway(gateway_settings(tmp_path, GBGATE_HTTP__HOST="127.0.0.1",
                                     GBGATE_HTTP__PORT=str(taken.getsockname()[1])))
        with pytest.raises(OSError):
            await g.start()
    finally:
        taken.close()
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not names & {"device-writer", "picture-probe", "ledger-scheduler"}
    assert g.endpoint is None  # nothing half-started is left on the node
    await g.stop()  # harmless after a failed start


def test_component_status_is_read_when_asked() -> None:
    running = {"db": True}
    board = ComponentStatus({"db": lambda: "ok" if running["db"] else "stopped"})
    assert dict(board) == {"db": "ok"}
    running["db"] = False
    assert dict(board) == {"db": "stopped"}


class _Health:
    def __init__(self, state: State) -> None:
        self.states = {"channel:1": state}
        self.calls: list[tuple[str, str, str, float]] = []

    def state_of(self, subject: str) -> State | None:
        return self.states.get(subject)

    def set_state(self, subject: str, state: str, cause: str, ts: float, evidence: Any = None) -> None:
        self.calls.append((subject, str(state), cause, ts))


@pytest.mark.parametrize(("before", "ok", "after"), [
    (State.online, False, "no_video"),
    (State.no_video, True, "online"),
    (State.online, True, None),           # video as expected: nothing to record
    (State.offline, False, None),         # no signalling: offline already says it
])
def test_no_video_rule(before: State, ok: bool, after: str | None) -> None:
    health = _Health(before)
    NoVideoRule(health, lambda: 42.0)("1", ok, "cause", {})  # type: ignore[arg-type]
    assert health.calls == ([] if after is None else [("channel:1", after, "cause", 42.0)])
