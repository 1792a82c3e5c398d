"""Media-plane benchmark: gbgate (own process) + N PS/RTP cameras + M HTTP-FLV viewers per stream.

    python -m load_tests.bench_media --streams 20 --viewers 2 --bitrate 2000000 --seconds 20
    python -m load_tests.bench_media --quick

Each camera is a SIP UA (one asyncio UDP socket per camera, REGISTER with digest, answers
Catalog/DeviceInfo MESSAGEs and INVITE with an SDP answer carrying y=, ACK, BYE) that streams the
H.264 test vector as MPEG-PS over RTP/UDP (gb28181.md §6.7), padded with filler NAL units to the
requested bitrate. Viewers are aiohttp clients reading /live/{id}.flv and counting FLV video tags.
Prints: gateway CPU seconds per second, RSS, per-stream delivered bitrate, frame drops, time to
first frame (first viewer: INVITE included; late viewer: from the GOP cache), kernel UDP drops.

`PsRtpSender` is also what tests/interop uses as the camera's media sender.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import re
import secrets
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.media import rfc4571
from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import is_keyframe, split_access_units
from gateway.media.psmux import PsMuxer
from gateway.media.rtp import packetize

VECTOR = Path(__file__).resolve().parents[1] / "tests" / "data" / "media" / "h264.es"
FPS = 25


def load_aus(path: Path = VECTOR, codec: Codec = Codec.H264) -> list[bytes]:
    return split_access_units(codec, path.read_bytes())


def _filler(n: int) -> bytes:
    """An H.264 filler-data NAL (type 12) of about n bytes: decoders skip it (H.264 §7.4.2.7)."""
    if n <= 6:
        return b""
    return b"\x00\x00\x00\x01\x0c" + b"\xff" * (n - 6) + b"\x80"


class PsRtpSender:
    """Loops an H.264 elementary stream as PS over RTP: one timestamp per frame, marker last."""

    def __init__(self, *, ssrc: int, fps: int = FPS, bitrate: int | None = None, aus: list[bytes] | None = None,
                 audio: bool = False, start_ts: int | None = None, mtu: int = 1400) -> None:
        self.ssrc = ssrc
        self.fps = fps
        self.aus = aus or load_aus()
        self.audio = audio
        self.mtu = mtu
        self.mux = PsMuxer(Codec.H264, Codec.G711A if audio else None)
        self.seq = random.randrange(0x10000)
        self.ts = random.randrange(1 << 30) if start_ts is None else start_ts
        self.index = 0
        pad = 0
        if bitrate:
            natural = sum(len(a) for a in self.aus) * 8 * fps / len(self.aus)
            pad = max(0, int((bitrate - natural) / 8 / fps))
        self.pad = _filler(pad)
        self.frames_sent = 0
        self.packets_sent = 0
        self.bytes_sent = 0

    def next_frame(self) -> list[bytes]:
        """RTP packets of the next frame (video, then its audio in the same timestamp)."""
        au = self.aus[self.index % len(self.aus)]
        self.index += 1
        key = is_keyframe(Codec.H264, au)
        data = au + self.pad if self.pad else au
        pts = self.ts & ((1 << 33) - 1)
        ps = self.mux.mux(MediaFrame("video", Codec.H264, data, pts, pts, key))
        if self.audio:
            ps += self.mux.mux(MediaFrame("audio", Codec.G711A, b"\xd5" * 320, pts, pts, True, 0xC0))
        pkts = packetize(ps, ssrc=self.ssrc, timestamp=self.ts, first_sequence=self.seq, mtu=self.mtu)
        self.seq = (self.seq + len(pkts)) & 0xFFFF
        self.ts = (self.ts + 90000 // self.fps) & 0xFFFFFFFF
        self.frames_sent += 1
        self.packets_sent += len(pkts)
        self.bytes_sent += sum(len(p) for p in pkts)
        return pkts

    async def _pace(self, send: Any, seconds: float | None, stop: asyncio.Event | None) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        while (seconds is None or loop.time() - t0 < seconds) and not (stop and stop.is_set()):
            for p in self.next_frame():
                send(p)
            k += 1
            delay = t0 + k / self.fps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)

    async def run_udp(self, host: str, port: int, *, seconds: float | None = None, stop: asyncio.Event | None = None,
                      local: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(local)
        sock.setblocking(False)
        dest = (host, port)

        def send(p: bytes) -> None:
            with contextlib.suppress(OSError):
                sock.sendto(p, dest)
        try:
            await self._pace(send, seconds, stop)
        finally:
            sock.close()

    async def run_tcp_connect(self, host: str, port: int, *, seconds: float | None = None,
                              stop: asyncio.Event | None = None, retry_for: float = 5.0) -> None:
        """Device connects to the platform (platform TCP passive)."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                _r, w = await asyncio.open_connection(host, port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        await self._stream(w, seconds, stop)

    async def run_tcp_listen(self, host: str, port: int, *, seconds: float | None = None,
                             stop: asyncio.Event | None = None) -> None:
        """Device listens; the platform connects (platform TCP active)."""
        conn: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

        async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            if not conn.done():
                conn.set_result(w)
            else:
                w.close()
        server = await asyncio.start_server(on_conn, host, port)
        try:
            w = await conn
        finally:
            server.close()
        await self._stream(w, seconds, stop)

    async def _stream(self, w: asyncio.StreamWriter, seconds: float | None, stop: asyncio.Event | None) -> None:
        def send(p: bytes) -> None:
            if not w.is_closing():
                w.write(rfc4571.frame(p))
        try:
            await self._pace(send, seconds, stop)
        finally:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
