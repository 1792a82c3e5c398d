"""Bulk imports in the store (issue 15): one transaction, ONE batch audit record with its digest,
tampering with an imported entry's recorded item found by verification, the change feed follows."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from whitelist.admission import Admission
from whitelist.audit import BATCH_ACTION, batch_digest
from whitelist.decide import Policy
from whitelist.errors import ConflictErrors
from whitelist.model import Credential, Entry, EntryStatus, Rule, RuleAction, parse_networks
from whitelist.store import WhitelistStore

NOW = datetime(2026, 12, 3, 8, tzinfo=UTC)
REALM = "3402000000"


def dev(i: int) -> str:
    return f"3402000000132{i:07d}"


def entries(n: int, status: EntryStatus = EntryStatus.APPROVED, start: int = 0) -> list[Entry]:
    return [Entry(device_id=dev(i), status=status, credential=Credential.from_password(dev(i), REALM, f"pw{i}"),
                  allowed_sources=parse_networks(f"10.{(i >> 8) & 255}.{i & 255}.7"), name=f"cam {i}")
            for i in range(start, start + n)]


@pytest.fixture
async def store(engine: AsyncEngine) -> WhitelistStore:
    s = WhitelistStore(async_sessionmaker(engine, expire_on_commit=False))
    await s.load_policy()
    return s


async def test_2000_entry_import_is_exactly_one_audit_record(store: WhitelistStore, tmp_path: Path) -> None:
    saved = await store.import_entries(entries(2000), "cli:bob", now=NOW)
    assert len(saved) == 2000 and {e.version for e in saved} == {1}
    records = await store.audit_records()
    assert len(records) == 1
    rec = records[0]
    assert (rec.action, rec.target, rec.actor) == (BATCH_ACTION, "batch:2000", "cli:bob")
    assert rec.after is not None and (rec.after["items"], rec.after["entries"], rec.after["rules"]) == (2000, 2000, 0)
    assert len(await store.list_entries()) == 2000
    assert store.policy is not None and store.policy.get(dev(1999)) is not None
    assert (await store.verify_audit()).ok and (await store.verify_audit_incremental()).ok
    # derivable by hand, straight from the database file
    db = sqlite3.connect(tmp_path / "wl.db")
    lines = [r[0] for r in db.execute("select line from whitelist_audit_item where seq = ? order by n", (rec.seq,))]
    assert hashlib.sha256("".join(line + "\n" for line in lines).encode()).hexdigest() == rec.after["digest"]
    first = json.loads(lines[0])
    assert first["n"] == 1 and first["target"] == dev(0) and first["before"] is None
    assert first["after"]["status"] == "approved" and "ha1_md5" not in lines[0]       # never credentials


async def test_reimport_records_before_and_after(store: WhitelistStore) -> None:
    await store.import_entries(entries(3), "sec", now=NOW)
    changed = [Entry(device_id=dev(1), status=EntryStatus.SUSPENDED, name="moved")]
    saved = await store.import_entries(changed, "sec", now=NOW,
                                       rules=[Rule(id="r", id_prefix="44", action=RuleAction.DENY)])
    assert saved[0].version == 2 and saved[0].created_at == NOW
    rec = (await store.audit_records())[-1]
    items = [json.loads(line) for line in await store.batch_lines(rec.seq)]
    assert [i["target"] for i in items] == [dev(1), "rule:r"]
    assert items[0]["before"]["name"] == "cam 1" and items[0]["after"]["status"] == "suspended"
    assert batch_digest(await store.batch_lines(rec.seq)) == rec.after["digest"]  # type: ignore[index]


async def test_tampering_with_an_imported_entry_is_detected(store: WhitelistStore, engine: AsyncEngine) -> None:
    """Attacker with database access rewrites what the audit says one imported device was allowed."""
    await store.import_entries(entries(50), "cli:bob", now=NOW)
    await store.set_status(dev(7), EntryStatus.SUSPENDED, actor="sec", now=NOW)
    assert (await store.verify_audit()).ok and (await store.verify_audit_incremental()).ok
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE whitelist_audit_item SET line = replace(line, '10.0.3.7/32', '0.0.0.0/0') "
                                "WHERE seq = 1 AND n = 4"))
    res = await store.verify_audit()
    assert (res.ok, res.first_bad_seq, res.problem) == (False, 1, "edited")
    fresh = WhitelistStore(store._sessions)       # a node that has verified nothing yet
    res = await fresh.verify_audit_incremental()
    assert (res.ok, res.first_bad_seq, res.problem) == (False, 1, "edited")


@pytest.mark.parametrize("sql", [
    "DELETE FROM whitelist_audit_item WHERE seq = 1 AND n = 50",                     # hide a device
    "INSERT INTO whitelist_audit_item (seq, n, target, line) VALUES (1, 51, '34020000001329999999', '{}')",
    "UPDATE whitelist_audit_item SET n = 99 WHERE seq = 1 AND n = 1",                # reorder
])
async def test_dropping_adding_or_moving_items_is_detected(store: WhitelistStore, engine: AsyncEngine,
                                                           sql: str) -> None:
    await store.import_entries(entries(50), "cli:bob", now=NOW)
    async with engine.begin() as conn:
        await conn.execute(text(sql))
    res = await store.verify_audit()
    assert (res.ok, res.first_bad_seq, res.problem) == (False, 1, "edited")


async def test_integrator_rules_kept_in_bulk(store: WhitelistStore) -> None:
    """Issue 10 rules survive the bulk path: refused whole, naming every line; nothing written."""
    await store.import_entries(entries(3), "sec", now=NOW)
    before = await store.audit_records()
    proposals = entries(5, EntryStatus.PENDING, start=1)             # dev(1), dev(2) are approved
    with pytest.raises(ConflictErrors) as info:
        await store.import_entries(proposals, "int:acme", proposals_only=True, lines=[2, 3, 4, 5, 6],
                                   now=NOW)
    assert [e.line for e in info.value.errors] == [2, 3]
    assert await store.audit_records() == before and len(await store.list_entries()) == 3
    saved = await store.import_entries(entries(2, start=10), "int:acme", proposals_only=True, now=NOW)
    assert {e.status for e in saved} == {EntryStatus.PENDING}


async def test_admission_follows_a_batch_from_another_process(store: WhitelistStore) -> None:
    # the poller is parked far away: under load it could sync the batch first and leave the explicit
    # call nothing to count (seen under libfaketime in the full suite)
    policy = Policy([], [])
    admission = Admission(WhitelistStore(store._sessions, policy=policy), policy, realm=REALM, poll_interval=3600)
    await admission.start()
    dropped: list[str] = []
    admission.on_drop.append(dropped.append)
    await store.import_entries([*entries(20), Entry(device_id=dev(99), status=EntryStatus.REVOKED)], "cli:bob",
                               rules=[Rule(id="r", id_prefix="44", action=RuleAction.DENY)], now=NOW)
    assert await admission.sync() == 22
    await admission.stop()
    assert policy.get(dev(19)) is not None and [r.id for r in policy.rules()] == ["r"]
    assert dropped == [dev(99)]


async def test_concurrent_syncs_apply_each_change_once(store: WhitelistStore) -> None:
    """The poller and an explicit sync racing on the same records: a revoked device is dropped once
    (found under libfaketime, where the poller's 0.5 s sleep lined up with the explicit call)."""
    import asyncio

    policy = Policy([], [])
    admission = Admission(WhitelistStore(store._sessions, policy=policy), policy, realm=REALM)
    dropped: list[str] = []
    admission.on_drop.append(dropped.append)
    await store.import_entries([*entries(5), Entry(device_id=dev(99), status=EntryStatus.REVOKED)], "cli:bob",
                               now=NOW)
    counts = await asyncio.gather(*(admission.sync() for _ in range(4)))
    assert sorted(counts) == [0, 0, 0, 6]
    assert dropped == [dev(99)] and admission.reloads == 1
