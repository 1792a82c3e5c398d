"""Hash-chained audit: building, canonical hashing, and each kind of tampering found at the right seq."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whitelist.audit import GENESIS_HASH, AuditChain, AuditRecord, verify
from whitelist.errors import AuditChainError

T0 = datetime(2026, 11, 27, tzinfo=UTC)


def chain(n: int) -> list[AuditRecord]:
    c = AuditChain()
    return [c.append("sec:alice", "approve", f"3402000000132000{i:04d}", {"status": "pending"},
                     {"status": "approved", "名称": "门口"}, f"ticket {i}", T0 + timedelta(seconds=i))
            for i in range(n)]


def forge(after: AuditRecord | None, seq: int, **kw: object) -> AuditRecord:
    """A record an attacker computes correctly on top of `after`."""
    return AuditChain(after).append(**{"actor": "evil", "action": "approve", "target": "x", "before": None,
                                       "after": None, "reason": "", "now": T0, **kw})  # type: ignore[arg-type]


def test_genesis_and_links() -> None:
    recs = chain(3)
    assert recs[0].seq == 1 and recs[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in recs[1:]] == [r.hash for r in recs[:-1]]
    assert verify(recs).ok and verify(recs).checked == 3 and verify([]).ok


def test_hash_is_sha256_of_canonical_json_without_hash() -> None:
    r = chain(1)[0]
    doc = {k: v for k, v in r.to_dict().items() if k != "hash"}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashlib.sha256(canonical).hexdigest() == r.hash


def test_non_json_before_after_refused() -> None:
    with pytest.raises(AuditChainError):
        AuditChain().append("a", "b", "c", {"x": object()}, None, "", T0)


@pytest.mark.parametrize("field", ["actor", "action", "target", "reason", "before", "after", "ts"])
def test_edit_detected(field: str) -> None:
    recs = chain(6)
    value: object = {"status": "revoked"} if field in ("before", "after") else (
        T0 + timedelta(days=1) if field == "ts" else "mallory")
    recs[3] = replace(recs[3], **{field: value})
    assert (verify(recs).ok, verify(recs).first_bad_seq, verify(recs).problem) == (False, 4, "edited")


def test_edit_with_recomputed_hash_detected_at_edited_record() -> None:
    recs = chain(6)
    recs[2] = forge(recs[1], 3, actor="mallory")
    res = verify(recs)
    assert (res.first_bad_seq, res.problem) == (3, "edited")


@pytest.mark.parametrize("idx", [0, 2, 4])
def test_remove_detected(idx: int) -> None:
    recs = chain(6)
    del recs[idx]
    res = verify(recs)
    assert (res.ok, res.first_bad_seq, res.problem) == (False, idx + 1, "removed")


def test_remove_several_names_first_missing() -> None:
    recs = chain(8)
    del recs[3:6]
    assert (verify(recs).first_bad_seq, verify(recs).problem) == (4, "removed")


def test_reorder_detected() -> None:
    recs = chain(6)
    recs[2], recs[3] = recs[3], recs[2]
    assert (verify(recs).first_bad_seq, verify(recs).problem) == (3, "reordered")
    recs = chain(6)
    recs.append(recs.pop(1))                 # record 2 moved to the end
    assert (verify(recs).first_bad_seq, verify(recs).problem) == (2, "reordered")


def test_insert_forged_record_detected() -> None:
    recs = chain(6)
    recs.insert(3, forge(recs[2], 4))        # a well-formed record claiming seq 4 after seq 3
    assert (verify(recs).first_bad_seq, verify(recs).problem) == (4, "inserted")


def test_insert_garbage_record_detected() -> None:
    recs = chain(6)
    junk = replace(recs[0], seq=99, actor="x")
    recs.insert(2, junk)
    assert (verify(recs).first_bad_seq, verify(recs).problem) == (99, "inserted")


def test_duplicated_record_detected() -> None:
    recs = chain(5)
    recs.insert(3, recs[2])
    assert (verify(recs).first_bad_seq, verify(recs).problem) == (3, "inserted")


def test_tail_needs_anchor() -> None:
    recs = chain(5)
    anchor = (5, recs[4].hash)
    assert verify(recs[:4]).ok                          # a chain cannot prove its own tail …
    assert (verify(recs[:4], anchor=anchor).first_bad_seq, verify(recs[:4], anchor=anchor).problem) == \
        (5, "removed")                                  # … a remembered anchor can
    rewritten = [*recs[:4], forge(recs[3], 5, actor="mallory")]
    assert verify(rewritten).ok
    assert verify(rewritten, anchor=anchor).problem == "edited"
    assert verify([*recs, forge(recs[4], 6)], anchor=anchor).ok     # later appends are fine


@given(n=st.integers(2, 12), data=st.data())
def test_any_single_tamper_detected(n: int, data: st.DataObject) -> None:
    recs = chain(n)
    kind = data.draw(st.sampled_from(["edit", "remove", "swap", "insert"]))
    i = data.draw(st.integers(0, n - 2))               # not the tail (needs an anchor)
    if kind == "edit":
        recs[i] = replace(recs[i], reason="changed")
        expected = (i + 1, "edited")
    elif kind == "remove":
        del recs[i]
        expected = (i + 1, "removed")
    elif kind == "swap":
        recs[i], recs[i + 1] = recs[i + 1], recs[i]
        expected = (i + 1, "reordered")
    else:
        recs.insert(i + 1, forge(recs[i], i + 2))
        expected = (i + 2, "inserted")
    res = verify(recs)
    assert not res.ok and (res.first_bad_seq, res.problem) == expected


def test_insert_forged_record_with_unused_seq_detected() -> None:
    recs = chain(5)
    x = AuditRecord(**{**{f: getattr(forge(recs[2], 4), f) for f in AuditRecord.__slots__}, "seq": 100})
    x = replace(x, hash=x.computed_hash())       # consistent hash, links to seq 3, claims seq 100
    recs.insert(3, x)
    assert (verify(recs).first_bad_seq, verify(recs).problem) == (100, "inserted")
