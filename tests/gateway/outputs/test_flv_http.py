"""HTTP-FLV / WS-FLV framing: one HTTP chunk or one WebSocket binary message per frame."""

from __future__ import annotations

from gateway.outputs.flv_http import http_chunk, ws_binary


def test_ws_binary_frame_lengths() -> None:
    assert ws_binary(b"x" * 5)[:2] == b"\x82\x05"
    assert ws_binary(b"x" * 300)[:4] == b"\x82\x7e\x01\x2c"
    big = ws_binary(b"x" * 70000)
    assert big[:2] == b"\x82\x7f" and int.from_bytes(big[2:10], "big") == 70000 and len(big) == 70010
    assert http_chunk(b"abc") == b"3\r\nabc\r\n"
