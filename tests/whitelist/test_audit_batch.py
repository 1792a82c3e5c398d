"""Batch audit records (issue 15): one record per bulk import, carrying the digest of its items.

The digest is derivable by hand (canonical JSON lines, one per item, each followed by a newline,
SHA-256 over all of them) and verify() refuses a batch whose stored items no longer give it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whitelist.audit import (
    BATCH_ACTION,
    BATCH_FORMAT,
    EMPTY_DIGEST,
    AuditBatch,
    AuditChain,
    AuditRecord,
    batch_digest,
    batch_line,
    verify,
)
from whitelist.errors import AuditChainError

T0 = datetime(2026, 12, 3, tzinfo=UTC)
json_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=12)
items_st = st.lists(st.tuples(st.from_regex(r"[0-9]{20}", fullmatch=True),
                              st.none() | st.dictionaries(st.text(max_size=8), json_scalars, max_size=4),
                              st.dictionaries(st.text(max_size=8), json_scalars, max_size=4)),
                    max_size=12)


def build(items: list[tuple[str, Any, Any]]) -> tuple[AuditBatch, AuditRecord]:
    batch = AuditBatch()
    for target, before, after in items:
        batch.add(target, before, after)
    chain = AuditChain()
    chain.append("sec", "add", "34020000001320000001", None, {"status": "approved"}, "", T0)
    return batch, chain.append("cli:bob", BATCH_ACTION, batch.target, None, batch.summary(), "import", T0)


def test_line_is_canonical_json_and_digest_is_sha256_of_lines() -> None:
    line = batch_line(1, "34020000001320000001", None, {"name": "门口", "b": 1, "a": None})
    assert line == '{"after":{"a":null,"b":1,"name":"门口"},"before":null,"n":1,"target":"34020000001320000001"}'
    # by hand: the lines as `sqlite3 … | sha256sum` prints them, one per line
    assert batch_digest([line, line]) == hashlib.sha256((line + "\n" + line + "\n").encode()).hexdigest()
    assert batch_digest([]) == EMPTY_DIGEST == hashlib.sha256(b"").hexdigest()


def test_summary_names_counts_and_digest() -> None:
    batch, rec = build([("34020000001320000002", None, {"s": "approved"}), ("rule:r1", None, {"id": "r1"})])
    assert rec.action == BATCH_ACTION and rec.target == "batch:2" and rec.before is None
    assert rec.after == {"format": BATCH_FORMAT, "items": 2, "entries": 1, "rules": 1,
                         "digest": batch_digest(batch.lines)}
    assert [json.loads(line)["n"] for line in batch.lines] == [1, 2]


def test_non_json_item_refused() -> None:
    with pytest.raises(AuditChainError):
        AuditBatch().add("34020000001320000001", None, {"x": object()})


@given(items_st)
def test_stored_items_verify(items: list[tuple[str, Any, Any]]) -> None:
    batch, rec = build(items)
    records = [AuditChain().append("sec", "add", "34020000001320000001", None, {"status": "approved"}, "", T0), rec]
    assert verify(records, batch_digests={rec.seq: batch_digest(batch.lines)}).ok
    assert verify(records).ok                   # without digests only the chain is checked
    if not items:
        assert verify(records, batch_digests={}).ok      # an empty batch has the empty digest


@given(items_st.filter(lambda x: len(x) >= 2), st.data())
def test_any_change_to_the_items_is_edited_at_the_batch(items: list[tuple[str, Any, Any]],
                                                       data: st.DataObject) -> None:
    batch, rec = build(items)
    records = [AuditChain().append("sec", "add", "34020000001320000001", None, {"status": "approved"}, "", T0), rec]
    lines = list(batch.lines)
    how = data.draw(st.sampled_from(["edit", "drop", "add", "swap"]))
    i = data.draw(st.integers(0, len(lines) - 1))
    if how == "edit":
        lines[i] = lines[i].replace('"n":', '"n": ', 1)
    elif how == "drop":
        del lines[i]
    elif how == "add":
        lines.insert(i, batch_line(i + 1, "34020000001329999999", None, {"status": "approved"}))
    else:
        j = (i + 1) % len(lines)
        lines[i], lines[j] = lines[j], lines[i]
    res = verify(records, batch_digests={rec.seq: batch_digest(lines)})
    assert (res.ok, res.first_bad_seq, res.problem) == (False, rec.seq, "edited")


def test_rewriting_the_digest_breaks_the_record_hash() -> None:
    _batch, rec = build([("34020000001320000002", None, {"s": "approved"})])
    forged_lines = [batch_line(1, "34020000001320000002", None, {"s": "revoked"})]
    forged = replace(rec, after={**(rec.after or {}), "digest": batch_digest(forged_lines)})
    first = AuditChain().append("sec", "add", "34020000001320000001", None, {"status": "approved"}, "", T0)
    res = verify([first, forged], batch_digests={rec.seq: batch_digest(forged_lines)})
    assert (res.ok, res.first_bad_seq, res.problem) == (False, rec.seq, "edited")
