"""The OpenAPI document lists the routes that really exist, with their roles."""

from __future__ import annotations

from typing import Any


async def test_openapi_document_covers_the_api(client: Any) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path in ("/api/v1/devices", "/api/v1/devices/{device_id}/channels", "/api/v1/whitelist",
                 "/api/v1/whitelist/{device_id}/approve", "/api/v1/reports/{kind}", "/healthz"):
        assert path in paths, path
    approve = paths["/api/v1/whitelist/{device_id}/approve"]["post"]
    assert approve["x-roles"] == ["admin", "security"]
    assert approve["parameters"][0]["name"] == "device_id"
    assert "security" not in paths["/healthz"]["get"]
