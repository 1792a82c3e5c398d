"""A cheap HTTP-FLV viewer for the media benches: counts video tags, timestamp gaps and latency.

One asyncio Protocol per viewer, no HTTP client library: GET /live/{id}.flv, then each read is
de-chunked (HTTP/1.1 chunked, or a plain body) and walked tag by tag with `bytes.find` and
`int.from_bytes` over the whole read — work per tag and per read, never per byte. A video tag
whose FLV timestamp jumps by more than 60 ms counts the frames between as missing; the send
time a camera stamped into the frame ("LAT" + 16 hex digits of CLOCK_MONOTONIC ns, see
rtp_blast) is subtracted from the time the read arrived, past the first 50 tags (the GOP
cache burst a joiner gets is old frames by design).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

SKIP_TAGS = 50


class FlvViewer(asyncio.Protocol):
    """Reads one HTTP-FLV response until `seconds` have passed; fills `out` as bench_media expects."""

    def __init__(self, url: str, seconds: float, out: dict[str, Any], done: asyncio.Future[None]) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.out, self.done = out, done
        self.t0 = time.monotonic()
        self.end = self.t0 + seconds
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.in_body = False
        self.chunked = False
        self.raw = bytearray()  # chunked body bytes not yet de-chunked
        self.need = 0  # bytes left of the current chunk's data
        self.flv = bytearray()
        self.pos = 13  # FLV header (9) + PreviousTagSize0 (4)
        self.total = self.tags = self.gaps = 0
        self.last_ts: int | None = None
        self.lat_sum = self.lat_max = 0
        self.lats: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(f"GET {self.target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"  # type: ignore[union-attr]
                             "Accept: */*\r\nUser-Agent: gbgate-bench\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        now_ns = time.monotonic_ns()
        if not self.in_body:
            self.head += data
            i = self.head.find(b"\r\n\r\n")
            if i < 0:
                return
            lines = bytes(self.head[:i]).decode("latin-1").split("\r\n")
            self.out["status"] = int(lines[0].split()[1])
            self.chunked = any(h.lower().startswith("transfer-encoding:") and "chunked" in h.lower()
                               for h in lines[1:])
            data = bytes(self.head[i + 4:])
            self.head.clear()
            self.in_body = True
            if self.out["status"] != 200:  # an error page is no FLV: nothing to count
                self.finish()
                return
            if not data:
                return
        if "ttfb" not in self.out:
            self.out["ttfb"] = time.monotonic() - self.t0
        self.total += len(data)
        if self.chunked:
            self._dechunk(data)
        else:
            self.flv += data
        self._tags(now_ns)
        if time.monotonic() > self.end:
            self.finish()

    def _dechunk(self, data: bytes) -> None:
        raw = self.raw
        raw += data
        p = 0
        n = len(raw)
        flv = self.flv
        while p < n:
            if self.need:
                k = min(self.need, n - p)
                flv += raw[p:p + k]
                p += k
                self.need -= k
                if self.need:
                    break
                continue
            # a chunk boundary: CRLF ending the previous chunk's data, then "size\r\n"
            if raw.startswith(b"\r\n", p):
                p += 2
                continue
            e = raw.find(b"\r\n", p)
            if e < 0:
                break
            size = int(raw[p:e].split(b";", 1)[0], 16)
            p = e + 2
            if size == 0:
                self.finish()
                break
            self.need = size
        del raw[:p]

    def _tags(self, now_ns: int) -> None:
        buf, pos = self.flv, self.pos
        n = len(buf)
        while pos + 11 <= n:
            size = int.from_bytes(buf[pos + 1:pos + 4], "big")
            end = pos + 15 + size
            if end > n:
                break
            if buf[pos] == 9 and buf[pos + 12] == 1:
                ts = int.from_bytes(buf[pos + 4:pos + 7], "big")
                last = self.last_ts
                if last is not None and ts - last > 60:
                    self.gaps += round((ts - last) / 40) - 1
                self.last_ts = ts
                self.tags += 1
                if self.tags > SKIP_TAGS:
                    i = buf.find(b"LAT", pos + 11, end)
                    if i >= 0:
                        lat = now_ns - int(buf[i + 3:i + 19], 16)
                        self.lat_sum += lat
                        if lat > self.lat_max:
                            self.lat_max = lat
                        self.lats.append(lat)
            pos = end
        if pos > 1 << 20 or pos == n:
            del buf[:pos]
            pos = 0
        self.pos = pos

    def finish(self) -> None:
        if self.done.done():
            return
        lats = sorted(self.lats)
        self.out.update(bytes=self.total, frames=self.tags, missing=self.gaps, seconds=time.monotonic() - self.t0,
                        lat_sum_ns=self.lat_sum, lat_n=len(lats), lat_max_ns=self.lat_max,
                        lat_p99_ns=lats[int(len(lats) * 0.99)] if lats else 0)
        self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish()


async def view(url: str, seconds: float, out: dict[str, Any]) -> None:
    """One viewer for `seconds` (the time spent connecting included)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    u = urlsplit(url)
    proto = FlvViewer(url, seconds, out, done)
    transport, _ = await loop.create_connection(lambda: proto, u.hostname or "127.0.0.1", u.port or 80)
    try:
        await asyncio.wait_for(asyncio.shield(done), max(0.1, proto.end - time.monotonic()) + 1.0)
    except TimeoutError:
        proto.finish()  # a stream that stalled: what it had so far
    finally:
        transport.close()
