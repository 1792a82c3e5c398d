"""Durable append-only journal of health events: persist before acknowledging (issue 5 §1).

Every state change is appended here first (cheap: one JSON encode into a buffer, no I/O on the
loop), fsynced in batches at most every `fsync_interval` seconds, and copied into the database
later by whoever calls `committable()` / `mark_committed()`. After `kill -9` the journal still
holds every event whose `append_durable()` returned.

File format, one record per line::

    <crc32 of json, 8 hex digits> <json>\\n
    json = {"i": event_id, "s": subject, "t": ts, "st": state, "c": cause, "e": evidence}

A crash mid-write leaves a torn tail (a line without its newline, or trailing lines whose CRC does
not match): `replay` skips it and `open` truncates it before appending again. A bad line followed
by good ones is real corruption and raises JournalCorrupt.

Offsets given to `mark_committed` are the record sequence numbers of this process (the `upto`
returned by `committable()`); after a restart everything in the file is replayed and copied again,
which the database absorbs because event IDs are unique (insert-or-ignore). Compaction copies the
uncommitted tail to a temporary file, fsyncs it and renames it over the journal (atomic on POSIX),
then fsyncs the directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import zlib
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.health.errors import JournalCorrupt, JournalError
from gateway.health.timeline import CAUSE_GATEWAY_DOWN, Event, State, to_ms

__all__ = ["Journal", "decode_line", "encode_event", "recover", "replay_file"]


# json.dumps with options builds a JSONEncoder per call; one, made once, writes the same bytes
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# the string escaping _ENCODER applies (ensure_ascii=False), as one C call per string
_STRING = json.encoder.encode_basestring
_INF = float("inf")


def _flat_body(event: Event) -> str | None:
    """`_ENCODER`'s JSON for the usual event — string fields, a finite float time, evidence of
    string keys and values — built from one escape per string instead of the encoder's walk over
    a dict made for it (a registration storm journals one per login); None: another shape."""
    ts, ev = event.ts, event.evidence
    if type(ts) is not float or not -_INF < ts < _INF or type(ev) is not dict:
        return None
    i, subject, cause = event.event_id, event.subject, event.cause
    if type(i) is not str or type(subject) is not str or type(cause) is not str:
        return None
    parts = []
    for k, v in ev.items():
        if type(k) is not str or type(v) is not str:
            return None
        parts.append(f"{_STRING(k)}:{_STRING(v)}")
    return (f'{{"i":{_STRING(i)},"s":{_STRING(subject)},"t":{float.__repr__(ts)},"st":{_STRING(str(event.state))},'
            f'"c":{_STRING(cause)},"e":{{{",".join(parts)}}}}}')


def encode_event(event: Event) -> bytes:
    """One journal line for `event` (raises JournalError if the evidence is not JSON)."""
    try:
        text = _flat_body(event)
        if text is None:
            text = _ENCODER.encode({"i": event.event_id, "s": event.subject, "t": event.ts, "st": str(event.state),
                                    "c": event.cause, "e": event.evidence})
        body = text.encode()
    except (TypeError, ValueError) as exc:
        raise JournalError(f"event {event.event_id!r} cannot be journaled: {exc}") from None
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_line(line: bytes) -> Event | None:
    """The event in one line (without its newline), or None if the line is damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        d = json.loads(body)
        return Event(d["i"], d["s"], float(d["t"]), State(d["st"]), d["c"], d["e"])
    except (ValueError, KeyError, TypeError):
        return None


def _scan(data: bytes, path: str) -> tuple[list[tuple[Event, int]], int]:
    """Records with their end positions, and the length of the valid prefix (torn tail excluded)."""
    records: list[tuple[Event, int]] = []
    pos, good_end, bad_line = 0, 0, 0
    lineno = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # torn last line (no newline): ignored
        lineno += 1
        event = decode_line(data[pos:nl])
        if event is None:
            bad_line = bad_line or lineno
        else:
            if bad_line:
                raise JournalCorrupt(path, bad_line, "damaged record followed by valid records")
            records.append((event, nl + 1))
            good_end = nl + 1
        pos = nl + 1
    return records, good_end


def replay_file(path: str | os.PathLike[str]) -> list[Event]:
    """Read back every complete record, first occurrence of each event_id, skipping a torn tail."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from None
    records, _ = _scan(data, str(path))
    seen: set[str] = set()
    out = []
    for event, _end in records:
        if event.event_id not in seen:
            seen.add(event.event_id)
            out.append(event)
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Append-only event journal with batched fsync; one instance per file, one event loop.

    Use: `await j.open()` (replays and repairs), run `j.run()` as a background task, call
    `append()` (fire and forget) or `await append_durable()` (returns after the covering fsync),
    `await j.close()` at shutdown.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync_interval: float = 1.0,
        max_pending: int = 100_000,
        compact_min_bytes: int = 4 << 20,
    ) -> None:
        self.path = Path(path)
        self.fsync_interval = fsync_interval
        self.max_pending = max_pending
        self.compact_min_bytes = compact_min_bytes
        self._fd: int | None = None
        self._size = 0
        self._ids: set[str] = set()  # IDs in the file (uncommitted part) or buffered
        self._unsynced: set[str] = set()  # IDs buffered or being written, not yet fsynced
        self._pending: list[tuple[Event, bytes]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._barrier: asyncio.Future[None] | None = None
        self._durable: deque[tuple[int, int, Event]] = deque()  # (seq, end position, event)
        self._committed_pos = 0
        self._seq = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.fsyncs = 0  # counted for benchmarks and tests

    # ------------------------------------------------------------------ opening and reading
    async def open(self) -> list[Event]:
        """Open (creating) the file, truncate a torn tail, and return the events it holds."""
        if self._fd is not None:
            raise JournalError(f"journal {self.path} is already open")
        records, fd, size = await asyncio.to_thread(self._open_sync)
        self._fd, self._size = fd, size
        events = []
        for event, end in records:
            if event.event_id in self._ids:
                continue
            self._ids.add(event.event_id)
            self._seq += 1
            self._durable.append((self._seq, end, event))
            events.append(event)
        return events

    def _open_sync(self) -> tuple[list[tuple[Event, int]], int, int]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0) if size else b""
            records, good_end = _scan(data, str(self.path))
            if good_end < size:
                os.ftruncate(fd, good_end)
                os.fsync(fd)
            return records, fd, good_end
        except JournalError:
            raise
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from None

    async def replay(self) -> list[Event]:
        """Events currently in the file (first occurrence of each ID), read in a worker thread."""
        return await asyncio.to_thread(replay_file, self.path)

    # ------------------------------------------------------------------ appending
    def append(self, event: Event) -> None:
        """Buffer `event`; no I/O. A repeated event_id is a no-op."""
        if event.event_id in self._ids:
            return
        if len(self._pending) >= self.max_pending:
            raise JournalError(f"journal backlog full ({self.max_pending} events not yet written)")
        line = encode_event(event)
        self._ids.add(event.event_id)
        self._unsynced.add(event.event_id)
        self._pending.append((event, line))
        self._wake.set()

    def barrier(self) -> asyncio.Future[None]:
        """A future resolved once everything appended so far is fsynced.

        One shared future per batch: a registration storm appends thousands of events between two
        fsyncs, and a task per event (append_durable) cost more than the event itself.
        """
        barrier = self._barrier
        if self._unsynced and barrier is not None and not barrier.done():
            return barrier  # the batch's: no loop lookup (a getpid() syscall each on Python 3.11)
        barrier = asyncio.get_running_loop().create_future()
        if not self._unsynced:
            barrier.set_result(None)  # nothing pending: already durable
            return barrier
        self._barrier = barrier  # the first event of a new batch
        self._waiters.append(barrier)
        self._wake.set()
        return barrier

    async def append_durable(self, event: Event) -> None:
        """Append and return only after an fsync covering the event (persist before acknowledging)."""
        if event.event_id in self._ids and event.event_id not in self._unsynced:
            return  # already durable
        self.append(event)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._wake.set()
        if self._runner is None or self._runner.done():
            await self.flush()
        await fut

    async def flush(self) -> None:
        """Write and fsync everything buffered, then settle the waiters it covers."""
        async with self._lock:
            if not self._pending and not self._waiters:
                return
            if self._fd is None:
                raise JournalError(f"journal {self.path} is not open")
            batch, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            self._barrier = None  # events appended from now on need the next batch's barrier
            data = b"".join(line for _, line in batch)
            cancelled = False
            try:
                if data:  # waiters alone were covered by the flush that held the lock before us
                    write = asyncio.ensure_future(asyncio.to_thread(self._write_sync, data))
                    try:
                        await asyncio.shield(write)
                    except asyncio.CancelledError:
                        # the thread cannot be stopped: let it finish so the bookkeeping matches
                        # the file, then propagate the cancellation
                        cancelled = True
                        await asyncio.wait({write})
                        write.result()
            except Exception as exc:
                for ev, _ in batch:
                    self._ids.discard(ev.event_id)
                    self._unsynced.discard(ev.event_id)
                err = exc if isinstance(exc, JournalError) else JournalError(f"journal write failed: {exc}")
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(err)
                raise err from None
            pos = self._size
            for ev, line in batch:
                pos += len(line)
                self._seq += 1
                self._durable.append((self._seq, pos, ev))
                self._unsynced.discard(ev.event_id)
            self._size = pos
            self.fsyncs += bool(data)
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            if cancelled:
                raise asyncio.CancelledError

    def _write_sync(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)
        except OSError as exc:
            try:  # never leave a partial line for the next batch to be glued to
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise JournalError(f"cannot write journal {self.path}: {exc}") from None

    async def run(self) -> None:
        """Background task: flush when there is work, at most once per fsync_interval."""
        loop = asyncio.get_running_loop()
        self._runner = asyncio.current_task()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                started = loop.time()
                await self.flush()
                await asyncio.sleep(max(0.0, self.fsync_interval - (loop.time() - started)))
        except asyncio.CancelledError:
            await self.flush()  # last batch on orderly shutdown
            raise
        finally:
            self._runner = None

    # ------------------------------------------------------------------ database hand-off
    def committable(self) -> tuple[list[Event], int]:
        """Durable events not yet marked committed, and the `upto` offset to pass back."""
        if not self._durable:
            return [], self._seq
        return [ev for _, _, ev in self._durable], self._durable[-1][0]

    async def mark_committed(self, upto_offset: int) -> None:
        """The events up to `upto_offset` are in the database; drop them, compacting the file."""
        async with self._lock:
            while self._durable and self._durable[0][0] <= upto_offset:
                _, end, ev = self._durable.popleft()
                self._committed_pos = end
                self._ids.discard(ev.event_id)
            if self._committed_pos and self._committed_pos >= self.compact_min_bytes:
                await asyncio.to_thread(self._compact_sync)
                shift = self._committed_pos
                self._size -= shift
                self._durable = deque((seq, end - shift, ev) for seq, end, ev in self._durable)
                self._committed_pos = 0

    def _compact_sync(self) -> None:
        assert self._fd is not None
        tmp = self.path.with_name(self.path.name + ".compact")
        try:
            tail = os.pread(self._fd, self._size - self._committed_pos, self._committed_pos)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                os.write(fd, tail)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            _fsync_dir(self.path)
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        except OSError as exc:
            raise JournalError(f"cannot compact journal {self.path}: {exc}") from None

    async def close(self) -> None:
        """Flush what is buffered and close the file."""
        await self.flush()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            await asyncio.to_thread(os.close, fd)

    @property
    def pending(self) -> int:
        return len(self._pending)


def recover(events: Iterable[Event], *, now: float, last_evidence_ts: float) -> list[Event]:
    """Events that close a crash gap: `unknown` from the last evidence, never billed.

    Every subject whose last state was not `unknown` gets `unknown` at `last_evidence_ts` (the
    gateway could no longer vouch for it); the `gateway` subject gets `unknown` there and `online`
    at `now`. Subjects stay `unknown` until real evidence (a REGISTER, a keepalive timeout after
    restart) arrives. IDs are deterministic, so recovering twice appends nothing new.
    """
    last: dict[str, Event] = {}
    latest = last_evidence_ts
    for ev in sorted(events, key=lambda e: e.ts):
        last[ev.subject] = ev
        latest = max(latest, ev.ts)
    gap_start = min(latest, now)
    mark = to_ms(gap_start)
    evidence: dict[str, Any] = {"last_evidence_ts": gap_start, "restart_ts": now}
    out = [
        Event(f"recover:{subject}:{mark}", subject, gap_start, State.unknown, CAUSE_GATEWAY_DOWN, evidence)
        for subject, ev in sorted(last.items())
        if subject != "gateway" and ev.state is not State.unknown
    ]
    out.append(
        Event(f"recover:gateway:{mark}", "gateway", gap_start, State.unknown, CAUSE_GATEWAY_DOWN, evidence)
    )
    out.append(
        Event(f"recover:gateway-up:{to_ms(now)}", "gateway", now, State.online, "gateway_restart", evidence)
    )
    return out
