"""sipp (Debian sip-tester) as a GB/T 28181 camera against the real gateway."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from gateway.app import Gateway
from tests.interop.conftest import run_sipp, whitelist

pytestmark = [pytest.mark.interop, pytest.mark.requires("sipp")]

CAM = "34020000001320000101"
PASSWORD = "12345678"


def auth(device_id: str, password: str) -> str:
    return f"[authentication username={device_id} password={password}]"


async def _async(value: bool) -> bool:
    return value


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_camera_registers_with_digest_and_keepalive(gateway: Gateway, tmp_path: Path) -> None:
    await whitelist(gateway, CAM, PASSWORD, name="东门")
    result = await run_sipp(gateway, "reg_keepalive.xml", [[CAM, auth(CAM, PASSWORD)]], tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.messages[-3000:]
    assert "SIP/2.0 401" in result.messages and "WWW-Authenticate: Digest" in result.messages
    assert "Date: " in result.messages  # time sync in the 200 OK (§3.5)
    rec = gateway.adapter.presence.get(CAM)  # type: ignore[union-attr]
    assert rec is not None and rec.online and rec.last_keepalive is not None
    stats = gateway.adapter.stats  # type: ignore[union-attr]
    assert stats["auth:ok"] == 1 and stats["manscdp:Notify:Keepalive"] == 1


async def test_camera_registers_over_tcp(gateway: Gateway, tmp_path: Path) -> None:
    """SIP over TCP (one connection, RFC 3261 §18) with a real peer, on both event loops: under
    uvloop the connection used to be reset in connection_made (issue 9)."""
    await whitelist(gateway, CAM, PASSWORD, name="东门")
    result = await run_sipp(gateway, "reg_keepalive.xml", [[CAM, auth(CAM, PASSWORD)]], tmp_path, transport="t1")
    assert result.returncode == 0, result.stdout[-2000:] + result.messages[-3000:]
    assert "SIP/2.0 401" in result.messages and "SIP/2.0/TCP" in result.messages
    stats = gateway.adapter.stats  # type: ignore[union-attr]
    assert stats["auth:ok"] == 1 and stats["manscdp:Notify:Keepalive"] == 1
    assert gateway.endpoint.stats["tcp_closed_framing"] == 0  # type: ignore[union-attr]
    # sipp closed its connection at the end: a TCP device is unreachable without it, so offline
    await wait_for(lambda: _async(gateway.adapter.presence.get(CAM) is None))  # type: ignore[union-attr]


async def test_wrong_password_is_refused_like_an_unknown_id_and_counted(gateway: Gateway, tmp_path: Path) -> None:
    await whitelist(gateway, CAM, PASSWORD)
    result = await run_sipp(gateway, "reg_badpass.xml", [[CAM, auth(CAM, "wrong")]], tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.messages[-3000:]
    assert gateway.adapter.presence.get(CAM) is None  # type: ignore[union-attr]
    assert gateway.adapter.stats["auth:failed"] == 1  # type: ignore[union-attr]


async def test_unknown_device_gets_403_and_is_pending(gateway: Gateway, tmp_path: Path) -> None:
    stranger = "34020000001320000999"
    result = await run_sipp(gateway, "reg_expect_403.xml", [[stranger, auth(stranger, "guess")]], tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.messages[-3000:]
    store = gateway.services.admission.store  # type: ignore[union-attr]

    async def pending() -> bool:
        entry = await store.get(stranger)
        return entry is not None and entry.status.value == "pending"

    await wait_for(pending)
    entry = await store.get(stranger)
    assert entry.evidence["source"] == "127.0.0.1" and entry.evidence["user_agent"] == "sipp-gb28181-ipc"
    assert entry.evidence["attempts"] >= 1


async def test_sipp_answers_catalog_and_channels_appear_in_api(gateway: Gateway, tmp_path: Path) -> None:
    from gateway.api.auth import Role

    await whitelist(gateway, CAM, PASSWORD)
    done = asyncio.Event()
    sipp_run = asyncio.create_task(
        run_sipp(
            gateway, "camera_register_wait.xml", [[CAM, auth(CAM, PASSWORD)]], tmp_path,
            extra=["-oocsf", str(Path(__file__).parents[1] / "data" / "sipp" / "camera_answers.xml")], done=done,
        )
    )
    svc = gateway.services
    assert svc is not None

    async def two_channels() -> bool:
        return len(await svc.repo.list_channels(CAM)) == 2

    await wait_for(two_channels, 12)
    token = await svc.tokens.create(Role.PLATFORM, "t")
    import aiohttp

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(f"{gateway.http_url}/api/v1/devices/{CAM}/channels") as resp:
            assert resp.status == 200
            body = await resp.json()
        async with http.get(f"{gateway.http_url}/api/v1/devices/{CAM}") as resp:
            device = await resp.json()
    ids = sorted(c["channel_id"] for c in body["channels"])
    assert ids == ["34020000001310000101", "34020000001310000102"]
    statuses = {c["channel_id"]: c["status"] for c in body["channels"]}
    assert statuses == {"34020000001310000101": "ON", "34020000001310000102": "OFF"}
    assert device["manufacturer"] == "SippVision" and device["model"] == "SV-1" and device["channels"] == 2
    done.set()  # the camera's final keepalive now, not after its whole wait
    result = await sipp_run
    assert result.returncode == 0, result.stdout[-2000:] + result.messages[-3000:]


async def catalog_applied(gw: Gateway) -> bool:
    """This gateway's first catalog from the camera arrived and was compared with the stored one."""
    assert gw.adapter is not None
    return gw.adapter.stats["catalog:complete"] == 1 and not gw.adapter.catalog.in_flight()


async def test_unchanged_catalog_after_restart_is_not_rewritten(tmp_path: Path) -> None:
    """After a restart the stored catalog is the baseline: the same catalog again changes nothing."""
    from tests.interop.conftest import gateway_settings

    answers = Path(__file__).parents[1] / "data" / "sipp" / "camera_answers.xml"
    for run in range(2):
        gw = Gateway(gateway_settings(tmp_path))
        await gw.start()
        try:
            if run == 0:
                await whitelist(gw, CAM, PASSWORD)
            done = asyncio.Event()
            sipp_run = asyncio.create_task(run_sipp(gw, "camera_register_wait.xml", [[CAM, auth(CAM, PASSWORD)]],
                                                    tmp_path, extra=["-oocsf", str(answers)], done=done))
            await wait_for(functools.partial(catalog_applied, gw), 12)
            done.set()
            result = await sipp_run
            assert result.returncode == 0, result.messages[-2000:]
            await gw.services.repo.flush()  # type: ignore[union-attr]
            events = [e.kind for e in await gw.services.repo.events(CAM)]  # type: ignore[union-attr]
        finally:
            await gw.stop()
    assert events.count("catalog_changed") == 1, events
    assert events.count("registered") == 2
