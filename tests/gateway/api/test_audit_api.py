"""GET /api/v1/audit under attack (issue 10 items 7 and 14): bounded answers, incremental checks.

An attacker who can make the gateway append audit records (unauthenticated SIP traffic) must not
make every audit read cost a re-hash of the whole chain; `limit` must not return everything.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.api.auth import Role
from gateway.api.services import Services
from whitelist.audit import AuditRecord

T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def _sec(services: Services) -> dict[str, str]:
    return {"Authorization": f"Bearer {await services.tokens.create(Role.SECURITY, 'sec')}"}


async def _fill(services: Services, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await services.admission.store.append_audit(actor="gateway", action="alarm", target=f"dev{i}",
                                                    before=None, after={"i": i}, now=T0 + timedelta(seconds=i))


class _HashCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = AuditRecord.computed_hash

        def counting(rec: AuditRecord) -> str:
            self.calls += 1
            return real(rec)
        monkeypatch.setattr(AuditRecord, "computed_hash", counting)


@pytest.mark.parametrize(("query", "field"), [("limit=-1", "limit"), ("limit=0", "limit"), ("limit=x", "limit"),
                                              ("after=-5", "after"), ("verify=some", "verify")])
async def test_bad_paging_is_400_naming_field(client: Any, services: Services, query: str, field: str) -> None:
    await _fill(services, 3)
    resp = await client.get(f"/api/v1/audit?{query}", headers=await _sec(services))
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == field


async def test_huge_limit_is_clamped(client: Any, services: Services) -> None:
    """Today `limit=-1` (SQLite: no limit) returns every record; a huge limit is clamped to 1000."""
    await _fill(services, 1005)
    resp = await client.get("/api/v1/audit?limit=999999999", headers=await _sec(services))
    assert resp.status == 200
    body = await resp.json()
    assert body["limit"] == 1000 and len(body["records"]) == 1000 and body["ok"] is True


async def test_reads_hash_only_new_records(client: Any, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 records: the first read hashes them once; after 2 appends, a read hashes ~3, not 302."""
    await _fill(services, 300)
    sec = await _sec(services)
    counter = _HashCounter(monkeypatch)
    assert (await (await client.get("/api/v1/audit?limit=1", headers=sec)).json())["ok"] is True
    assert counter.calls >= 300
    await _fill(services, 2, start=300)
    counter.calls = 0
    body = await (await client.get("/api/v1/audit?limit=1", headers=sec)).json()
    assert body["ok"] is True
    assert counter.calls <= 2 + 1 + 2      # 2 new records, the checkpoint, the 2 appends' head checks


async def test_tampering_after_checkpoint_is_found(client: Any, services: Services, tmp_path: Path) -> None:
    await _fill(services, 5)
    sec = await _sec(services)
    assert (await (await client.get("/api/v1/audit", headers=sec)).json())["ok"] is True
    await _fill(services, 3, start=5)
    db = sqlite3.connect(tmp_path / "api.db")
    db.execute("update whitelist_audit set actor = 'nobody' where seq = 7")
    db.commit()
    db.close()
    body = await (await client.get("/api/v1/audit", headers=sec)).json()
    assert body["ok"] is False and body["first_bad_seq"] == 7
    # still reported on the next read: a broken chain does not move the checkpoint
    assert (await (await client.get("/api/v1/audit", headers=sec)).json())["first_bad_seq"] == 7


async def test_edit_of_checkpoint_or_old_record_is_found(client: Any, services: Services, tmp_path: Path) -> None:
    await _fill(services, 6)
    sec = await _sec(services)
    assert (await (await client.get("/api/v1/audit", headers=sec)).json())["ok"] is True
    db = sqlite3.connect(tmp_path / "api.db")
    db.execute("update whitelist_audit set reason = 'x' where seq in (2, 6)")
    db.commit()
    db.close()
    body = await (await client.get("/api/v1/audit", headers=sec)).json()
    assert body["ok"] is False and body["first_bad_seq"] == 6      # the remembered checkpoint
    full = await (await client.get("/api/v1/audit?verify=full", headers=sec)).json()
    assert full["ok"] is False and full["first_bad_seq"] == 2 and full["verify"] == "full"


async def test_api_import_is_one_batch_record_and_item_tampering_is_found(client: Any, services: Services,
                                                                          tmp_path: Path) -> None:
    """Issue 15: a 2,000-row import through the API is one audit record; the API shows its digest
    and both verification modes find an edited item (an attacker widening one device's sources)."""
    sec = await _sec(services)
    csv = "device_id,name,password,ip\n" + "".join(f"3402000000132{i:07d},cam {i},pw{i},10.1.{i % 250}.{i // 250}\n"
                                                  for i in range(2000))
    resp = await client.post("/api/v1/whitelist/import", data=csv.encode(), headers=sec)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["imported"] == 2000
    body = await (await client.get("/api/v1/audit?verify=full", headers=sec)).json()
    assert body["ok"] is True and len(body["records"]) == 1
    rec = body["records"][0]
    assert (rec["action"], rec["target"], rec["after"]["items"]) == ("import_batch", "batch:2000", 2000)
    db = sqlite3.connect(tmp_path / "api.db")
    db.execute("update whitelist_audit_item set line = replace(line, '10.1.5.0/32', '0.0.0.0/0') "
               "where seq = ? and n = 6", (rec["seq"],))
    db.commit()
    db.close()
    for mode in ("full", "incremental"):
        body = await (await client.get(f"/api/v1/audit?verify={mode}", headers=sec)).json()
        assert (body["ok"], body["first_bad_seq"], body["problem"]) == (False, rec["seq"], "edited"), mode


async def test_batch_items_are_paged_checked_and_refused_to_other_roles(client: Any, services: Services,
                                                                         tmp_path: Path) -> None:
    """GET /api/v1/audit/{seq}/items: an auditor reads what one batch record stands for, page by page,
    with the digest recomputed over every stored item, so an edited item set is flagged on any page."""
    sec = await _sec(services)
    csv = "device_id,name,password,ip\n" + "".join(f"3402000000132{i:07d},cam {i},pw{i},10.2.0.{i}\n"
                                                  for i in range(1, 8))
    assert (await client.post("/api/v1/whitelist/import", data=csv.encode(), headers=sec)).status == 200
    await services.admission.store.append_audit(actor="gateway", action="alarm", target="dev",
                                                before=None, after={"x": 1}, now=T0)
    records = (await (await client.get("/api/v1/audit", headers=sec)).json())["records"]
    batch = next(r for r in records if r["action"] == "import_batch")
    single = next(r for r in records if r["action"] == "alarm")

    body = await (await client.get(f"/api/v1/audit/{batch['seq']}/items?offset=2&limit=3", headers=sec)).json()
    assert (body["total"], body["ok"], body["digest"]) == (7, True, batch["after"]["digest"])
    assert [i["n"] for i in body["items"]] == [3, 4, 5]
    assert [i["target"] for i in body["items"]] == [f"3402000000132{i:07d}" for i in (3, 4, 5)]
    assert body["items"][0]["before"] is None and body["items"][0]["after"]["allowed_sources"] == ["10.2.0.3/32"]
    assert "ha1_md5" not in str(body) and "pw3" not in str(body)  # items are public views: no HA1

    db = sqlite3.connect(tmp_path / "api.db")
    db.execute("update whitelist_audit_item set line = replace(line, '10.2.0.7/32', '0.0.0.0/0') "
               "where seq = ? and n = 7", (batch["seq"],))
    db.commit()
    db.close()
    body = await (await client.get(f"/api/v1/audit/{batch['seq']}/items?limit=1", headers=sec)).json()
    assert body["ok"] is False and body["computed_digest"] != body["digest"] and len(body["items"]) == 1

    for path, status, field in ((f"/api/v1/audit/{single['seq']}/items", 404, "seq"),
                                ("/api/v1/audit/999/items", 404, "seq"), ("/api/v1/audit/0/items", 404, "seq"),
                                ("/api/v1/audit/x1/items", 400, "seq"),
                                (f"/api/v1/audit/{batch['seq']}/items?offset=-1", 400, "offset")):
        resp = await client.get(path, headers=sec)
        assert resp.status == status, path
        assert (await resp.json())["error"]["field"] == field, path
    for role in (Role.INTEGRATOR, Role.OPS, Role.PLATFORM):
        h = {"Authorization": f"Bearer {await services.tokens.create(role, role.value)}"}
        assert (await client.get(f"/api/v1/audit/{batch['seq']}/items", headers=h)).status == 403
