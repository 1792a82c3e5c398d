"""RTP over TCP: RFC 4571 §2 framing (2-byte big-endian length before each packet).

The deframer takes any chunk boundaries. When a length or header is implausible (corrupted
context, a sender that lost sync) it resynchronises the way ZLMediaKit's RtpSplitter does
(gb28181.md §6.3): search for a plausible header — version 2, a payload type we expect (or
RTCP 200–204), a sane length — and accept it only when the packet after it also starts with a
plausible header. With a known SSRC the search is `bytes.find` for the SSRC octets; otherwise a
compiled character-class pattern over (version byte, PT byte) — both run in C, never per byte
in Python. In sync, a packet whose follower is already buffered and is not a plausible header
is treated as corrupt too. GB receivers should pass max_frame≈10 KiB (ZLMediaKit's rtpMaxSize):
a corrupted length can swallow at most that much.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

from gateway.media.errors import RtpError
from gateway.media.rtp import RTCP_PACKET_TYPES, RTP_HEADER_SIZE

_LEN = struct.Struct("!H")
_MIN_PACKET = 8  # an RTCP RR without report blocks; RTP needs 12


def frame(packet: bytes | memoryview) -> bytes:
    """Prefix one RTP/RTCP packet with its 2-byte length (never coalesce two packets)."""
    n = len(packet)
    if n > 0xFFFF:
        raise RtpError(f"packet of {n} bytes does not fit RFC 4571 framing")
    return _LEN.pack(n) + packet


class Rfc4571Deframer:
    """Split an RFC 4571 byte stream into packets; resync after corruption and count it."""

    __slots__ = (
        "_buf",
        "_pattern",
        "_pt_ok",
        "_ssrc",
        "_synced",
        "bytes_in",
        "bytes_skipped",
        "max_frame",
        "packets",
        "resyncs",
    )

    def __init__(self, max_frame: int = 65535, *, payload_types: Iterable[int] = (96,),
                 ssrc: int | None = None) -> None:
        self.max_frame = max_frame
        pts = sorted({pt & 0x7F for pt in payload_types})
        ok = bytearray(256)
        second = []
        for pt in pts:
            ok[pt] = ok[pt | 0x80] = 1
            second += [pt, pt | 0x80]
        for t in RTCP_PACKET_TYPES:
            ok[t] = 1
            second.append(t)
        self._pt_ok = bytes(ok)
        cls = b"".join(re.escape(bytes((b,))) for b in sorted(set(second)))
        # Two length octets, then a version-2 first octet and an expected second octet.
        self._pattern = re.compile(b"(?s)..[\x80-\xbf][" + cls + b"]")
        self._ssrc = None if ssrc is None else struct.pack("!I", ssrc & 0xFFFFFFFF)
        self._buf = bytearray()
        self._synced = True
        self.resyncs = 0
        self.bytes_skipped = 0
        self.bytes_in = 0
        self.packets = 0

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a packet (bytes_in = emitted+framing+skipped+this)."""
        return len(self._buf)

    def _plausible(self, buf: bytearray, p: int) -> int:
        """Length of the packet framed at p if its header is plausible, -1 if not, 0 if unknown."""
        if p + 4 > len(buf):
            return 0
        n = (buf[p] << 8) | buf[p + 1]
        if buf[p + 2] >> 6 != 2 or not self._pt_ok[buf[p + 3]]:
            return -1
        is_rtcp = buf[p + 3] in RTCP_PACKET_TYPES
        if n > self.max_frame or n < (_MIN_PACKET if is_rtcp else RTP_HEADER_SIZE):
            return -1
        if self._ssrc is not None and not is_rtcp and p + 14 <= len(buf) \
                and buf[p + 10:p + 14] != self._ssrc:
            return -1
        return n

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes; return every complete packet (without its length prefix)."""
        buf = self._buf
        buf += data
        self.bytes_in += len(data)
        out: list[bytes] = []
        p = 0
        while True:
            if not self._synced:
                found = self._search(buf, p)
                if found < 0:
                    break  # _search advanced nothing usable; keep the tail
                p = found
                self._synced = True
            n = self._plausible(buf, p)
            if n == 0:
                break
            if n < 0:
                # Lost sync here: this byte is garbage; search from the next one.
                self._synced = False
                self.resyncs += 1
                self.bytes_skipped += 1
                p += 1
                continue
            end = p + 2 + n
            if end > len(buf):
                break
            if end + 4 <= len(buf) and self._plausible(buf, end) < 0:
                # The follower is here and is not a header: either garbage follows a good
                # packet, or this length is corrupt and swallowed real packets. Only the
                # latter leaves a confirmed packet start inside the claimed body.
                inner = self._confirmed_in(buf, p + 1, end)
                if inner >= 0:
                    self.resyncs += 1
                    self.bytes_skipped += inner - p
                    p = inner
                    continue
            out.append(bytes(buf[p + 2:end]))
            self.packets += 1
            p = end
        if p:
            del buf[:p]
        return out

    def _search(self, buf: bytearray, start: int) -> int:
        """Find the next confirmed packet start at or after `start`; skip and count garbage.

        Returns the position (bytes before it counted as skipped) or -1 when more data is
        needed; in that case garbage is dropped from the buffer up to the candidate window.
        """
        pos = start
        ssrc = self._ssrc
        pending = -1  # first candidate whose follower is not buffered yet
        while True:
            if ssrc is not None:
                hit = buf.find(ssrc, pos + 10)
                cand = hit - 10 if hit >= 0 else -1
            else:
                m = self._pattern.search(buf, pos)
                cand = m.start() if m else -1
            if cand < 0:
                if pending >= 0:
                    # Wait at the first unconfirmed candidate (its follower is at most
                    # max_frame away); nothing later could be confirmed either.
                    self._skip(buf, start, pending)
                    return -1
                # Keep the last 13 bytes: a candidate header may straddle the next chunk.
                self._skip(buf, start, max(pos, len(buf) - 13))
                return -1
            n = self._plausible(buf, cand)
            if n > 0:
                confirm = self._plausible(buf, cand + 2 + n)
                if confirm > 0:
                    self.bytes_skipped += cand - start
                    return cand
                if confirm == 0 and pending < 0:
                    pending = cand
            pos = cand + 1

    def _confirmed_in(self, buf: bytearray, lo: int, hi: int) -> int:
        """First candidate in [lo, hi) whose follower is a plausible header too, or -1."""
        pos = lo
        while pos < hi:
            if self._ssrc is not None:
                hit = buf.find(self._ssrc, pos + 10, hi + 10)
                cand = hit - 10 if hit >= 0 else -1
            else:
                m = self._pattern.search(buf, pos, hi + 4)
                cand = m.start() if m else -1
            if cand < 0 or cand >= hi:
                return -1
            n = self._plausible(buf, cand)
            if n > 0 and self._plausible(buf, cand + 2 + n) > 0:
                return cand
            pos = cand + 1
        return -1

    def _skip(self, buf: bytearray, start: int, upto: int) -> None:
        """Drop buf[start:upto] as garbage; the caller restarts at index `start`."""
        if upto > start:
            self.bytes_skipped += upto - start
            del buf[start:upto]
