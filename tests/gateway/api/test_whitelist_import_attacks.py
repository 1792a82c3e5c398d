"""Attacker tests for POST /api/v1/whitelist/import (issue 10 items 1, 2, 8).

An integrator may only propose: whatever the file says, nothing it imports is admitted, nothing
already decided is overwritten, and the reply tells what was really stored. Bundles (statuses and
HA1s) come only from the security role and only signed by the trusted policy key.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.api.auth import Role
from gateway.api.services import Services
from gateway.config import load_settings
from whitelist.bundle import export_json, export_signed
from whitelist.decide import Policy, RequestKind
from whitelist.decide import Request as WlRequest
from whitelist.model import Credential, Entry, EntryStatus

REALM = "3402000000"
CAM = "34020000001320000701"
OTHER = "34020000001320000702"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def _h(services: Services, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {await services.tokens.create(role, role.value)}"}


def _approved_bundle() -> Policy:
    cred = Credential.from_password(CAM, REALM, "attacker-knows")
    return Policy([Entry(device_id=CAM, status=EntryStatus.APPROVED, credential=cred,
                         evidence={"source": "10.9.9.9", "attempts": 99})], [])


def _admitted(services: Services, device_id: str) -> bool:
    d = services.admission.policy.decide(WlRequest(device_id, "10.1.2.3", "udp", RequestKind.REGISTER), 0.0)
    return bool(d.allowed)


def _trust(services: Services, tmp_path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "trusted.pub.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    services.settings = load_settings(env={"GBGATE_WHITELIST__SIGNING_PUB": str(pub)})
    return key


async def test_integrator_bundle_saying_approved_is_refused(client: Any, services: Services) -> None:
    """Today: accepted, CAM admitted with the attacker's HA1, reply says "pending"."""
    h = await _h(services, Role.INTEGRATOR)
    resp = await client.post("/api/v1/whitelist/import", data=export_json(_approved_bundle(), now=T0), headers=h)
    assert resp.status == 403, await resp.text()
    assert (await resp.json())["error"]["field"] == "body"
    assert await services.admission.store.get(CAM) is None
    assert not _admitted(services, CAM)


async def test_integrator_signed_bundle_is_refused_even_with_trusted_key(client: Any, services: Services,
                                                                        tmp_path: Path) -> None:
    key = _trust(services, tmp_path)
    h = await _h(services, Role.INTEGRATOR)
    resp = await client.post("/api/v1/whitelist/import", data=export_signed(_approved_bundle(), key, now=T0),
                             headers=h)
    assert resp.status == 403
    assert await services.admission.store.get(CAM) is None


async def test_security_unsigned_bundle_is_refused(client: Any, services: Services) -> None:
    sec = await _h(services, Role.SECURITY)
    resp = await client.post("/api/v1/whitelist/import", data=export_json(_approved_bundle(), now=T0), headers=sec)
    assert resp.status == 422
    assert "unsigned" in (await resp.json())["error"]["message"]
    assert await services.admission.store.get(CAM) is None


async def test_security_bundle_signed_by_untrusted_key_is_refused(client: Any, services: Services,
                                                                 tmp_path: Path) -> None:
    _trust(services, tmp_path)
    rogue = Ed25519PrivateKey.generate()
    sec = await _h(services, Role.SECURITY)
    resp = await client.post("/api/v1/whitelist/import", data=export_signed(_approved_bundle(), rogue, now=T0),
                             headers=sec)
    assert resp.status == 422 and "wrong key" in (await resp.json())["error"]["message"]
    assert await services.admission.store.get(CAM) is None


async def test_security_bundle_signed_by_trusted_key_is_applied(client: Any, services: Services,
                                                               tmp_path: Path) -> None:
    key = _trust(services, tmp_path)
    sec = await _h(services, Role.SECURITY)
    resp = await client.post("/api/v1/whitelist/import", data=export_signed(_approved_bundle(), key, now=T0),
                             headers=sec)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["by_status"] == {"approved": 1} and body["signed_by"]
    assert body["entries"] == [{"device_id": CAM, "status": "approved", "version": 1}]
    assert _admitted(services, CAM)


async def test_integrator_json_cannot_smuggle_status_or_evidence(client: Any, services: Services) -> None:
    h = await _h(services, Role.INTEGRATOR)
    rows = [{"device_id": CAM, "name": "东门", "password": "pw", "status": "approved",
             "evidence": {"attempts": 1}}]
    resp = await client.post("/api/v1/whitelist/import", data=json.dumps(rows).encode(), headers=h)
    assert resp.status == 422
    fields = {e["field"] for e in (await resp.json())["error"]["errors"]}
    assert fields == {"status", "evidence"}
    assert await services.admission.store.get(CAM) is None


async def test_integrator_csv_reply_reports_pending_as_stored(client: Any, services: Services) -> None:
    h = await _h(services, Role.INTEGRATOR)
    resp = await client.post("/api/v1/whitelist/import?status=approved",
                             data=f"device_id,name,password\n{CAM},a,pw\n".encode(), headers=h)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "pending" and body["by_status"] == {"pending": 1}
    stored = await services.admission.store.get(CAM)
    assert stored is not None and stored.status is EntryStatus.PENDING
    assert not _admitted(services, CAM)


async def test_integrator_import_cannot_overwrite_approved_entry(client: Any, services: Services) -> None:
    """Today: the approved credential is replaced and allowed sources reset to "any"."""
    sec = await _h(services, Role.SECURITY)
    resp = await client.post("/api/v1/whitelist", json={"device_id": CAM, "password": "real", "ip": ["10.1.2.0/24"]},
                             headers=sec)
    assert resp.status == 201
    before = await services.admission.store.get(CAM)
    h = await _h(services, Role.INTEGRATOR)
    csv = f"device_id,name,password\n{OTHER},new,pw\n{CAM},takeover,attacker\n".encode()
    resp = await client.post("/api/v1/whitelist/import", data=csv, headers=h)
    assert resp.status == 409, await resp.text()
    err = (await resp.json())["error"]
    assert err["line"] == 3 and err["field"] == "device_id" and CAM in err["message"]
    assert await services.admission.store.get(CAM) == before
    assert await services.admission.store.get(OTHER) is None          # all or nothing


async def test_pending_import_keeps_gateway_evidence(client: Any, services: Services) -> None:
    store = services.admission.store
    await store.save_entry(Entry(device_id=CAM, status=EntryStatus.PENDING,
                                 evidence={"source": "10.0.0.5", "attempts": 3}), actor="gateway", now=T0)
    h = await _h(services, Role.INTEGRATOR)
    resp = await client.post("/api/v1/whitelist/import", data=f"device_id,name\n{CAM},东门\n".encode(), headers=h)
    assert resp.status == 200, await resp.text()
    stored = await store.get(CAM)
    assert stored is not None and stored.name == "东门" and stored.evidence == {"source": "10.0.0.5", "attempts": 3}


async def test_security_pending_import_cannot_demote_approved(client: Any, services: Services) -> None:
    store = services.admission.store
    await store.save_entry(Entry(device_id=CAM, status=EntryStatus.APPROVED), actor="t", now=T0)
    sec = await _h(services, Role.SECURITY)
    resp = await client.post("/api/v1/whitelist/import?status=pending", data=f"device_id\n{CAM}\n".encode(),
                             headers=sec)
    assert resp.status == 409
    assert (await store.get(CAM)).status is EntryStatus.APPROVED  # type: ignore[union-attr]


async def test_bad_status_query_is_400_not_500(client: Any, services: Services) -> None:
    sec = await _h(services, Role.SECURITY)
    resp = await client.post("/api/v1/whitelist/import?status=owned", data=f"device_id\n{CAM}\n".encode(),
                             headers=sec)
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "status"


async def test_formula_cells_are_refused_naming_line_and_field(client: Any, services: Services) -> None:
    """Today: `=HYPERLINK(...)` is stored and later exported to spreadsheets as a formula."""
    h = await _h(services, Role.INTEGRATOR)
    csv = (f"device_id,name,owner\n{OTHER},ok,ok\n"
           f'{CAM},"=HYPERLINK(""http://evil/"",""x"")",@SUM(A1)\n').encode()
    resp = await client.post("/api/v1/whitelist/import", data=csv, headers=h)
    assert resp.status == 422
    errors = (await resp.json())["error"]["errors"]
    assert {(e["line"], e["field"]) for e in errors} == {(3, "name"), (3, "owner")}
    assert await services.admission.store.get(OTHER) is None
    resp = await client.post("/api/v1/whitelist", json={"device_id": CAM, "name": "+cmd|' /C calc'!A0"}, headers=h)
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "name"


ROLE_CANNOT = [
    (Role.OPS, "post", f"/api/v1/whitelist/{CAM}/approve"),
    (Role.PLATFORM, "post", f"/api/v1/whitelist/{CAM}/approve"),
    (Role.VENDOR, "post", f"/api/v1/whitelist/{CAM}/approve"),
    (Role.INTEGRATOR, "post", f"/api/v1/whitelist/{CAM}/approve"),
    (Role.INTEGRATOR, "post", f"/api/v1/whitelist/{CAM}/revoke"),
    (Role.OPS, "post", "/api/v1/whitelist/import"),
    (Role.VENDOR, "post", "/api/v1/whitelist"),
    (Role.PLATFORM, "post", "/api/v1/whitelist"),
    (Role.INTEGRATOR, "get", "/api/v1/audit"),
    (Role.OPS, "get", "/api/v1/audit"),
    (Role.VENDOR, "get", "/api/v1/whitelist"),
]


async def test_only_security_changes_admission_state(client: Any, services: Services) -> None:
    """The threat model's role matrix: every other role is refused, and the entry stays pending."""
    await services.admission.store.save_entry(Entry(device_id=CAM, status=EntryStatus.PENDING), actor="t", now=T0)
    for role, method, path in ROLE_CANNOT:
        h = await _h(services, role)
        kwargs: dict[str, Any] = {"headers": h}
        if path == "/api/v1/whitelist":
            kwargs["json"] = {"device_id": CAM, "password": "x"}
        elif path.endswith("/import"):
            kwargs["data"] = f"device_id\n{CAM}\n".encode()
        resp = await getattr(client, method)(path, **kwargs)
        assert resp.status == 403, (role, path, resp.status)
    entry = await services.admission.store.get(CAM)
    assert entry is not None and entry.status is EntryStatus.PENDING
