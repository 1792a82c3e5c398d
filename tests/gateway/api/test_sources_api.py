"""/api/v1/sources: roles, admission (403 with the reason), redaction, CSV import, audit."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from gateway.api.auth import Role
from gateway.api.services import Services
from whitelist.model import Entry, EntryStatus, parse_networks

CH = "34020000001310000701"
PASSWORD = "api-pw-91f3"


async def token(services: Services, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {await services.tokens.create(role, role.value)}"}


async def setup(services: Services, tmp_path: Any) -> None:
    from gateway.app.sources import source_admin

    assert services.admission is not None
    settings = replace(services.settings, data_dir=str(tmp_path))
    admin = source_admin(settings, services.repo._sessions, services.admission.policy, services.admission.store)
    services.extra = {"sources": admin}
    await services.admission.store.save_entry(
        Entry(device_id=CH, status=EntryStatus.APPROVED, allowed_sources=parse_networks(["192.168.7.0/24"])),
        actor="test", action="add")
    await services.admission.sync()


async def test_roles_admission_redaction_and_audit(client: Any, services: Services, tmp_path: Any) -> None:
    await setup(services, tmp_path)
    integ, ops, platform = [await token(services, r) for r in (Role.INTEGRATOR, Role.OPS, Role.PLATFORM)]
    body = {"channel_id": CH, "url": f"rtsp://admin:{PASSWORD}@192.168.7.10/live", "mode": "always_on"}
    assert (await client.post("/api/v1/sources", json=body, headers=ops)).status == 403
    assert (await client.get("/api/v1/sources", headers=platform)).status == 403
    outside = await client.post("/api/v1/sources", json={**body, "url": f"rtsp://a:{PASSWORD}@10.0.0.1/x"},
                                headers=integ)
    err = await outside.json()
    assert outside.status == 403 and err["error"]["code"] == "not_admitted" and PASSWORD not in json.dumps(err)
    bad = await client.post("/api/v1/sources", json={**body, "url": "http://192.168.7.10/"}, headers=integ)
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "url"
    ok = await client.post("/api/v1/sources", json=body, headers=integ)
    rec = await ok.json()
    assert ok.status == 201 and rec["url"] == "rtsp://admin:***@192.168.7.10/live" and rec["mode"] == "always_on"
    again = await client.post("/api/v1/sources", json={**body, "name": "renamed"}, headers=integ)
    assert again.status == 200
    admin = services.extra["sources"]
    # an edit without the password keeps it for the same URL and user, never for another host
    kept = await client.post("/api/v1/sources", json={**body, "url": "rtsp://admin@192.168.7.10/live"}, headers=integ)
    assert kept.status == 200 and (await kept.json())["has_password"] is True
    assert (await admin.get(CH)).password == PASSWORD
    moved = await client.post("/api/v1/sources", json={**body, "url": "rtsp://admin@192.168.7.20/live"}, headers=integ)
    assert moved.status == 200 and (await moved.json())["has_password"] is False
    assert (await admin.get(CH)).password == ""
    listing = await (await client.get("/api/v1/sources", headers=integ)).json()
    assert listing["count"] == 1 and PASSWORD not in json.dumps(listing)
    csv = f"channel_id,url\n{CH},rtsp://192.168.7.11/live\n34020000001310000799,rtsp://192.168.7.12/x\n"
    imp = await client.post("/api/v1/sources/import", data=csv.encode(), headers=integ)
    out = await imp.json()
    assert imp.status == 207 and out["count"] == 1 and out["errors"][0]["line"] == 3
    assert (await client.delete(f"/api/v1/sources/{CH}", headers=integ)).status == 200
    assert (await client.delete(f"/api/v1/sources/{CH}", headers=integ)).status == 404
    assert services.admission is not None
    records = await services.admission.store.audit_records()
    actions = [r.action for r in records if r.target == CH]
    assert actions.count("source_refused") == 1 and "source_add" in actions and "source_update" in actions
    assert "source_remove" in actions and all(PASSWORD not in json.dumps([r.before, r.after, r.reason])
                                               for r in records)
    assert any(r.actor.startswith("integrator:") for r in records if r.action == "source_add")


async def test_a_gb_devices_channel_id_cannot_be_taken_by_a_pull_source(tmp_path: Any) -> None:
    from types import SimpleNamespace

    from gateway.app.sources import SourceAdmin
    from gateway.store.sources import SourceError

    class Devices:
        async def find_channel(self, channel_id: str) -> Any:
            return SimpleNamespace(device_id="34020000001320000001") if channel_id == CH else None

    class Pulls:
        async def admit(self, channel_id: str, url: str) -> Any:
            raise AssertionError("refused before admission or storage")

    admin = SourceAdmin(repo=None, pulls=Pulls(), auditor=None, devices=Devices())  # type: ignore[arg-type]
    try:
        await admin.add(CH, "rtsp://192.168.7.10/live", actor="integrator:x")
    except SourceError as exc:
        assert exc.status == 409 and exc.field == "channel_id" and "34020000001320000001" in str(exc)
    else:
        raise AssertionError("a GB channel ID was taken over")
