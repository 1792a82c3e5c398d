"""SIP on every core, end to end: the signalling interop runs with `sip.workers` 1 and 2, and the
attacks that several processes could open (issue 15): a lockout budget per device, not per worker."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from tests.interop.conftest import gateway_settings, run_sipp, whitelist

pytestmark = [pytest.mark.interop]

CAM = "34020000001320000101"
PASSWORD = "12345678"
REALM = "3402000000"
ANSWERS = Path(__file__).parents[1] / "data" / "sipp" / "camera_answers.xml"


def auth(device_id: str, password: str) -> str:
    return f"[authentication username={device_id} password={password}]"


@pytest.fixture(params=[1, 2], ids=["workers1", "workers2"])
async def gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_settings(tmp_path, GBGATE_SIP__WORKERS=str(request.param)))
    await g.start()
    try:
        yield g
    finally:
        await g.stop()


async def eventually(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.mark.requires("sipp")
async def test_register_and_keepalive(gw: Gateway, tmp_path: Path) -> None:
    await whitelist(gw, CAM, PASSWORD, name="东门")
    result = await run_sipp(gw, "reg_keepalive.xml", [[CAM, auth(CAM, PASSWORD)]], tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.messages[-3000:]
    assert "SIP/2.0 401" in result.messages and "Date: " in result.messages
    adapter = gw.adapter
    assert adapter is not None
    await eventually(lambda: adapter.stats["manscdp:Notify:Keepalive"] == 1)  # workers report every 0.2 s
    rec = adapter.presence.get(CAM)
    assert rec is not None and rec.online and rec.last_keepalive is not None
    assert adapter.stats["auth:ok"] == 1
    if gw.sip_workers is not None:
        assert adapter.stats["workers:register"] == 2  # both REGISTERs were a worker's, none main's
    await gw.services.repo.flush()  # type: ignore[union-attr]
    events = [e.kind for e in await gw.services.repo.events(CAM)]  # type: ignore[union-attr]
    assert "registered" in events


@pytest.mark.requires("sipp")
async def test_catalog_through_workers(gw: Gateway, tmp_path: Path) -> None:
    """Main's queries go out from the shared port; the device's answers come back through a worker."""
    await whitelist(gw, CAM, PASSWORD)
    sipp_run = asyncio.create_task(run_sipp(gw, "camera_register_wait.xml", [[CAM, auth(CAM, PASSWORD)]], tmp_path,
                                            extra=["-oocsf", str(ANSWERS)]))
    svc = gw.services
    assert svc is not None
    deadline = asyncio.get_running_loop().time() + 12
    while len(await svc.repo.list_channels(CAM)) != 2:
        assert asyncio.get_running_loop().time() < deadline, "catalog not synced"
        await asyncio.sleep(0.1)
    result = await sipp_run
    assert result.returncode == 0, result.stdout[-2000:] + result.messages[-3000:]
