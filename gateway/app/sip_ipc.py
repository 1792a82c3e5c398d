"""The SIP workers' wire between main and each worker process (sans-IO): frames in, messages out.

A frame is a 4-byte big-endian length and a `marshal`-encoded tuple `(kind, *fields)` of plain
values (str, int, float, bytes, dict). marshal is the fastest stdlib codec for such tuples and is
safe here because both ends are this program on one machine over a socketpair it created; it is
never used on anything from the network. A frame above `MAX_FRAME` is a protocol error.

Messages, worker → main:
    READY(index, pid)                                   the worker's socket is bound, policy loaded
    FORWARD(host, port, data)                           a datagram main must handle, raw
    LOGIN(seq, device_id, host, port, call_id, contact, user_agent, expires, now)
                                                        an admitted REGISTER; answered on ACK(seq)
                                                        (seq 0: a plain refresh, already answered)
    UNREGISTER(device_id, now)                          an admitted Expires: 0 (already answered)
    KEEPALIVE(device_id, now)                           a keepalive from the bound address (answered)
    FAILURE(device_id, host, now[, seq])                a failed password (seq: from a worker, which
                                                        holds its 403 until ACK(seq)); also main → workers
    SUCCESS(device_id, host, now)                       a verified password (also main → workers)
    BAN(host, until)                                    a flood ban (also main → workers)
    ALARM(device_id, kind, transport, host, port, detail)
    PENDING(evidence, now)                              an unknown ID to record as pending
    STATS(adapter_counts, endpoint_counts)              counter deltas since the last STATS
    PONG(n)                                             answers PING(n): all before it is applied
Messages, main → worker:
    HELLO(index, settings)                              first frame: who you are (pickled Settings)
    BIND(device_id, transport, host, port, call_id, online)   main's binding for the ID changed
    DROP(device_id)                                     main forgot the ID
    SYNCED()                                            the snapshot after HELLO is complete
    ACK(seq, ok)                                        LOGIN/FAILURE `seq` is recorded: answer now
                                                        (ok False: the ID is locked, answer 403)
    PING(n)                                             a barrier (SipWorkers.barrier)
    POLICY(entries, rules)                              whitelist changes main applied (pickled
                                                        {device_id: Entry | None}, rule list | None)
"""

from __future__ import annotations

import marshal
import struct
from enum import IntEnum
from typing import Any

from gateway.errors import GbgateError

MAX_FRAME = 16 * 1024 * 1024
_LEN = struct.Struct(">I")


class Kind(IntEnum):
    READY = 1
    FORWARD = 2
    LOGIN = 3
    UNREGISTER = 4
    KEEPALIVE = 5
    FAILURE = 6
    SUCCESS = 7
    BAN = 8
    ALARM = 9
    PENDING = 10
    STATS = 11
    PONG = 12
    HELLO = 20
    BIND = 21
    DROP = 22
    SYNCED = 23
    ACK = 24
    POLICY = 25
    PING = 26


class IpcError(GbgateError):
    """A frame that is not ours: too large or not a (kind, …) tuple. The link is closed."""


Message = tuple[Any, ...]


def encode(kind: Kind, *fields: Any) -> bytes:
    body = marshal.dumps((int(kind), *fields))
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Incremental: feed any chunks, get whole messages back (bounded buffer, house rule 6)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > MAX_FRAME:
                raise IpcError(f"frame of {size} bytes")
            if end - pos - 4 < size:
                break
            try:
                msg = marshal.loads(bytes(buf[pos + 4 : pos + 4 + size]))
            except (EOFError, ValueError, TypeError):
                raise IpcError("undecodable frame") from None
            if not isinstance(msg, tuple) or not msg or not isinstance(msg[0], int):
                raise IpcError("frame is not a (kind, …) tuple")
            out.append(msg)
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out
