"""PTZ from the API to a real camera peer: sipp (Debian sip-tester) registers, answers the catalog,
and receives the DeviceControl MESSAGE our API sends; the PTZCmd it logged is checked byte for byte."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.api.auth import Role
from gateway.app import Gateway
from gateway.gb import ptz
from tests.interop.conftest import run_sipp, whitelist
from tests.interop.test_sipp_signalling import CAM, PASSWORD, auth, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.requires("sipp")]

CHANNEL = "34020000001310000101"
ANSWERS = Path(__file__).parents[1] / "data" / "sipp" / "camera_answers.xml"


async def test_ptz_reaches_the_camera_and_is_audited(gateway: Gateway, tmp_path: Path) -> None:
    await whitelist(gateway, CAM, PASSWORD)
    done = asyncio.Event()  # set: the camera's final keepalive without its full wait
    sipp_run = asyncio.create_task(run_sipp(gateway, "camera_register_wait.xml", [[CAM, auth(CAM, PASSWORD)]],
                                            tmp_path, extra=["-oocsf", str(ANSWERS)], done=done))
    svc = gateway.services
    assert svc is not None and svc.admission is not None

    async def channels() -> bool:
        return len(await svc.repo.list_channels(CAM)) == 2

    await wait_for(channels, 12)
    viewer = await svc.tokens.create(Role.PLATFORM, "wall")
    integrator = await svc.tokens.create(Role.INTEGRATOR, "acme")
    url = f"{gateway.http_url}/api/v1/channels/{CHANNEL}/ptz"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {viewer}"}) as http:
        async with http.post(url, json={"action": "left", "speed": 96}) as resp:
            assert resp.status == 200, await resp.text()
            left = await resp.json()
        async with http.post(url, json={"action": "stop"}) as resp:
            assert resp.status == 200
        async with http.post(url, json={"action": "preset_call"}) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["field"] == "preset"
        async with http.post(f"{gateway.http_url}/api/v1/channels/34020000001310000999/ptz",
                             json={"action": "stop"}) as resp:
            assert resp.status == 404
        async with http.post(url, json={"action": "left"},
                             headers={"Authorization": f"Bearer {integrator}"}) as resp:
            assert resp.status == 403
    assert (left["device_id"], left["device_status"]) == (CAM, 200)
    assert left["ptz_cmd"] == ptz.command_for("left", speed=96)
    records = await svc.admission.store.audit_records()
    sent = [(r.actor, r.target, r.after["action"]) for r in records if r.action == "ptz"]  # type: ignore[index]
    assert sent == [("platform:wall", CHANNEL, "left"), ("platform:wall", CHANNEL, "stop")]
    done.set()
    result = await sipp_run
    assert result.returncode == 0, result.stdout[-2000:] + result.messages[-3000:]
    # what the camera received: Control/DeviceControl for the channel with exactly these PTZCmds
    assert f"<PTZCmd>{ptz.command_for('left', speed=96)}</PTZCmd>" in result.messages
    assert f"<PTZCmd>{ptz.STOP}</PTZCmd>" in result.messages
    assert f"<DeviceID>{CHANNEL}</DeviceID>" in result.messages
