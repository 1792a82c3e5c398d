"""Whitelist API: the security team decides, integrators only propose, every change is audited."""

from __future__ import annotations

from typing import Any

from gateway.api.auth import Role
from gateway.api.services import Services
from whitelist.decide import Request as WlRequest
from whitelist.decide import RequestKind

DEV = "34020000001320000001"


async def _h(services: Services, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {await services.tokens.create(role, role.value)}"}


async def test_security_adds_and_policy_follows(client: Any, services: Services) -> None:
    h = await _h(services, Role.SECURITY)
    resp = await client.post("/api/v1/whitelist", json={"device_id": DEV, "password": "p@ss", "ip": ["10.0.0.0/8"],
                                                         "name": "东门"}, headers=h)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["status"] == "approved" and body["has_credential"] is True
    assert "ha1_md5" not in str(body) and "p@ss" not in str(body)
    d = services.admission.policy.decide(WlRequest(DEV, "10.1.2.3", "udp", RequestKind.REGISTER), 0.0)
    assert d.allowed and d.credential is not None


async def test_integrator_only_proposes(client: Any, services: Services) -> None:
    h = await _h(services, Role.INTEGRATOR)
    resp = await client.post("/api/v1/whitelist", json={"device_id": DEV, "password": "x", "status": "approved"},
                             headers=h)
    assert resp.status == 201
    assert (await resp.json())["status"] == "pending"
    resp = await client.post(f"/api/v1/whitelist/{DEV}/approve", headers=h)
    assert resp.status == 403
    sec = await _h(services, Role.SECURITY)
    resp = await client.post(f"/api/v1/whitelist/{DEV}/approve", headers=sec, json={"reason": "checked on site"})
    assert resp.status == 200 and (await resp.json())["status"] == "approved"


async def test_revoke_drops_device_and_is_audited(client: Any, services: Services) -> None:
    sec = await _h(services, Role.SECURITY)
    await client.post("/api/v1/whitelist", json={"device_id": DEV, "password": "p"}, headers=sec)
    resp = await client.post(f"/api/v1/whitelist/{DEV}/revoke", headers=sec, json={"reason": "contract ended"})
    assert resp.status == 200
    assert DEV in services.admission.dropped  # type: ignore[attr-defined]
    audit = await (await client.get("/api/v1/audit", headers=sec)).json()
    assert audit["ok"] is True
    actions = [(r["action"], r["target"]) for r in audit["records"]]
    assert ("add", DEV) in actions and any(a[1] == DEV and "revoke" in a[0] for a in actions)
    assert audit["records"][-1]["actor"] == "security:security"


async def test_bad_input_names_field_and_writes_nothing(client: Any, services: Services) -> None:
    sec = await _h(services, Role.SECURITY)
    resp = await client.post("/api/v1/whitelist", json={"device_id": "123", "password": "p"}, headers=sec)
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "device_id"
    resp = await client.post("/api/v1/whitelist", json={"device_id": DEV, "password": "p", "ip": ["10.0.0.300/8"]},
                             headers=sec)
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "ip"
    resp = await client.post("/api/v1/whitelist", data=b"{nope", headers=sec)
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "body"
    csv = f"device_id,name,password\n{DEV},a,p\n1234,b,p\n".encode()
    resp = await client.post("/api/v1/whitelist/import", data=csv, headers=sec)
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert err["line"] == 3 and err["field"] == "device_id"
    assert (await (await client.get("/api/v1/whitelist", headers=sec)).json())["count"] == 0


async def test_import_csv_all_rows(client: Any, services: Services) -> None:
    sec = await _h(services, Role.SECURITY)
    rows = "\n".join(f"3402000000132000{i:04d},cam{i},pw{i}" for i in range(1, 6))
    resp = await client.post("/api/v1/whitelist/import", data=f"device_id,name,password\n{rows}\n".encode(),
                             headers=sec)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["imported"] == 5
    listing = await (await client.get("/api/v1/whitelist?status=approved", headers=sec)).json()
    assert listing["count"] == 5


async def test_platform_channel_ranges_round_trip_and_bad_ones_name_the_field(client: Any, services: Services) -> None:
    """Issue 14 #2: a platform entry carries its allowed channel IDs next to max_channels."""
    sec = await _h(services, Role.SECURITY)
    plat, lo, hi, one = "34020000002000000001", "34020000001310000001", "34020000001310000244", "34020000001310000900"
    resp = await client.post("/api/v1/whitelist", json={"device_id": plat, "password": "p", "max_channels": 244,
                                                         "channel_ranges": f"{one},{lo}-{hi}"}, headers=sec)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert (body["max_channels"], body["channel_ranges"]) == (244, f"{lo}-{hi},{one}")  # sorted
    assert services.admission.policy.get(plat).channel_ranges == ((lo, hi), (one, one))  # type: ignore[union-attr]
    for bad in (f"{hi}-{lo}", "3402-3403", ["x"], 7):
        resp = await client.post("/api/v1/whitelist", json={"device_id": plat, "password": "p", "channel_ranges": bad},
                                 headers=sec)
        assert resp.status == 422, bad
        assert (await resp.json())["error"]["field"] == "channel_ranges"
    listed = (await (await client.get("/api/v1/whitelist", headers=sec)).json())["entries"]
    assert [e["channel_ranges"] for e in listed] == [f"{lo}-{hi},{one}"]  # the bad ones changed nothing
    csv = f'device_id,password,channel_ranges\n34020000002000000002,p,"{lo}-{hi}"\n'.encode()
    resp = await client.post("/api/v1/whitelist/import", data=csv, headers=sec)
    assert resp.status == 200, await resp.text()
    assert services.admission.policy.get("34020000002000000002").channel_ranges == ((lo, hi),)  # type: ignore[union-attr]
