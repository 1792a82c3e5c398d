"""Journal: buffering, batched fsync, idempotent IDs, torn tails, compaction, crash recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.health.errors import JournalCorrupt, JournalError
from gateway.health.journal import _ENCODER, Journal, decode_line, encode_event, recover, replay_file
from gateway.health.timeline import Event, State, build_intervals, gateway_down_periods


def E(i: int, state: State = State.online, subject: str = "channel:34020000001320000001") -> Event:
    return Event(f"id{i}", subject, 1_790_000_000 + i, state, "test", {"i": i, "名": "东门"})


def test_line_round_trip_and_damage() -> None:
    line = encode_event(E(1))
    assert line.endswith(b"\n")
    assert decode_line(line[:-1]) == E(1)
    assert decode_line(line[:-2]) is None  # truncated
    assert decode_line(line[:5] + b"X" + line[6:-1]) is None  # crc mismatch
    with pytest.raises(JournalError):
        encode_event(Event("x", "gateway", 1.0, State.online, "", {"bad": object()}))


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # any text UTF-8 can carry
_VALUE = st.one_of(_TEXT, st.integers(), st.floats(), st.none(), st.lists(_TEXT, max_size=2))


@given(st.one_of(_TEXT, st.integers()), _TEXT, st.one_of(st.floats(), st.integers()), st.sampled_from(list(State)),
       _TEXT, st.dictionaries(st.one_of(_TEXT, st.integers()), _VALUE, max_size=3))
def test_a_line_is_the_json_encoder_s_bytes_whatever_the_event(
        event_id: str, subject: str, ts: float, state: State, cause: str, evidence: dict[object, object]) -> None:
    """The journal writes the usual event (strings, a float time, string evidence) without the
    encoder's walk: its lines must be what the encoder writes, byte for byte, for every event —
    quotes, backslashes, control characters and CJK in any field, odd evidence, NaN — or the
    same JournalError."""
    event = Event(event_id, subject, ts, state, cause, evidence)  # type: ignore[arg-type]
    try:
        body = _ENCODER.encode({"i": event_id, "s": subject, "t": ts, "st": str(state), "c": cause,
                                "e": evidence}).encode()
    except (TypeError, ValueError):
        with pytest.raises(JournalError):
            encode_event(event)
        return
    line = encode_event(event)
    assert line[9:-1] == body
    assert decode_line(line[:-1]) is not None


async def test_append_flush_replay_and_idempotence(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.log")
    assert await j.open() == []
    for i in range(5):
        j.append(E(i))
    j.append(E(2))  # duplicate: no-op
    assert j.pending == 5
    assert replay_file(tmp_path / "j.log") == []  # nothing written before the flush
    await j.flush()
    assert j.pending == 0 and j.fsyncs == 1
    await j.append_durable(E(3))  # already durable: returns without another fsync
    assert j.fsyncs == 1
    await j.append_durable(E(9))
    assert j.fsyncs == 2
    await j.close()
    assert [e.event_id for e in replay_file(tmp_path / "j.log")] == ["id0", "id1", "id2", "id3", "id4", "id9"]
    j2 = Journal(tmp_path / "j.log")
    assert len(await j2.open()) == 6
    j2.append(E(4))  # known from the file: still a no-op after restart
    assert j2.pending == 0
    await j2.close()


async def test_run_batches_fsyncs(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.log", fsync_interval=0.05)
    await j.open()
    runner = asyncio.create_task(j.run())
    await asyncio.gather(*(j.append_durable(E(i)) for i in range(500)))
    assert j.fsyncs <= 3  # 500 concurrent acknowledgements share a couple of fsyncs
    t0 = asyncio.get_running_loop().time()
    for i in range(500, 504):
        await j.append_durable(E(i))
    elapsed = asyncio.get_running_loop().time() - t0
    assert elapsed >= 0.05 * 2  # at most one fsync per interval under continuous load
    j.append(E(1000))
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    await j.close()
    ids = [e.event_id for e in replay_file(tmp_path / "j.log")]
    assert len(ids) == 505 and "id1000" in ids  # the last buffered event flushed at shutdown


async def test_torn_tail_is_skipped_and_truncated(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    path.write_bytes(encode_event(E(1)) + encode_event(E(2)) + encode_event(E(3))[:-7])
    assert [e.event_id for e in replay_file(path)] == ["id1", "id2"]
    # a complete but damaged last line (partial page persisted) counts as torn too
    path.write_bytes(encode_event(E(1)) + encode_event(E(2)) + b"0000dead {garbage}\n")
    assert [e.event_id for e in replay_file(path)] == ["id1", "id2"]
    j = Journal(path)
    assert len(await j.open()) == 2
    await j.append_durable(E(4))
    await j.close()
    assert [e.event_id for e in replay_file(path)] == ["id1", "id2", "id4"]
    assert path.read_bytes().count(b"\n") == 3


def test_corruption_in_the_middle_raises(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    path.write_bytes(encode_event(E(1)) + b"0000dead {garbage}\n" + encode_event(E(3)))
    with pytest.raises(JournalCorrupt) as info:
        replay_file(path)
    assert info.value.line == 2


async def test_mark_committed_compacts(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    j = Journal(path, compact_min_bytes=0)
    await j.open()
    for i in range(10):
        j.append(E(i))
    await j.flush()
    events, upto = j.committable()
    assert [e.event_id for e in events] == [f"id{i}" for i in range(10)]
    for i in range(10, 13):
        j.append(E(i))
    await j.flush()
    await j.mark_committed(upto)
    assert [e.event_id for e in replay_file(path)] == ["id10", "id11", "id12"]
    events, upto2 = j.committable()
    assert [e.event_id for e in events] == ["id10", "id11", "id12"]
    await j.append_durable(E(13))
    await j.mark_committed(upto2)
    assert [e.event_id for e in replay_file(path)] == ["id13"]
    await j.close()
    j2 = Journal(path)
    assert [e.event_id for e in await j2.open()] == ["id13"]
    await j2.close()


async def test_write_failure_fails_waiters(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.log")
    with pytest.raises(JournalError):
        await j.append_durable(E(1))  # not opened
    j2 = Journal(tmp_path / "k.log", max_pending=2)
    j2.append(E(1))
    j2.append(E(2))
    with pytest.raises(JournalError):
        j2.append(E(3))


def test_recover_closes_open_intervals_as_unknown() -> None:
    t0 = 1_790_000_000.0
    ch, dev = "channel:34020000001320000001", "device:34020000001110000001"
    events = [
        Event("g1", "gateway", t0, State.online, "start", {}),
        Event("a", ch, t0 + 10, State.online, "registered", {}),
        Event("b", ch, t0 + 100, State.offline, "keepalive_lost", {}),
        Event("c", dev, t0 + 20, State.online, "registered", {}),
    ]
    last_evidence, now = t0 + 500, t0 + 4100
    out = recover(events, now=now, last_evidence_ts=last_evidence)
    assert {(e.subject, e.state, e.ts) for e in out} == {
        (ch, State.unknown, last_evidence),
        (dev, State.unknown, last_evidence),
        ("gateway", State.unknown, last_evidence),
        ("gateway", State.online, now),
    }
    assert [e.event_id for e in recover(events, now=now, last_evidence_ts=last_evidence)] == [
        e.event_id for e in out
    ]  # deterministic IDs: recovering twice adds nothing
    # the fault before the crash is billed up to the last evidence only; the gap is unknown
    all_events = events + out
    down = gateway_down_periods(all_events, start=t0, end=now + 100)
    assert down == [(last_evidence, now)]
    ivs = build_intervals(
        [e for e in all_events if e.subject == ch], start=t0, end=now + 100, gateway_down=down
    )
    assert [(iv.state, iv.start, iv.end) for iv in ivs] == [
        (State.unknown, t0, t0 + 10),
        (State.online, t0 + 10, t0 + 100),
        (State.offline, t0 + 100, last_evidence),
        (State.unknown, last_evidence, now + 100),
    ]
