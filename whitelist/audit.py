"""Hash-chained audit log (pure): each record carries the SHA-256 of its predecessor.

hash = SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8) of every field but `hash`:
seq, ts (UTC ISO 8601 with microseconds), actor, action, target, before, after, reason, prev_hash.
The first record has seq 1 and prev_hash = 64 zeros. `before`/`after` are JSON objects from
Entry.public_dict() — never credentials.

verify() names the first problem in list order and the seq it concerns:
- "edited":    a record's content no longer matches its hash, or it was rewritten with a fresh hash
               (its successor's prev_hash no longer points at it) → that record's seq;
- "removed":   a seq is missing and appears nowhere → the first missing seq;
- "reordered": a seq is missing here but appears later → the seq that is out of place;
- "inserted":  a record that the chain skips over, or a second record with an existing seq →
               the intruder's seq.
A chain cannot prove its own tail: rewriting or dropping the last records is only detectable
against a remembered (seq, hash) — `verify(records, anchor=...)` — kept somewhere else.

Batches (issue 15): a bulk import is ONE record, action "import_batch", target "batch:<items>",
before = null, after = {"format": "gbgate-audit-batch-v1", "items": N, "entries": E, "rules": R,
"digest": hex}. Its items — what N single records would have said — are stored beside the chain
(table whitelist_audit_item: seq, n, target, line), one canonical JSON line per item, n = 1…N:
    line_n = canonical JSON of {"after": …, "before": …, "n": n, "target": …}
             (sorted keys, separators "," ":", UTF-8, no ASCII escaping; before/after as in a record)
    digest = SHA-256 hex of line_1 + "\n" + line_2 + "\n" + … + line_N + "\n"
so by hand: `sqlite3 gbgate.db "select line from whitelist_audit_item where seq=S order by n" |
sha256sum` equals the record's digest. The digest is inside a hashed record, so the chain vouches
for it and the digest vouches for every item: verify(..., batch_digests=…) reports a batch whose
stored items no longer give its digest (an item edited, dropped, added or reordered) as "edited".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from whitelist.errors import AuditChainError

GENESIS_HASH = "0" * 64
BATCH_ACTION = "import_batch"
BATCH_FORMAT = "gbgate-audit-batch-v1"
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()

Problem = Literal["edited", "removed", "reordered", "inserted"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts: datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str
    prev_hash: str
    hash: str

    def canonical(self) -> bytes:
        return canonical_bytes(self.seq, self.ts, self.actor, self.action, self.target, self.before,
                               self.after, self.reason, self.prev_hash)

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": ts_text(self.ts), "actor": self.actor, "action": self.action,
                "target": self.target, "before": self.before, "after": self.after,
                "reason": self.reason, "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    first_bad_seq: int | None = None
    problem: Problem | None = None
    checked: int = 0

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain ok ({self.checked} records)"
        return f"audit chain broken: record {self.first_bad_seq} {self.problem}"


def ts_text(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def _json_object(value: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """Round-trip through JSON so what we hash is exactly what the store gives back."""
    if value is None:
        return None
    try:
        result = json.loads(json.dumps(dict(value), sort_keys=True, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise AuditChainError(f"{name} is not JSON-serialisable: {exc}") from None
    assert isinstance(result, dict)
    return result


def canonical_bytes(seq: int, ts: datetime, actor: str, action: str, target: str,
                    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                    reason: str, prev_hash: str) -> bytes:
    doc = {"seq": seq, "ts": ts_text(ts), "actor": actor, "action": action, "target": target,
           "before": before, "after": after, "reason": reason, "prev_hash": prev_hash}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


class AuditChain:
    """Builds the next record from the last one. Holds no I/O: the store persists what it returns."""

    __slots__ = ("last",)

    def __init__(self, last: AuditRecord | None = None) -> None:
        self.last = last

    def append(self, actor: str, action: str, target: str, before: Mapping[str, Any] | None,
               after: Mapping[str, Any] | None, reason: str, now: datetime) -> AuditRecord:
        seq = 1 if self.last is None else self.last.seq + 1
        prev = GENESIS_HASH if self.last is None else self.last.hash
        ts = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
        b, a = _json_object(before, "before"), _json_object(after, "after")
        body = canonical_bytes(seq, ts, actor, action, target, b, a, reason, prev)
        digest = hashlib.sha256(body).hexdigest()
        record = AuditRecord(seq, ts, actor, action, target, b, a, reason, prev, digest)
        self.last = record
        return record


def batch_line(n: int, target: str, before: Mapping[str, Any] | None,
               after: Mapping[str, Any] | None) -> str:
    """One item of a batch as the canonical JSON line that is stored and digested."""
    return json.dumps({"n": n, "target": target, "before": before, "after": after}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def batch_digest(lines: Iterable[str]) -> str:
    """SHA-256 hex over every item line followed by a newline, in item order (n = 1…N)."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass(slots=True)
class AuditBatch:
    """Collects the items of one bulk change; summary() is the `after` of its single record."""

    lines: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    entries: int = 0
    rules: int = 0

    def add(self, target: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
        try:
            line = batch_line(len(self.lines) + 1, target, before, after)
        except (TypeError, ValueError) as exc:
            raise AuditChainError(f"batch item {target} is not JSON-serialisable: {exc}") from None
        self.lines.append(line)
        self.targets.append(target)
        if target.startswith("rule:"):
            self.rules += 1
        else:
            self.entries += 1

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def target(self) -> str:
        return f"batch:{len(self.lines)}"

    def summary(self) -> dict[str, Any]:
        return {"format": BATCH_FORMAT, "items": len(self.lines), "entries": self.entries,
                "rules": self.rules, "digest": batch_digest(self.lines)}


def verify(records: Iterable[AuditRecord], *, anchor: tuple[int, str] | None = None,
           after: tuple[int, str] | None = None,
           batch_digests: Mapping[int, str] | None = None) -> VerifyResult:
    """Check a chain in stored order; `anchor` = (seq, hash) remembered elsewhere guards the tail.

    `after` = (seq, hash) of an already verified record makes `records` the continuation of the
    chain from there (incremental verification: only what was appended since is hashed).
    `batch_digests` = {seq: batch_digest(stored item lines)} checks every batch record in
    `records` against its items (a seq without items counts as EMPTY_DIGEST); None skips that."""
    start_seq, start_hash = (0, GENESIS_HASH) if after is None else after
    recs = list(records)
    present = {r.seq for r in recs}
    counts: dict[int, int] = {}
    for r in recs:
        counts[r.seq] = counts.get(r.seq, 0) + 1
    seen: set[int] = set()
    prev: AuditRecord | None = None
    for i, r in enumerate(recs):
        exp_seq = start_seq + 1 if prev is None else prev.seq + 1
        exp_prev = start_hash if prev is None else prev.hash
        hash_ok = r.computed_hash() == r.hash
        if hash_ok and r.seq == exp_seq and r.prev_hash == exp_prev:
            if (batch_digests is not None and r.action == BATCH_ACTION
                    and batch_digests.get(r.seq, EMPTY_DIGEST) != (r.after or {}).get("digest")):
                return VerifyResult(False, r.seq, "edited", i)
            seen.add(r.seq)
            prev = r
            continue
        if not hash_ok or counts[r.seq] > 1:
            # a damaged or duplicate-seq record that the chain steps over is an intruder
            nxt = recs[i + 1] if i + 1 < len(recs) else None
            if (nxt is not None and nxt.seq == exp_seq and nxt.prev_hash == exp_prev
                    and nxt.computed_hash() == nxt.hash):
                return VerifyResult(False, r.seq, "inserted", i)
            if r.seq in seen:
                return VerifyResult(False, r.seq, "inserted", i)
        if not hash_ok:
            return VerifyResult(False, r.seq, "edited", i)
        if r.prev_hash == exp_prev:                                # linked right, numbered wrong: forged
            return VerifyResult(False, r.seq, "inserted", i)
        if r.seq == exp_seq:                                       # r intact, its predecessor rewritten
            return VerifyResult(False, prev.seq if prev is not None else r.seq, "edited", i)
        if r.seq > exp_seq:
            if exp_seq in present:
                return VerifyResult(False, exp_seq, "reordered", i)
            return VerifyResult(False, exp_seq, "removed", i)
        return VerifyResult(False, r.seq, "reordered", i)
    if anchor is not None:
        a_seq, a_hash = anchor
        at = next((r for r in recs if r.seq == a_seq), None)
        if at is None:
            return VerifyResult(False, a_seq, "removed", len(recs))
        if at.hash != a_hash:
            return VerifyResult(False, a_seq, "edited", len(recs))
    return VerifyResult(True, None, None, len(recs))
