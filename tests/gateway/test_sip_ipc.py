"""The main ↔ SIP worker codec (gateway/app/sip_ipc.py): whole, byte by byte, and refused."""

from __future__ import annotations

import struct

import pytest

from gateway.app.sip_ipc import MAX_FRAME, FrameDecoder, IpcError, Kind, encode

MESSAGES = [
    (Kind.FORWARD, "127.0.0.1", 5060, b"SIP/2.0 200 OK\r\n\r\n"),
    (Kind.LOGIN, 7, "34020000001320000001", "10.0.0.1", 5060, "c@h", "<sip:x@h>", "ua", 3600, 1.5),
    (Kind.PENDING, {"device_id": "34020000001320000001", "port": 5}, 2.0),
    (Kind.SYNCED,),
]


def test_round_trip_whole_and_byte_by_byte() -> None:
    wire = b"".join(encode(k, *f) for k, *f in MESSAGES)
    want = [tuple(int(m[0]) if i == 0 else v for i, v in enumerate(m)) for m in MESSAGES]
    assert FrameDecoder().feed(wire) == want
    dec = FrameDecoder()
    got = []
    for i in range(len(wire)):
        got += dec.feed(wire[i : i + 1])
    assert got == want


def test_oversize_and_garbage_are_refused() -> None:
    with pytest.raises(IpcError):
        FrameDecoder().feed(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(IpcError):
        FrameDecoder().feed(struct.pack(">I", 3) + b"\xff\xff\xff")
    import marshal

    body = marshal.dumps("not a tuple")
    with pytest.raises(IpcError):
        FrameDecoder().feed(struct.pack(">I", len(body)) + body)
