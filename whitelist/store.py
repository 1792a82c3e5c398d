"""Persistence of entries, rules and the audit chain (SQLModel tables on SQLModel.metadata).

Every change is ONE transaction that writes the row AND its audit record, committed before the
call returns — so the audit is durable before anyone acts on the change — and only then applied to
the attached in-memory Policy (see `policy`). Appends are serialised in-process by a lock; across
processes/nodes the audit `seq` primary key makes a concurrent append fail, and the whole
transaction is retried on top of the new head.

A bulk import is the exception to "one record per change": it writes ONE batch record whose digest
covers its items, kept in whitelist_audit_item (see whitelist.audit), and its rows with executemany.

Lists and dicts are JSON text columns (portable between SQLite and PostgreSQL, and byte-stable so
audit hashes re-verify). Credentials are stored as HA1 only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import sys
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, Text, bindparam, func, insert, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel, col, select

from whitelist.audit import BATCH_ACTION, AuditBatch, AuditChain, AuditRecord, VerifyResult, verify
from whitelist.decide import Policy
from whitelist.errors import (
    AuditChainError,
    ConflictErrors,
    NotFoundError,
    StoreError,
    ValidationError,
    ValidationErrors,
)
from whitelist.model import (
    Credential,
    Entry,
    EntryStatus,
    PendingEvidence,
    Rule,
    RuleAction,
    iso,
    parse_networks,
)
from whitelist.ranges import format_channel_ranges, parse_channel_ranges

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRIES = 12
_IN_CHUNK = 500          # IDs per IN (…) (SQLite's old limit is 999 bound variables)
_WRITE_CHUNK = 2000      # rows per executemany, so progress moves on a large import
Progress = Callable[[str, int, int], None]      # (phase, done, total)

# Stores on one engine in one process queue behind one lock: the audit chain has a single head, so
# concurrent appends from the same process would only race each other. Other processes are handled
# by the retry loop in _transact.
_WRITER_LOCKS: weakref.WeakKeyDictionary[Any, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = (
    weakref.WeakKeyDictionary())


def _writer_lock(session_factory: async_sessionmaker[AsyncSession], own: asyncio.Lock) -> asyncio.Lock:
    """The lock shared by every store on this engine in the running loop (`own` without an engine)."""
    bind = session_factory.kw.get("bind")
    key = getattr(bind, "sync_engine", bind)
    if key is None:
        return own
    loop = asyncio.get_running_loop()
    held = _WRITER_LOCKS.get(key)
    if held is None or held[0] is not loop:
        held = _WRITER_LOCKS[key] = (loop, asyncio.Lock())
    return held[1]


class WhitelistEntryRow(SQLModel, table=True):
    __tablename__ = "whitelist_entry"
    device_id: str = Field(primary_key=True, max_length=20)
    status: str = Field(max_length=16, index=True)
    cred_username: str | None = Field(default=None, max_length=64)
    cred_realm: str | None = Field(default=None, max_length=128)
    ha1_md5: str | None = Field(default=None, max_length=32)
    ha1_sha256: str | None = Field(default=None, max_length=64)
    allowed_sources: str = Field(default="[]", sa_type=Text)
    cert_fingerprint: str | None = Field(default=None, max_length=64)
    expected_manufacturer: str | None = Field(default=None, max_length=256)
    expected_model: str | None = Field(default=None, max_length=256)
    expected_firmware_prefix: str | None = Field(default=None, max_length=256)
    site: str = Field(default="", max_length=256)
    link: str = Field(default="", max_length=256)
    not_before: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    not_after: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    max_channels: int | None = None
    channel_ranges: str = Field(default="", sa_type=Text)  # "lo-hi,id" (issue 14 #2); "" = any
    owner: str = Field(default="", max_length=256)
    contract_ref: str = Field(default="", max_length=256)
    name: str = Field(default="", max_length=256)
    evidence: str = Field(default="{}", sa_type=Text)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(sa_type=DateTime(timezone=True))
    version: int = 0


class WhitelistRuleRow(SQLModel, table=True):
    __tablename__ = "whitelist_rule"
    id: str = Field(primary_key=True, max_length=64)
    id_prefix: str = Field(default="", max_length=20)
    type_code: str | None = Field(default=None, max_length=3)
    allowed_sources: str = Field(default="[]", sa_type=Text)
    action: str = Field(max_length=8)
    status: str = Field(max_length=16)
    priority: int = 100
    cred_username: str | None = Field(default=None, max_length=64)
    cred_realm: str | None = Field(default=None, max_length=128)
    ha1_md5: str | None = Field(default=None, max_length=32)
    ha1_sha256: str | None = Field(default=None, max_length=64)
    name: str = Field(default="", max_length=256)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(sa_type=DateTime(timezone=True))
    version: int = 0


class WhitelistAuditRow(SQLModel, table=True):
    __tablename__ = "whitelist_audit"
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    ts: str = Field(max_length=40, index=True)        # canonical ISO text: exactly what was hashed
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    target: str = Field(max_length=128, index=True)
    before: str | None = Field(default=None, sa_type=Text)
    after: str | None = Field(default=None, sa_type=Text)
    reason: str = Field(default="", sa_type=Text)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class WhitelistAuditItemRow(SQLModel, table=True):
    """One item of a batch record (whitelist.audit: batch_line / batch_digest); `target` is a lookup
    copy of the one inside `line`, which is what the record's digest covers."""
    __tablename__ = "whitelist_audit_item"
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    n: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    target: str = Field(max_length=128, index=True)
    line: str = Field(sa_type=Text)


# -- conversions ---------------------------------------------------------------------------------

def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _cred(username: str | None, realm: str | None, md5: str | None, sha: str | None) -> Credential | None:
    if not username or md5 is None or sha is None:
        return None
    return Credential(username=username, realm=sys.intern(realm or ""), ha1_md5=md5, ha1_sha256=sha)


def _entry_from_row(row: WhitelistEntryRow) -> Entry:
    return Entry(
        device_id=row.device_id, status=EntryStatus(row.status),
        credential=_cred(row.cred_username, row.cred_realm, row.ha1_md5, row.ha1_sha256),
        allowed_sources=parse_networks(json.loads(row.allowed_sources)),
        cert_fingerprint=row.cert_fingerprint, expected_manufacturer=row.expected_manufacturer,
        expected_model=row.expected_model, expected_firmware_prefix=row.expected_firmware_prefix,
        site=row.site, link=row.link, not_before=_utc(row.not_before), not_after=_utc(row.not_after),
        max_channels=row.max_channels, channel_ranges=parse_channel_ranges(row.channel_ranges),
        owner=row.owner, contract_ref=row.contract_ref, name=row.name,
        evidence=json.loads(row.evidence), created_at=_utc(row.created_at) or row.created_at,
        updated_at=_utc(row.updated_at) or row.updated_at, version=row.version)


def _entry_values(e: Entry, *, sources: list[str] | None = None) -> dict[str, Any]:
    """Every column of an entry's row (for bulk INSERT/UPDATE as well as the ORM row);
    `sources` = the networks already as text (public_dict()'s), saving a second conversion."""
    c = e.credential
    return {
        "device_id": e.device_id, "status": e.status.value,
        "cred_username": c.username if c else None, "cred_realm": c.realm if c else None,
        "ha1_md5": c.ha1_md5 if c else None, "ha1_sha256": c.ha1_sha256 if c else None,
        "allowed_sources": json.dumps([str(n) for n in e.allowed_sources] if sources is None else sources),
        "cert_fingerprint": e.cert_fingerprint, "expected_manufacturer": e.expected_manufacturer,
        "expected_model": e.expected_model, "expected_firmware_prefix": e.expected_firmware_prefix,
        "site": e.site, "link": e.link, "owner": e.owner, "contract_ref": e.contract_ref, "name": e.name,
        "not_before": e.not_before, "not_after": e.not_after, "max_channels": e.max_channels,
        "channel_ranges": format_channel_ranges(e.channel_ranges),
        "evidence": json.dumps(e.evidence, sort_keys=True, ensure_ascii=False),
        "created_at": e.created_at, "updated_at": e.updated_at, "version": e.version,
    }


def _fill_entry_row(row: WhitelistEntryRow, e: Entry) -> None:
    for name, value in _entry_values(e).items():
        setattr(row, name, value)


def _rule_from_row(row: WhitelistRuleRow) -> Rule:
    return Rule(id=row.id, id_prefix=row.id_prefix, type_code=row.type_code,
                allowed_sources=parse_networks(json.loads(row.allowed_sources)),
                action=RuleAction(row.action), status=EntryStatus(row.status), priority=row.priority,
                credential=_cred(row.cred_username, row.cred_realm, row.ha1_md5, row.ha1_sha256),
                name=row.name, created_at=_utc(row.created_at) or row.created_at,
                updated_at=_utc(row.updated_at) or row.updated_at, version=row.version)


def _fill_rule_row(row: WhitelistRuleRow, r: Rule) -> None:
    c = r.credential
    row.id_prefix, row.type_code = r.id_prefix, r.type_code
    row.allowed_sources = json.dumps([str(n) for n in r.allowed_sources])
    row.action, row.status, row.priority, row.name = r.action.value, r.status.value, r.priority, r.name
    row.cred_username, row.cred_realm = (c.username, c.realm) if c else (None, None)
    row.ha1_md5, row.ha1_sha256 = (c.ha1_md5, c.ha1_sha256) if c else (None, None)
    row.created_at, row.updated_at, row.version = r.created_at, r.updated_at, r.version


def _audit_from_row(row: WhitelistAuditRow) -> AuditRecord:
    return AuditRecord(seq=row.seq, ts=datetime.fromisoformat(row.ts), actor=row.actor, action=row.action,
                       target=row.target, before=None if row.before is None else json.loads(row.before),
                       after=None if row.after is None else json.loads(row.after), reason=row.reason,
                       prev_hash=row.prev_hash, hash=row.hash)


def _audit_row(rec: AuditRecord) -> WhitelistAuditRow:
    def dump(d: dict[str, Any] | None) -> str | None:
        return None if d is None else json.dumps(d, sort_keys=True, ensure_ascii=False)
    return WhitelistAuditRow(seq=rec.seq, ts=iso(rec.ts) or "", actor=rec.actor, action=rec.action,
                             target=rec.target, before=dump(rec.before), after=dump(rec.after),
                             reason=rec.reason, prev_hash=rec.prev_hash, hash=rec.hash)


_STATUS_ACTION = {EntryStatus.APPROVED: "approve", EntryStatus.SUSPENDED: "suspend",
                  EntryStatus.REVOKED: "revoke", EntryStatus.PENDING: "set_pending"}


@dataclass(slots=True)
class _Seen:
    last_write: datetime
    unflushed: int = 0


class _Tx:
    """One open transaction: the session plus the audit chain positioned at the current head."""

    __slots__ = ("chain", "now", "session")

    def __init__(self, session: AsyncSession, chain: AuditChain, now: datetime) -> None:
        self.session, self.chain, self.now = session, chain, now

    def audit(self, actor: str, action: str, target: str, before: dict[str, Any] | None,
              after: dict[str, Any] | None, reason: str) -> AuditRecord:
        rec = self.chain.append(actor, action, target, before, after, reason, self.now)
        self.session.add(_audit_row(rec))
        return rec


class WhitelistStore:
    """Async persistence; `policy` (set by load_policy() or passed in) follows every committed change."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], *, policy: Policy | None = None,
                 pending_interval: float = 60.0, max_pending: int = 10_000,
                 new_pending_per_minute: int = 120) -> None:
        self._sessions = session_factory
        self.policy = policy
        self._lock = asyncio.Lock()
        self._verify_lock = asyncio.Lock()
        self._verified: tuple[int, str] | None = None     # last (seq, hash) the incremental check passed
        self.pending_interval = pending_interval
        self.max_pending = max_pending
        self.new_pending_per_minute = new_pending_per_minute
        self._seen: dict[str, _Seen] = {}
        self._new_budget = float(new_pending_per_minute)
        self._new_stamp: datetime | None = None
        self.pending_dropped = 0          # unknown devices not recorded (flood of new IDs / table full)

    # -- reading ---------------------------------------------------------------------------

    async def load_policy(self) -> Policy:
        """Every entry and rule. Entries are read as plain rows in batches: tens of thousands of
        ORM instances at once would leave the heap fragmented for the life of the process."""
        entries: list[Entry] = []
        table = WhitelistEntryRow.__table__  # type: ignore[attr-defined]
        async with self._sessions() as s:
            result = await s.stream(select(table).execution_options(yield_per=2000))
            async for batch in result.partitions():
                entries.extend(_entry_from_row(r) for r in batch)
            rules = [_rule_from_row(r) for r in (await s.execute(select(WhitelistRuleRow))).scalars()]
        self.policy = Policy(entries, rules)
        return self.policy

    async def get(self, device_id: str) -> Entry | None:
        async with self._sessions() as s:
            row = await s.get(WhitelistEntryRow, device_id)
            return None if row is None else _entry_from_row(row)

    async def list_entries(self, status: EntryStatus | None = None) -> list[Entry]:
        stmt = select(WhitelistEntryRow).order_by(col(WhitelistEntryRow.device_id))
        if status is not None:
            stmt = stmt.where(WhitelistEntryRow.status == status.value)
        async with self._sessions() as s:
            return [_entry_from_row(r) for r in (await s.execute(stmt)).scalars()]

    async def list_rules(self) -> list[Rule]:
        async with self._sessions() as s:
            return [_rule_from_row(r) for r in (await s.execute(select(WhitelistRuleRow))).scalars()]

    async def audit_records(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        stmt = select(WhitelistAuditRow).where(WhitelistAuditRow.seq > after_seq)
        stmt = stmt.order_by(col(WhitelistAuditRow.seq))
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self._sessions() as s:
            return [_audit_from_row(r) for r in (await s.execute(stmt)).scalars()]

    async def verify_audit(self, *, anchor: tuple[int, str] | None = None) -> VerifyResult:
        """The whole chain from seq 1 (`gbgate audit verify`, ?verify=full)."""
        records = await self.audit_records()
        return verify(records, anchor=anchor, batch_digests=await self._batch_digests(records))

    async def verify_audit_incremental(self, *, batch: int = 5000) -> VerifyResult:
        """Verify only what was appended since the last good verification, in bounded batches.

        The last verified (seq, hash) is remembered in memory; its record is re-read and must still
        carry that hash, then the chain continues from it. An edit of an older record is found only
        by a full verify_audit() — the API offers it on demand, the CLI always does it. A broken
        chain does not move the checkpoint, so the fault is reported on every call.
        """
        async with self._verify_lock:
            checked = 0
            cur = self._verified
            if cur is not None:
                async with self._sessions() as s:
                    row = await s.get(WhitelistAuditRow, cur[0])
                if row is None:
                    return VerifyResult(False, cur[0], "removed", 0)
                rec = _audit_from_row(row)
                if rec.hash != cur[1] or rec.computed_hash() != rec.hash:
                    return VerifyResult(False, cur[0], "edited", 0)
            while True:
                records = await self.audit_records(after_seq=cur[0] if cur else 0, limit=batch)
                result = verify(records, after=cur, batch_digests=await self._batch_digests(records))
                checked += result.checked
                if not result.ok:
                    return VerifyResult(False, result.first_bad_seq, result.problem, checked)
                if records:
                    cur = (records[-1].seq, records[-1].hash)
                    self._verified = cur
                if len(records) < batch:
                    return VerifyResult(True, None, None, checked)

    @property
    def verified_through(self) -> int:
        """Seq of the last record verified by verify_audit_incremental() (0 before the first call)."""
        return self._verified[0] if self._verified else 0

    # -- the transaction helper ----------------------------------------------------------------

    async def _head_seq(self) -> int:
        async with self._sessions() as s:
            return int((await s.execute(select(func.max(WhitelistAuditRow.seq)))).scalar() or 0)

    async def _transact(self, now: datetime | None, work: Callable[[_Tx], Awaitable[T]]) -> T:
        now = _utc(now) or datetime.now(UTC)
        async with _writer_lock(self._sessions, self._lock):
            for attempt in range(_RETRIES):
                head_seq = 0
                try:
                    async with self._sessions() as session, session.begin():
                        head = (await session.execute(select(WhitelistAuditRow)
                                                      .order_by(col(WhitelistAuditRow.seq).desc())
                                                      .limit(1))).scalars().first()
                        last = None if head is None else _audit_from_row(head)
                        head_seq = 0 if last is None else last.seq
                        if last is not None and last.computed_hash() != last.hash:
                            raise AuditChainError(f"audit head (seq {last.seq}) does not match its hash")
                        return await work(_Tx(session, AuditChain(last), now))
                except (IntegrityError, OperationalError) as exc:
                    # retry only a lost race for the next seq (another process/node appended first)
                    # or a busy database; anything else is a real refusal
                    # (a clash on the audit key itself is a lost race even when the winner has not
                    # committed yet, so its seq is not visible to _head_seq())
                    raced = (isinstance(exc, OperationalError) or "whitelist_audit" in str(exc.orig)
                             or await self._head_seq() != head_seq)
                    if not raced or attempt == _RETRIES - 1:
                        raise StoreError(f"whitelist write refused: {exc.orig or exc}") from exc
                    log.debug("whitelist write conflict, retrying: %s", exc)
                    # jittered so two nodes that collided do not collide again in lockstep
                    await asyncio.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
        raise AssertionError("unreachable")

    async def append_audit(self, *, actor: str, action: str, target: str, before: dict[str, Any] | None,
                           after: dict[str, Any] | None, reason: str = "",
                           now: datetime | None = None) -> AuditRecord:
        """Audit an event that changes no row (alarm, lockout, dropped device); durable on return.

        before/after must be JSON objects without secrets (use Entry.public_dict())."""
        async def work(tx: _Tx) -> AuditRecord:
            return tx.audit(actor, action, target, before, after, reason)
        return await self._transact(now, work)

    # -- entries ------------------------------------------------------------------------------

    @staticmethod
    async def _put_entry(tx: _Tx, entry: Entry, *, actor: str, action: str, reason: str,
                         audit: bool = True) -> Entry:
        row = await tx.session.get(WhitelistEntryRow, entry.device_id)
        before = None if row is None else _entry_from_row(row)
        saved = replace(entry, version=(before.version if before else 0) + 1,
                        created_at=before.created_at if before else tx.now, updated_at=tx.now)
        if row is None:
            row = WhitelistEntryRow(device_id=saved.device_id, status=saved.status.value,
                                    created_at=tx.now, updated_at=tx.now)
        _fill_entry_row(row, saved)
        tx.session.add(row)
        if audit:
            tx.audit(actor, action, saved.device_id, before.public_dict() if before else None,
                     saved.public_dict(), reason)
        return saved

    async def save_entry(self, entry: Entry, *, actor: str, action: str = "save", reason: str = "",
                         now: datetime | None = None) -> Entry:
        """Insert or replace an entry (version +1, created_at kept) and audit it, in one transaction."""
        saved = await self._transact(now, lambda tx: self._put_entry(tx, entry, actor=actor, action=action,
                                                                     reason=reason))
        if self.policy is not None:
            self.policy.upsert(saved)
        return saved

    async def set_status(self, device_id: str, status: EntryStatus, *, actor: str, reason: str = "",
                         now: datetime | None = None) -> Entry:
        async def work(tx: _Tx) -> Entry:
            row = await tx.session.get(WhitelistEntryRow, device_id)
            if row is None:
                raise NotFoundError("device_id", device_id)
            current = _entry_from_row(row)
            return await self._put_entry(tx, replace(current, status=EntryStatus(status)), actor=actor,
                                         action=_STATUS_ACTION[EntryStatus(status)], reason=reason)
        saved = await self._transact(now, work)
        self._seen.pop(device_id, None)
        if self.policy is not None:
            self.policy.upsert(saved)
        return saved

    async def delete(self, device_id: str, *, actor: str, reason: str = "",
                     now: datetime | None = None) -> Entry:
        async def work(tx: _Tx) -> Entry:
            row = await tx.session.get(WhitelistEntryRow, device_id)
            if row is None:
                raise NotFoundError("device_id", device_id)
            before = _entry_from_row(row)
            await tx.session.delete(row)
            tx.audit(actor, "delete", device_id, before.public_dict(), None, reason)
            return before
        removed = await self._transact(now, work)
        self._seen.pop(device_id, None)
        if self.policy is not None:
            self.policy.remove(device_id)
        return removed

    async def import_entries(self, entries: Iterable[Entry], actor: str, *, rules: Iterable[Rule] = (),
                             reason: str = "import", now: datetime | None = None,
                             proposals_only: bool = False, lines: list[int] | None = None,
                             progress: Progress | None = None) -> list[Entry]:
        """All or nothing: every entry and rule plus ONE batch audit record, in one transaction.

        The record (whitelist.audit BATCH_ACTION) carries the digest of its items — what one record
        per entry/rule would have said — which are stored beside the chain (whitelist_audit_item).
        Rows are read and written in bulk (IN (…) reads, executemany writes): 20,000 entries in
        well under a second of store time instead of one round trip and one chained hash each.

        `proposals_only` (an integrator's list, or any import of `pending` rows) applies the rule
        of a single proposal to every row: an existing entry that is not pending is refused —
        the whole import, ConflictErrors naming each line (`lines[i]`, else the position) — and a
        pending one keeps the evidence the gateway gathered about the device (and its proposed
        credential when the row gives none). `progress(phase, done, total)` is called as the
        rows are checked and written.
        """
        entries, rules = list(entries), list(rules)
        where = lines if lines is not None and len(lines) == len(entries) else list(range(1, len(entries) + 1))
        errors: list[ValidationError] = []
        seen: set[str] = set()
        for line, e in zip(where, entries, strict=True):
            if e.device_id in seen:
                errors.append(ValidationError("device_id", f"duplicate {e.device_id}", line=line))
            seen.add(e.device_id)
        if len({r.id for r in rules}) != len(rules):
            errors.append(ValidationError("rules.id", "duplicate rule id"))
        if errors:
            raise ValidationErrors(errors)
        report = progress or (lambda phase, done, total: None)
        table = WhitelistEntryRow.__table__  # type: ignore[attr-defined]

        async def work(tx: _Tx) -> tuple[list[Entry], list[Rule]]:
            existing: dict[str, Entry] = {}
            ids = [e.device_id for e in entries]
            for i in range(0, len(ids), _IN_CHUNK):
                result = await tx.session.execute(select(table).where(table.c.device_id.in_(ids[i:i + _IN_CHUNK])))
                existing.update((r.device_id, _entry_from_row(r)) for r in result)
                report("checking", min(i + _IN_CHUNK, len(ids)), len(ids))
            todo = entries
            if proposals_only:
                conflicts: list[ValidationError] = []
                todo = []
                for line, e in zip(where, entries, strict=True):
                    current = existing.get(e.device_id)
                    if current is None:
                        todo.append(replace(e, status=EntryStatus.PENDING, evidence={}))
                    elif current.status is not EntryStatus.PENDING:
                        conflicts.append(ValidationError(
                            "device_id", f"{e.device_id} is already {current.status.value}; only the "
                            "security role changes it", line=line))
                    else:                     # refresh a proposal: keep what the gateway saw
                        todo.append(replace(e, status=EntryStatus.PENDING, evidence=current.evidence,
                                            credential=e.credential or current.credential))
                if conflicts:
                    raise ConflictErrors(conflicts)
            batch = AuditBatch()
            saved: list[Entry] = []
            inserts: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            for e in todo:
                before = existing.get(e.device_id)
                entry = e.stamped(version=(before.version if before else 0) + 1,
                                  created_at=before.created_at if before else tx.now, updated_at=tx.now)
                saved.append(entry)
                after = entry.public_dict()
                values = _entry_values(entry, sources=after["allowed_sources"])
                if before is None:
                    inserts.append(values)
                else:
                    values["b_device_id"] = values.pop("device_id")
                    updates.append(values)
                batch.add(entry.device_id, before.public_dict() if before else None, after)
            done = 0
            for rows, stmt in ((inserts, insert(table)),
                               (updates, update(table).where(table.c.device_id == bindparam("b_device_id")))):
                for i in range(0, len(rows), _WRITE_CHUNK):
                    chunk = rows[i:i + _WRITE_CHUNK]
                    await tx.session.execute(stmt, chunk)
                    done += len(chunk)
                    report("writing", done, len(todo))
            saved_rules = [await self._put_rule(tx, r, actor=actor, action="import", reason=reason, batch=batch)
                           for r in rules]
            if len(batch):
                rec = tx.audit(actor, BATCH_ACTION, batch.target, None, batch.summary(), reason)
                items = WhitelistAuditItemRow.__table__  # type: ignore[attr-defined]
                await tx.session.execute(insert(items), [
                    {"seq": rec.seq, "n": n, "target": t, "line": line}
                    for n, (t, line) in enumerate(zip(batch.targets, batch.lines, strict=True), 1)])
            return saved, saved_rules
        saved, saved_rules = await self._transact(now, work)
        if self.policy is not None:
            for e in saved:
                self.policy.upsert(e)
            for r in saved_rules:
                self.policy.upsert_rule(r)
        return saved

    async def batch_targets(self, seq: int) -> list[str]:
        """The targets (device IDs, `rule:<id>`) of batch record `seq`, in item order."""
        stmt = (select(WhitelistAuditItemRow.target).where(WhitelistAuditItemRow.seq == seq)
                .order_by(col(WhitelistAuditItemRow.n)))
        async with self._sessions() as s:
            return list((await s.execute(stmt)).scalars())

    async def batch_lines(self, seq: int) -> list[str]:
        """The stored item lines of batch record `seq` (whitelist.audit.batch_digest re-derives it)."""
        stmt = (select(WhitelistAuditItemRow.line).where(WhitelistAuditItemRow.seq == seq)
                .order_by(col(WhitelistAuditItemRow.n)))
        async with self._sessions() as s:
            return list((await s.execute(stmt)).scalars())

    async def _batch_digests(self, records: list[AuditRecord]) -> dict[int, str]:
        """batch_digest() of the stored items of every batch record in `records`."""
        seqs = [r.seq for r in records if r.action == BATCH_ACTION]
        digests: dict[int, str] = {}
        items = WhitelistAuditItemRow.__table__  # type: ignore[attr-defined]
        async with self._sessions() as s:
            for i in range(0, len(seqs), _IN_CHUNK):
                stmt = (select(items.c.seq, items.c.line).where(items.c.seq.in_(seqs[i:i + _IN_CHUNK]))
                        .order_by(items.c.seq, items.c.n))
                result = await s.stream(stmt.execution_options(yield_per=5000))
                hashers: dict[int, Any] = {}
                async for seq, line in result:
                    h = hashers.get(seq)
                    if h is None:
                        h = hashers[seq] = hashlib.sha256()
                    h.update(line.encode("utf-8"))
                    h.update(b"\n")
                digests.update((seq, h.hexdigest()) for seq, h in hashers.items())
        return digests

    async def get_many(self, device_ids: Iterable[str]) -> dict[str, Entry]:
        """The entries among `device_ids` that exist (IN (…) in chunks: one query per 500 IDs)."""
        ids = list(device_ids)
        table = WhitelistEntryRow.__table__  # type: ignore[attr-defined]
        found: dict[str, Entry] = {}
        async with self._sessions() as s:
            for i in range(0, len(ids), _IN_CHUNK):
                result = await s.execute(select(table).where(table.c.device_id.in_(ids[i:i + _IN_CHUNK])))
                found.update((r.device_id, _entry_from_row(r)) for r in result)
        return found

    # -- rules --------------------------------------------------------------------------------

    @staticmethod
    async def _put_rule(tx: _Tx, rule: Rule, *, actor: str, action: str, reason: str,
                        batch: AuditBatch | None = None) -> Rule:
        row = await tx.session.get(WhitelistRuleRow, rule.id)
        before = None if row is None else _rule_from_row(row)
        saved = replace(rule, version=(before.version if before else 0) + 1,
                        created_at=before.created_at if before else tx.now, updated_at=tx.now)
        if row is None:
            row = WhitelistRuleRow(id=saved.id, action=saved.action.value, status=saved.status.value,
                                   created_at=tx.now, updated_at=tx.now)
        _fill_rule_row(row, saved)
        tx.session.add(row)
        if batch is not None:
            batch.add(f"rule:{saved.id}", before.public_dict() if before else None, saved.public_dict())
        else:
            tx.audit(actor, f"rule_{action}", f"rule:{saved.id}", before.public_dict() if before else None,
                     saved.public_dict(), reason)
        return saved

    async def save_rule(self, rule: Rule, *, actor: str, action: str = "save", reason: str = "",
                        now: datetime | None = None) -> Rule:
        saved = await self._transact(now, lambda tx: self._put_rule(tx, rule, actor=actor, action=action,
                                                                    reason=reason))
        if self.policy is not None:
            self.policy.upsert_rule(saved)
        return saved

    async def delete_rule(self, rule_id: str, *, actor: str, reason: str = "",
                          now: datetime | None = None) -> Rule:
        async def work(tx: _Tx) -> Rule:
            row = await tx.session.get(WhitelistRuleRow, rule_id)
            if row is None:
                raise NotFoundError("rule_id", rule_id)
            before = _rule_from_row(row)
            await tx.session.delete(row)
            tx.audit(actor, "rule_delete", f"rule:{rule_id}", before.public_dict(), None, reason)
            return before
        removed = await self._transact(now, work)
        if self.policy is not None:
            self.policy.remove_rule(rule_id)
        return removed

    # -- unknown devices ----------------------------------------------------------------------

    def _take_new_budget(self, now: datetime) -> bool:
        if self._new_stamp is not None:
            elapsed = max(0.0, (now - self._new_stamp).total_seconds())
            self._new_budget = min(float(self.new_pending_per_minute),
                                   self._new_budget + elapsed * self.new_pending_per_minute / 60.0)
        self._new_stamp = now
        if self._new_budget < 1.0:
            return False
        self._new_budget -= 1.0
        return True

    async def record_pending(self, evidence: PendingEvidence, now: datetime) -> Entry | None:
        """Create or refresh the pending entry of an unknown device; None when nothing was written.

        Writes at most once per `pending_interval` per ID (attempts in between are counted in
        memory and flushed with the next write), creates at most `new_pending_per_minute` new IDs
        and never more than `max_pending` pending rows, so a flood of REGISTERs costs no I/O.
        Entries that are not pending (e.g. revoked) are left alone. Creation is audited;
        evidence refreshes are not (they change no decision).
        """
        now = _utc(now) or datetime.now(UTC)
        device_id = evidence.device_id
        if not (len(device_id) == 20 and device_id.isascii() and device_id.isdigit()):
            self.pending_dropped += 1
            return None
        seen = self._seen.get(device_id)
        if seen is not None and (now - seen.last_write).total_seconds() < self.pending_interval:
            seen.unflushed += 1
            return None
        known = self.policy.get(device_id) if self.policy is not None else None
        if known is not None and known.status is not EntryStatus.PENDING:
            return None
        if seen is None and known is None and not self._take_new_budget(now):
            self.pending_dropped += 1
            return None
        extra = seen.unflushed if seen is not None else 0

        async def work(tx: _Tx) -> Entry | None:
            row = await tx.session.get(WhitelistEntryRow, device_id)
            if row is not None:
                current = _entry_from_row(row)
                if current.status is not EntryStatus.PENDING:
                    return None
                ev = dict(current.evidence)
                ev.update(source=evidence.source, transport=evidence.transport,
                          user_agent=evidence.user_agent, last_seen=iso(now),
                          attempts=int(ev.get("attempts", 0)) + 1 + extra)
                ev.setdefault("first_seen", iso(now))
                return await self._put_entry(tx, replace(current, evidence=ev), actor="gateway",
                                             action="evidence", reason="", audit=False)
            count = (await tx.session.execute(
                select(func.count()).select_from(WhitelistEntryRow)
                .where(WhitelistEntryRow.status == EntryStatus.PENDING.value))).scalar_one()
            if count >= self.max_pending:
                return None
            ev = {"source": evidence.source, "transport": evidence.transport,
                  "user_agent": evidence.user_agent, "first_seen": iso(now), "last_seen": iso(now),
                  "attempts": 1 + extra}
            return await self._put_entry(tx, Entry(device_id=device_id, status=EntryStatus.PENDING,
                                                   evidence=ev),
                                         actor="gateway", action="pending",
                                         reason="unknown device asked to register")

        saved = await self._transact(now, work)
        if saved is None:
            self.pending_dropped += 1
            self._seen.pop(device_id, None)
            return None
        self._seen.pop(device_id, None)
        self._seen[device_id] = _Seen(now)
        while len(self._seen) > self.max_pending:
            del self._seen[next(iter(self._seen))]
        if self.policy is not None:
            self.policy.upsert(saved)
        return saved
