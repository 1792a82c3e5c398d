"""Admission control against sipp cameras, with the security team acting through the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from tests.interop.conftest import gateway_settings, run_sipp, whitelist
from tests.interop.test_sipp_signalling import auth, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.requires("sipp")]

CAM = "34020000001320000811"
PW = "Cam-pass-811"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_settings(tmp_path, GBGATE_WHITELIST__MAX_FAILURES="3", GBGATE_WHITELIST__LOCK_FOR="3"))
    await g.start()
    yield g
    await g.stop()


async def cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    """The security team's CLI, in its own process, on the gateway's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBGATE_")}
    env["GBGATE_DATABASE__URL"] = gw.settings.database.url
    env["GBGATE_DATA_DIR"] = gw.settings.data_dir
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_unknown_then_approved_via_cli(gw: Gateway, tmp_path: Path) -> None:
    r = await run_sipp(gw, "reg_expect_403.xml", [[CAM, auth(CAM, PW)]], tmp_path)
    assert r.returncode == 0, r.messages[-3000:]
    listing = await cli(gw, "whitelist", "list", "--status", "pending")
    assert CAM in listing.stdout and "127.0.0.1" in listing.stdout and "sipp-gb28181-ipc" in listing.stdout
    approved = await cli(gw, "whitelist", "approve", CAM, "--password", PW, "--reason", "site visit")
    assert approved.returncode == 0, approved.stderr

    async def policy_has_it() -> bool:
        entry = gw.services.admission.policy.get(CAM)  # type: ignore[union-attr]
        return entry is not None and entry.status.value == "approved"

    await wait_for(policy_has_it, 3)
    r = await run_sipp(gw, "reg_keepalive.xml", [[CAM, auth(CAM, PW)]], tmp_path)
    assert r.returncode == 0, r.messages[-3000:]
    assert gw.adapter.presence.get(CAM) is not None  # type: ignore[union-attr]


async def test_wrong_password_locks_even_the_right_one(gw: Gateway, tmp_path: Path) -> None:
    await whitelist(gw, CAM, PW)
    r = await run_sipp(gw, "reg_badpass.xml", [[CAM, auth(CAM, "nope")]] * 2, tmp_path)
    assert r.returncode == 0, r.messages[-3000:]  # 403, 403 (the uniform answer)
    r = await run_sipp(gw, "reg_expect_403.xml", [[CAM, auth(CAM, "nope")]], tmp_path)
    assert r.returncode == 0, r.messages[-3000:]  # third failure: locked
    r = await run_sipp(gw, "reg_expect_403.xml", [[CAM, auth(CAM, PW)]], tmp_path)
    assert r.returncode == 0, r.messages[-3000:]  # the right password is refused while locked
    await asyncio.sleep(3.2)  # lock_for = 3 s in this test
    r = await run_sipp(gw, "reg_keepalive.xml", [[CAM, auth(CAM, PW)]], tmp_path)
    assert r.returncode == 0, r.messages[-3000:]


async def test_second_camera_with_same_id_is_refused_and_alarmed(gw: Gateway, tmp_path: Path) -> None:
    await whitelist(gw, CAM, PW)
    r = await run_sipp(gw, "reg_keepalive.xml", [[CAM, auth(CAM, PW)]], tmp_path)
    assert r.returncode == 0, r.messages[-3000:]
    clone = await run_sipp(gw, "reg_expect_403.xml", [[CAM, auth(CAM, PW)]], tmp_path, local_ip="127.0.0.2")
    assert clone.returncode == 0, clone.messages[-3000:]
    assert gw.adapter.presence.get(CAM).host == "127.0.0.1"  # type: ignore[union-attr]
    assert gw.adapter.stats["alarms:alarm_clone_suspected"] == 1  # type: ignore[union-attr]

    async def alarm_stored() -> bool:
        await gw.services.repo.flush()  # type: ignore[union-attr]
        return any(a.kind == "alarm_clone_suspected" for a in await gw.services.repo.alarms())  # type: ignore[union-attr]

    await wait_for(alarm_stored, 3)
    records = await gw.services.admission.store.audit_records()  # type: ignore[union-attr]
    assert any(r.action == "alarm_clone_suspected" and r.target == CAM for r in records)


async def test_revoke_via_cli_drops_the_device(gw: Gateway, tmp_path: Path) -> None:
    await whitelist(gw, CAM, PW)
    r = await run_sipp(gw, "reg_keepalive.xml", [[CAM, auth(CAM, PW)]], tmp_path)
    assert r.returncode == 0
    revoked = await cli(gw, "whitelist", "revoke", CAM, "--reason", "contract ended")
    assert revoked.returncode == 0, revoked.stderr

    async def gone() -> bool:
        return CAM not in gw.adapter.presence  # type: ignore[union-attr]

    await wait_for(gone, 2)
    r = await run_sipp(gw, "reg_expect_403.xml", [[CAM, auth(CAM, PW)]], tmp_path)
    assert r.returncode == 0, r.messages[-3000:]


async def _camera_with_answers(gw: Gateway, tmp_path: Path, done: asyncio.Event) -> asyncio.Task:  # type: ignore[type-arg]
    """The sipp camera answering queries; setting `done` sends its final keepalive without the full wait."""
    answers = Path(__file__).parents[1] / "data" / "sipp" / "camera_answers.xml"
    return asyncio.create_task(
        run_sipp(gw, "camera_register_wait.xml", [[CAM, auth(CAM, PW)]], tmp_path, extra=["-oocsf", str(answers)],
                 done=done)
    )


async def test_device_info_contradicting_the_whitelist_suspends_the_camera(gw: Gateway, tmp_path: Path) -> None:
    """A camera that says it is a SippVision SV-1 where a Hikvision was approved: cloned or swapped."""
    await whitelist(gw, CAM, PW, expected_manufacturer="Hikvision")
    done = asyncio.Event()
    sipp = await _camera_with_answers(gw, tmp_path, done)
    store = gw.services.admission.store  # type: ignore[union-attr]

    async def suspended() -> bool:
        entry = await store.get(CAM)
        return entry is not None and entry.status.value == "suspended"

    await wait_for(suspended, 12)
    assert CAM not in gw.adapter.presence  # type: ignore[union-attr]
    records = await store.audit_records()
    assert any(r.target == CAM and "DeviceInfo" in r.reason for r in records)
    await gw.services.repo.flush()  # type: ignore[union-attr]
    assert any(a.kind == "alarm_model_mismatch" for a in await gw.services.repo.alarms())  # type: ignore[union-attr]
    done.set()
    await sipp


async def test_channels_beyond_the_allowed_count_are_not_exposed(gw: Gateway, tmp_path: Path) -> None:
    await whitelist(gw, CAM, PW, max_channels=1)
    done = asyncio.Event()
    sipp = await _camera_with_answers(gw, tmp_path, done)
    repo = gw.services.repo  # type: ignore[union-attr]

    async def catalog_in() -> bool:
        return len(await repo.list_channels(CAM, include_hidden=True)) == 2

    await wait_for(catalog_in, 12)
    exposed = [c.channel_id for c in await repo.list_channels(CAM)]
    assert exposed == ["34020000001310000101"]  # the camera reported two; the entry allows one
    done.set()
    await sipp
