"""The device API: bearer tokens with roles, JSON errors naming the field, live view from memory."""

from __future__ import annotations

from typing import Any

from gateway.api.auth import Role
from gateway.api.services import Services
from gateway.gb.items import CatalogItem
from gateway.store.devices import make_catalog_job

DEV = "34020000001320000001"
CH = "34020000001310000001"


class FakeLive:
    """Stands in for the device adapter's in-memory presence (the real one is tested end to end)."""

    def live_view(self, device_id: str) -> dict[str, Any] | None:
        if device_id != DEV:
            return None
        return {"online": True, "transport": "udp", "remote": "127.0.0.1:5062", "registered_at": 1.0e9,
                "last_keepalive": 1.0e9 + 60, "expires_at": 1.0e9 + 3600}


async def _seed(svc: Services) -> None:
    svc.repo.update_device(DEV, name="东门", online=True, manufacturer="Hik")
    await svc.repo.flush()
    item = CatalogItem(device_id=CH, name="东门入口", status="ON")
    await svc.repo.submit(make_catalog_job(DEV, [item], [], [], {CH}))


async def test_requires_token(client: Any) -> None:
    resp = await client.get("/api/v1/devices")
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["code"] == "unauthorized"
    resp = await client.get("/api/v1/devices", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401


async def test_healthz_needs_no_token(client: Any) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["components"] == {"database": "ok"}


async def test_list_get_channels(client: Any, services: Services) -> None:
    services.live = FakeLive()
    await _seed(services)
    token = await services.tokens.create(Role.OPS, "t")
    h = {"Authorization": f"Bearer {token}"}
    body = await (await client.get("/api/v1/devices", headers=h)).json()
    assert body["count"] == 1
    d = body["devices"][0]
    assert (d["id"], d["name"], d["online"], d["channels"]) == (DEV, "东门", True, 1)
    assert d["last_keepalive"].startswith("2001-09-09T01:47")
    one = await (await client.get(f"/api/v1/devices/{DEV}", headers=h)).json()
    assert one["manufacturer"] == "Hik"
    chans = await (await client.get(f"/api/v1/devices/{DEV}/channels", headers=h)).json()
    assert [c["channel_id"] for c in chans["channels"]] == [CH]
    assert chans["channels"][0]["name"] == "东门入口"


async def test_errors_name_the_field(client: Any, services: Services) -> None:
    token = await services.tokens.create(Role.PLATFORM)
    h = {"Authorization": f"Bearer {token}"}
    resp = await client.get("/api/v1/devices/12345", headers=h)
    assert resp.status == 400
    assert (await resp.json())["error"] == {
        "code": "invalid_id", "message": "device ID must be exactly 20 digits", "field": "device_id"}
    resp = await client.get("/api/v1/devices/34020000001329999999", headers=h)
    assert resp.status == 404
    assert (await resp.json())["error"]["field"] == "device_id"


async def test_role_is_checked(client: Any, services: Services) -> None:
    await _seed(services)
    token = await services.tokens.create(Role.VENDOR, "v")
    resp = await client.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"


async def test_catalog_refresh_needs_registered_device(client: Any, services: Services) -> None:
    services.live = FakeLive()
    token = await services.tokens.create(Role.INTEGRATOR)
    resp = await client.post("/api/v1/devices/34020000001320000009/catalog",
                             headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "offline"


PLAT = "34020000002000000009"
BG = "34020000002150000001"
VO = "34020000002160000001"


async def test_platform_tree_nests_groups_and_hides_nothing(client: Any, services: Services) -> None:
    """GET /devices/{id}/tree: org nodes with children, channels as leaves (status, exposure)."""
    from gateway.store.devices import NodesWrite

    services.repo.update_device(PLAT, name="火车站平台", online=True)
    await services.repo.flush()
    nodes = [CatalogItem(device_id=BG, name="车站", parent_id=PLAT),
             CatalogItem(device_id=VO, name="站台", parent_id=BG, business_group_id=BG)]
    await services.repo.submit(NodesWrite(PLAT, nodes, True))
    c1 = CatalogItem(device_id="34020000001320000011", name="1站台", parent_id=VO, status="ON")
    c2 = CatalogItem(device_id="34020000001320000012", name="2站台", parent_id=VO, status="OFF")
    c3 = CatalogItem(device_id="34020000001320000013", name="orphan", parent_id="34020000002160009999")
    await services.repo.submit(make_catalog_job(PLAT, [c1, c2, c3], [], [], {c1.device_id, c3.device_id}))
    token = await services.tokens.create(Role.INTEGRATOR, "t")
    h = {"Authorization": f"Bearer {token}"}
    body = await (await client.get(f"/api/v1/devices/{PLAT}/tree", headers=h)).json()
    assert (body["nodes"], body["channels"]) == (2, 3)
    tree = body["tree"]
    assert (tree["id"], tree["kind"], tree["name"]) == (PLAT, "platform", "火车站平台")
    assert [c["id"] for c in tree["children"]] == [BG, c3.device_id]
    bg = tree["children"][0]
    assert bg["kind"] == "business_group" and [c["id"] for c in bg["children"]] == [VO]
    leaves = bg["children"][0]["children"]
    assert [(c["id"], c["status"], c["exposed"]) for c in leaves] == [
        (c1.device_id, "ON", True), (c2.device_id, "OFF", False)]
    # the flat channel list still shows exposed channels only; org nodes never appear there
    chans = await (await client.get(f"/api/v1/devices/{PLAT}/channels", headers=h)).json()
    assert [c["channel_id"] for c in chans["channels"]] == [c1.device_id, c3.device_id]
    assert (await client.get("/api/v1/devices/34020000002000000077/tree", headers=h)).status == 404
    assert (await client.get(f"/api/v1/devices/{PLAT}/tree")).status == 401
