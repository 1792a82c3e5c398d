"""Issue 12 #3 with a sipp camera: a play request made while the camera's catalog is still being
synced (and before the batched store write) resolves to the camera instead of 404."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.app import Gateway
from gateway.media.errors import StreamError
from tests.interop.conftest import run_sipp, whitelist
from tests.interop.test_sipp_signalling import auth, wait_for

CAM = "34020000001320000821"
PW = "Cam-pass-821"
CHANNEL = "34020000001310000101"  # the first channel in camera_answers.xml


async def test_play_during_catalog_sync_waits_instead_of_404(gateway: Gateway, tmp_path: Path) -> None:
    await whitelist(gateway, CAM, PW)
    answers = Path(__file__).parents[1] / "data" / "sipp" / "camera_answers.xml"
    done = asyncio.Event()  # set: the camera's final keepalive without its full wait
    sipp = asyncio.create_task(
        run_sipp(gateway, "camera_register_wait.xml", [[CAM, auth(CAM, PW)]], tmp_path, extra=["-oocsf", str(answers)],
                 done=done)
    )
    adapter, plane = gateway.adapter, gateway.media
    assert adapter is not None and plane is not None and gateway.services is not None

    async def registered() -> bool:
        return CAM in adapter.presence

    await wait_for(registered, 10)
    # the viewer asks at once: DeviceInfo and Catalog are still on their way
    assert await gateway.services.repo.find_channel(CHANNEL) is None
    device_id, rec = await plane.invites.resolve(CHANNEL)
    assert device_id == CAM and rec.online
    # an unknown channel still gets its 404 once no sync is in flight (the wait is bounded)
    try:
        await plane.invites.resolve("34020000001310000199")
    except StreamError as exc:
        assert exc.status == 404
    else:
        raise AssertionError("an unknown channel resolved")
    done.set()
    result = await sipp
    assert result.returncode == 0, result.messages[-3000:]
