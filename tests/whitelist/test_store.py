"""WhitelistStore on SQLite (aiosqlite): change + audit in one transaction, pending evidence,
all-or-nothing imports, audit verification against tampering done directly in the database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

from whitelist.decide import Reason, Request, RequestKind
from whitelist.errors import NotFoundError, StoreError, ValidationErrors
from whitelist.model import Credential, Entry, EntryStatus, PendingEvidence, Rule, RuleAction
from whitelist.store import WhitelistStore

ID = "34020000001320000001"
NOW = datetime(2026, 11, 27, 8, tzinfo=UTC)
CRED = Credential.from_password(ID, "3402000000", "pw")


@pytest.fixture
async def store(engine: AsyncEngine) -> WhitelistStore:
    s = WhitelistStore(async_sessionmaker(engine, expire_on_commit=False), pending_interval=60)
    await s.load_policy()
    return s


def approved(device_id: str = ID, **kw: object) -> Entry:
    base: dict[str, object] = {"status": EntryStatus.APPROVED, "credential": CRED,
                               "allowed_sources": ("10.0.0.0/24",), **kw}
    return Entry(device_id=device_id, **base)  # type: ignore[arg-type]


def test_tables_are_prefixed() -> None:
    names = set(SQLModel.metadata.tables)
    assert {"whitelist_entry", "whitelist_rule", "whitelist_audit"} <= names


async def test_save_round_trip_and_audit(store: WhitelistStore) -> None:
    e = approved(not_after=NOW + timedelta(days=1), cert_fingerprint="ab" * 32, evidence={"a": 1})
    saved = await store.save_entry(e, actor="sec:alice", action="add", reason="contract HT-1", now=NOW)
    assert saved.version == 1 and saved.created_at == NOW == saved.updated_at
    assert await store.get(ID) == saved
    again = await store.save_entry(replace(saved, name="gate"), actor="sec:alice", action="update",
                                   now=NOW + timedelta(seconds=5))
    assert again.version == 2 and again.created_at == NOW and again.updated_at == NOW + timedelta(seconds=5)
    recs = await store.audit_records()
    assert [(r.seq, r.actor, r.action, r.target) for r in recs] == [
        (1, "sec:alice", "add", ID), (2, "sec:alice", "update", ID)]
    assert recs[0].before is None and recs[1].before == saved.public_dict()
    assert recs[1].after == again.public_dict() and recs[0].reason == "contract HT-1"
    for r in recs:                                   # the HA1 never reaches the audit trail
        assert CRED.ha1_md5 not in repr(r) and CRED.ha1_sha256 not in repr(r)
    assert (await store.verify_audit()).ok


async def test_policy_follows_committed_changes(store: WhitelistStore) -> None:
    policy = store.policy
    assert policy is not None
    r = Request(ID, "10.0.0.5", "udp", RequestKind.REGISTER)
    assert policy.decide(r, NOW).reason is Reason.UNKNOWN_DEVICE
    await store.save_entry(approved(), actor="sec", action="add")
    assert policy.decide(r, NOW).reason is Reason.APPROVED
    revoked = await store.set_status(ID, EntryStatus.REVOKED, actor="sec", reason="stolen")
    assert revoked.status is EntryStatus.REVOKED and policy.decide(r, NOW).reason is Reason.REVOKED
    assert (await store.audit_records())[-1].action == "revoke"
    await store.delete(ID, actor="sec", reason="gone")
    assert policy.decide(r, NOW).reason is Reason.UNKNOWN_DEVICE
    rule = await store.save_rule(Rule(id="r1", id_prefix="3402", action=RuleAction.ALLOW), actor="sec")
    assert rule.version == 1 and policy.decide(r, NOW).reason is Reason.RULE_ALLOW
    await store.delete_rule("r1", actor="sec")
    assert policy.decide(r, NOW).reason is Reason.UNKNOWN_DEVICE
    assert [a.action for a in await store.audit_records()] == ["add", "revoke", "delete", "rule_save",
                                                               "rule_delete"]


async def test_reload_gives_same_policy(store: WhitelistStore, engine: AsyncEngine) -> None:
    await store.save_entry(approved(), actor="sec", action="add", now=NOW)
    await store.save_rule(Rule(id="r", id_prefix="34", type_code="132", allowed_sources=("::/0",),
                               action=RuleAction.ALLOW, credential=CRED), actor="sec", now=NOW)
    fresh = await WhitelistStore(async_sessionmaker(engine, expire_on_commit=False)).load_policy()
    assert list(fresh.entries()) == list(store.policy.entries())   # type: ignore[union-attr]
    assert fresh.rules() == store.policy.rules()                   # type: ignore[union-attr]


async def test_not_found(store: WhitelistStore) -> None:
    with pytest.raises(NotFoundError):
        await store.set_status(ID, EntryStatus.APPROVED, actor="sec")
    with pytest.raises(NotFoundError):
        await store.delete(ID, actor="sec")
    with pytest.raises(NotFoundError):
        await store.delete_rule("nope", actor="sec")
    assert await store.audit_records() == []


async def test_record_pending_with_evidence_and_rate_limit(store: WhitelistStore) -> None:
    ev = PendingEvidence(device_id=ID, source="192.0.2.7", transport="udp", user_agent="IP Camera")
    first = await store.record_pending(ev, NOW)
    assert first is not None and first.status is EntryStatus.PENDING
    assert first.evidence == {"source": "192.0.2.7", "transport": "udp", "user_agent": "IP Camera",
                              "first_seen": NOW.isoformat(timespec="microseconds"),
                              "last_seen": NOW.isoformat(timespec="microseconds"), "attempts": 1}
    for i in range(100):                             # a flood: counted in memory, not written
        assert await store.record_pending(ev, NOW + timedelta(seconds=i * 0.5)) is None
    later = await store.record_pending(replace(ev, source="192.0.2.8", transport="tcp"),
                                       NOW + timedelta(seconds=61))
    assert later is not None and later.evidence["attempts"] == 102
    assert later.evidence["first_seen"] == first.evidence["first_seen"]
    assert later.evidence["source"] == "192.0.2.8" and later.evidence["transport"] == "tcp"
    assert [r.action for r in await store.audit_records()] == ["pending"]   # refreshes not audited
    assert store.policy.get(ID).status is EntryStatus.PENDING               # type: ignore[union-attr]


async def test_record_pending_leaves_decided_entries_alone(store: WhitelistStore) -> None:
    await store.save_entry(approved(status=EntryStatus.REVOKED), actor="sec", action="add")
    ev = PendingEvidence(device_id=ID, source="192.0.2.7", transport="udp")
    assert await store.record_pending(ev, NOW) is None
    assert (await store.get(ID)).status is EntryStatus.REVOKED              # type: ignore[union-attr]
    assert await store.record_pending(replace(ev, device_id="123"), NOW) is None   # garbage ID


async def test_record_pending_bounds_new_ids(engine: AsyncEngine) -> None:
    s = WhitelistStore(async_sessionmaker(engine, expire_on_commit=False), new_pending_per_minute=5,
                       max_pending=8)
    await s.load_policy()
    written = [await s.record_pending(PendingEvidence(device_id=f"{i:020d}", source="x", transport="udp"),
                                      NOW) for i in range(20)]
    assert sum(w is not None for w in written) == 5 and s.pending_dropped == 15
    written = [await s.record_pending(PendingEvidence(device_id=f"{100 + i:020d}", source="x",
                                                      transport="udp"), NOW + timedelta(minutes=10))
               for i in range(20)]
    assert sum(w is not None for w in written) == 3           # max_pending = 8 rows
    assert len(await s.list_entries(EntryStatus.PENDING)) == 8


async def test_import_all_or_nothing(store: WhitelistStore) -> None:
    await store.save_entry(approved(), actor="sec", action="add")
    batch = [approved("34020000001320000002"), approved("34020000001320000003"),
             approved("34020000001320000002")]
    with pytest.raises(ValidationErrors) as info:
        await store.import_entries(batch, "sec:bob")
    assert info.value.errors[0].line == 3
    assert len(await store.list_entries()) == 1 and len(await store.audit_records()) == 1
    saved = await store.import_entries([*batch[:2], approved(ID, name="updated")], "sec:bob",
                                       rules=[Rule(id="r", id_prefix="44", action=RuleAction.DENY)])
    assert [e.version for e in saved] == [1, 1, 2]
    assert len(await store.list_entries()) == 3 and len(await store.list_rules()) == 1
    # issue 15: the import is audited as ONE batch record whose items name every entry and rule
    records = await store.audit_records()
    assert [r.action for r in records][1:] == ["import_batch"]
    assert records[-1].after is not None and records[-1].after["items"] == 4
    assert await store.batch_targets(records[-1].seq) == [
        "34020000001320000002", "34020000001320000003", ID, "rule:r"]
    assert (await store.verify_audit()).ok


async def test_import_rolls_back_on_database_failure(store: WhitelistStore, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:    # make the 2nd row fail inside the transaction
        await conn.execute(text("CREATE TRIGGER boom BEFORE INSERT ON whitelist_entry "
                                "WHEN NEW.device_id = '34020000001320000002' "
                                "BEGIN SELECT RAISE(ABORT, 'boom'); END"))
    with pytest.raises(StoreError, match="boom"):
        await store.import_entries([approved("34020000001320000001"), approved("34020000001320000002")],
                                   "sec")
    assert await store.list_entries() == [] and await store.audit_records() == []
    assert store.policy.get("34020000001320000001") is None                # type: ignore[union-attr]


async def test_verify_audit_detects_tampering_in_the_database(store: WhitelistStore,
                                                              engine: AsyncEngine) -> None:
    for i in range(5):
        await store.save_entry(approved(f"3402000000132000000{i}"), actor="sec", action="add")
    assert (await store.verify_audit()).ok
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE whitelist_audit SET actor = 'mallory' WHERE seq = 3"))
    res = await store.verify_audit()
    assert (res.ok, res.first_bad_seq, res.problem) == (False, 3, "edited")
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE whitelist_audit SET actor = 'sec' WHERE seq = 3"))
        await conn.execute(text("DELETE FROM whitelist_audit WHERE seq = 2"))
    res = await store.verify_audit()
    assert (res.first_bad_seq, res.problem) == (2, "removed")


async def test_broken_head_blocks_further_changes(store: WhitelistStore, engine: AsyncEngine) -> None:
    await store.save_entry(approved(), actor="sec", action="add")
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE whitelist_audit SET reason = 'x' WHERE seq = 1"))
    from whitelist.errors import AuditChainError
    with pytest.raises(AuditChainError):
        await store.set_status(ID, EntryStatus.SUSPENDED, actor="sec")
    assert (await store.get(ID)).status is EntryStatus.APPROVED             # type: ignore[union-attr]


async def test_concurrent_writers_keep_one_chain(store: WhitelistStore, engine: AsyncEngine) -> None:
    import asyncio
    other = WhitelistStore(async_sessionmaker(engine, expire_on_commit=False))
    await asyncio.gather(*[(store if i % 2 else other).save_entry(approved(f"{i:020d}"), actor="sec",
                                                                  action="add") for i in range(20)])
    recs = await store.audit_records()
    assert [r.seq for r in recs] == list(range(1, 21)) and (await store.verify_audit()).ok


async def test_second_node_on_the_same_database_retries_its_lost_races(
        store: WhitelistStore, tmp_path: Path) -> None:
    """Another engine on the same file shares no lock with us: only the retry loop keeps the chain."""
    import asyncio
    node2 = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'wl.db'}")
    try:
        other = WhitelistStore(async_sessionmaker(node2, expire_on_commit=False))
        await asyncio.gather(*[(store if i % 2 else other).save_entry(approved(f"{i:020d}"), actor="sec",
                                                                      action="add") for i in range(12)])
    finally:
        await node2.dispose()
    recs = await store.audit_records()
    assert [r.seq for r in recs] == list(range(1, 13)) and (await store.verify_audit()).ok


async def test_append_audit_event(store: WhitelistStore) -> None:
    await store.save_entry(approved(), actor="sec", action="add")
    rec = await store.append_audit(actor="gateway", action="model_mismatch", target=ID, before=None,
                                   after={"model": "XY-1"}, reason="DeviceInfo contradicts entry", now=NOW)
    assert rec.seq == 2 and (await store.audit_records())[-1] == rec and (await store.verify_audit()).ok
