"""POST /api/v1/channels/{id}/ptz: roles, field errors, fixed cameras, offline devices, device answers,
and the audit record of every command sent (the wire is tested with sipp in tests/interop)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.auth import Role
from gateway.api.services import Services
from gateway.gb.items import CatalogItem
from gateway.store.devices import make_catalog_job

DEV, OFFLINE = "34020000001320000001", "34020000001320000002"
DOME, FIXED, AWAY = "34020000001310000001", "34020000001310000002", "34020000001310000003"


class Camera:
    """The device adapter's side: presence and the status the device answers DeviceControl with."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.answer: int | Exception = 200

    def live_view(self, device_id: str) -> dict[str, Any] | None:
        return {"online": True} if device_id == DEV else None

    async def device_control(self, channel_id: str, fields: dict[str, str]) -> int:
        self.sent.append((channel_id, fields))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
async def camera(services: Services) -> Camera:
    cam = Camera()
    services.live = cam  # type: ignore[assignment]
    for dev in (DEV, OFFLINE):
        services.repo.update_device(dev, online=dev == DEV)
    await services.repo.flush()
    await services.repo.submit(make_catalog_job(DEV, [CatalogItem(device_id=DOME, ptz_type=1),
                                                      CatalogItem(device_id=FIXED, ptz_type=3)], [], [], {DOME, FIXED}))
    await services.repo.submit(make_catalog_job(OFFLINE, [CatalogItem(device_id=AWAY)], [], [], {AWAY}))
    await services.repo.flush()
    return cam


async def _h(services: Services, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {await services.tokens.create(role, role.value)}"}


async def test_ptz_is_sent_and_audited(client: Any, services: Services, camera: Camera) -> None:
    h = await _h(services, Role.OPS)
    resp = await client.post(f"/api/v1/channels/{DOME}/ptz", json={"action": "zoom_in"}, headers=h)
    assert resp.status == 200, await resp.text()
    assert camera.sent == [(DOME, {"PTZCmd": (await resp.json())["ptz_cmd"]})]
    rec = (await services.admission.store.audit_records())[-1]  # type: ignore[union-attr]
    assert (rec.action, rec.target, rec.actor) == ("ptz", DOME, "ops:ops")
    assert rec.after == {"device_id": DEV, "action": "zoom_in", "ptz_cmd": camera.sent[0][1]["PTZCmd"],
                         "device_status": 200}


@pytest.mark.parametrize(("channel", "body", "status", "field"), [
    ("123", {"action": "left"}, 400, "channel_id"),
    (DOME, {"action": "spin"}, 400, "action"),
    (DOME, {"action": 7}, 400, "action"),
    (DOME, {"action": "left", "speed": "fast"}, 400, "speed"),
    (DOME, {"action": "left", "speed": 300}, 400, "speed"),
    (DOME, {"action": "preset_set", "preset": 0}, 400, "preset"),
    ("34020000001310000099", {"action": "left"}, 404, "channel_id"),
    (FIXED, {"action": "left"}, 409, "channel_id"),
    (AWAY, {"action": "left"}, 409, "channel_id"),
])
async def test_refusals_name_the_field_and_send_nothing(client: Any, services: Services, camera: Camera,
                                                        channel: str, body: dict[str, Any], status: int,
                                                        field: str) -> None:
    resp = await client.post(f"/api/v1/channels/{channel}/ptz", json=body, headers=await _h(services, Role.PLATFORM))
    assert resp.status == status
    assert (await resp.json())["error"]["field"] == field
    assert camera.sent == []


async def test_device_refusal_and_silence_are_told_apart_and_both_audited(client: Any, services: Services,
                                                                         camera: Camera) -> None:
    h = await _h(services, Role.PLATFORM)
    camera.answer = 488
    resp = await client.post(f"/api/v1/channels/{DOME}/ptz", json={"action": "up"}, headers=h)
    assert resp.status == 502 and (await resp.json())["error"]["code"] == "device_refused"
    camera.answer = TimeoutError("no answer")
    resp = await client.post(f"/api/v1/channels/{DOME}/ptz", json={"action": "up"}, headers=h)
    assert resp.status == 504
    statuses = [r.after["device_status"] for r in await services.admission.store.audit_records()  # type: ignore[union-attr,index]
                if r.action == "ptz"]
    assert statuses == [488, 0]


@pytest.mark.parametrize("role", [Role.INTEGRATOR, Role.SECURITY, Role.VENDOR])
async def test_other_roles_may_not_steer(client: Any, services: Services, camera: Camera, role: Role) -> None:
    resp = await client.post(f"/api/v1/channels/{DOME}/ptz", json={"action": "left"}, headers=await _h(services, role))
    assert resp.status == 403 and camera.sent == []
