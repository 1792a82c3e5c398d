"""MPEG-2 Program Stream demuxer, tolerant of what GB/T 28181 devices send (sans-IO).

ISO/IEC 13818-1 §2.5 structures as profiled in gb28181.md §6.5; every quirk of §6.6 is handled:

* pack stuffing is skipped by `pack_stuffing_length`, never by scanning (it may hold 00 00 01);
* private stream 1 (0xBD), padding (0xBE), private 2 (0xBF), the system header (0xBB) and any
  other non-A/V id are skipped by their length field (Hikvision 0xBD may hold 00 00 01 BA);
* a truncated pack header (a start code inside its 14 bytes) is ignored;
* PES_packet_length 0 (video) runs to the next PS-level start code `00 00 01 B9..FF`, which
  Annex-B payload cannot contain (a NAL header octet is < 0x80);
* a PES whose length overruns a PS start code is cut there (corrupted length);
* no/late PSM: codecs are guessed from the stream id and NAL/ADTS sniffing; the PSM CRC is not
  checked and its loops are bounded by program_stream_map_length;
* garbage between packets is skipped and counted; `feed` never raises.

Start codes are found with one compiled pattern (C speed); payloads are sliced, never walked.
Video PES payloads are joined into whole access units: an AU ends when a video PES with a new
PTS starts, at `flush()`, or at the end of a `feed(..., frame_end=True)` — the receiver passes
`frame_end` for each RTP frame so a frame leaves without waiting for the next one. An audio
frame leaves as soon as its PES is complete, so it may precede the video AU it was muxed after.

The common case — nothing buffered and one whole, well-formed RTP frame with `frame_end` — takes
a fast path (`_whole_frame`): the packets are checked in place, the frame is copied once, and the
NAL headers are read from one regex scan. It decides before it changes anything, and hands any
frame it is not sure of (garbage, a cut packet, unbounded or private PES, two access units, a
codec still to sniff) to the general parser, so both give the very same frames and counters.
"""

from __future__ import annotations

import re
import struct
from collections import Counter

from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import H264_IDR, H265_IRAP, START_CODE, is_keyframe, sniff_video_codec, start_codes

__all__ = ["Codec", "MediaFrame", "PsDemuxer", "read_timestamp"]

START = b"\x00\x00\x01"
_PS_CODE = re.compile(b"\x00\x00\x01[\xb9-\xff]")
_U16 = struct.Struct(">H")

_H264_OPENERS = frozenset((6, 7, 8, 9, 14, 15, 16, 17, 18))  # SEI, SPS, PPS, AUD, 14..18
_H265_OPENERS = frozenset((32, 33, 34, 35, 39, 41, 42, 43, 44))  # VPS, SPS, PPS, AUD, prefix SEI
VIDEO_STREAM_TYPES = {0x1B: Codec.H264, 0x24: Codec.H265, 0x10: Codec.UNKNOWN, 0x80: Codec.UNKNOWN}
AUDIO_STREAM_TYPES = {0x90: Codec.G711A, 0x91: Codec.G711U, 0x0F: Codec.AAC}


def read_timestamp(b: bytes | bytearray, off: int) -> int:
    """33-bit PTS/DTS from its 5-byte field (ISO/IEC 13818-1 §2.4.3.7)."""
    return (((b[off] >> 1) & 0x07) << 30) | (b[off + 1] << 22) | ((b[off + 2] >> 1) << 15) \
        | (b[off + 3] << 7) | (b[off + 4] >> 1)


def _psm_entries(body: bytes) -> dict[int, int] | None:
    """elementary_stream_id → stream_type of a PSM body (§2.5.4), None if it is too short.

    The CRC is not checked and the loop is bounded by the body's length, not by
    elementary_stream_map_length (inconsistent in the wild). A later entry for an ID wins."""
    limit = len(body) - 4  # CRC_32 at the end
    if limit < 4:
        return None
    pos = 4 + _U16.unpack_from(body, 2)[0]  # skip program_stream_info
    if pos + 2 > limit:
        return None
    pos += 2
    entries: dict[int, int] = {}
    while pos + 4 <= limit:
        entries[body[pos + 1]] = body[pos]
        pos += 4 + _U16.unpack_from(body, pos + 2)[0]
    return entries


def nal_role(es: bytes | bytearray, i: int, h265: bool) -> tuple[int, bool, bool]:
    """(NAL type, is VCL, opens an access unit) of the NAL whose start code is at `i`: H.264
    §7.4.1.2.3 / H.265 §7.4.2.4.4 — a parameter set, SEI or AUD, or a slice that is its picture's
    first (first_mb_in_slice / first_slice_segment_in_pic_flag = 1, the top bit after the header)."""
    b0 = es[i + 3]
    if h265:
        t = (b0 >> 1) & 0x3F
        vcl = t < 32
        return t, vcl, bool(vcl and es[i + 5] & 0x80) or t in _H265_OPENERS
    t = b0 & 0x1F
    vcl = 1 <= t <= 5
    return t, vcl, bool(vcl and es[i + 4] & 0x80) or t in _H264_OPENERS


def _is_adts(payload: bytes | bytearray) -> bool:
    return len(payload) > 1 and payload[0] == 0xFF and payload[1] & 0xF6 == 0xF0


class PsDemuxer:
    """Streaming PS → MediaFrame. Counters: `errors` (by reason), `bytes_skipped`, `bytes_in`,
    `fast_feeds` (non-empty feeds the whole-frame fast path took). `whole_frames=False` turns the
    fast path off, so that tests can compare it with the general parser (the class is compiled:
    tests cannot subclass it)."""

    def __init__(self, *, max_frame: int = 8 << 20, whole_frames: bool = True) -> None:
        self.max_frame = max_frame
        self.whole_frames = whole_frames
        self._buf = bytearray()
        self._psm: dict[int, int] = {}
        self._guess: dict[int, Codec] = {}
        self._unbounded: int | None = None  # stream id whose length-0 PES we are inside
        self._un_pts: int | None = None
        self._un_video = False
        self._un_parts: list[bytes] = []  # audio payload of an unbounded audio PES
        self._es = bytearray()  # video elementary stream of the access unit being built
        self._marks: list[tuple[int, int | None, int | None]] = []  # (es offset, pts, dts) per PES
        self._scan = 0
        self._nals: list[int] = []  # start codes of the AU being built, as _scan_es found them
        self._scanned = False
        self._seen_vcl = False
        self._au_started = False
        self._au_sid = 0xE0
        self._au_pts: int | None = None
        self._au_dts: int | None = None
        self.errors: Counter[str] = Counter()
        self.bytes_skipped = 0
        self.bytes_in = 0
        self.video_frames = 0
        self.audio_frames = 0
        self.packs = 0
        self.system_headers = 0
        self.psms = 0
        self.fast_feeds = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def stream_types(self) -> dict[int, int]:
        """stream_id → stream_type from the last program stream map(s)."""
        return dict(self._psm)

    def feed(self, data: bytes | bytearray | memoryview, *, frame_end: bool = False) -> list[MediaFrame]:
        """Add PS bytes (any boundaries). `frame_end`: the caller knows a frame ended here."""
        if (frame_end and self.whole_frames and not self._buf and not self._es and not self._marks
                and self._unbounded is None):
            frame = data if type(data) is bytes else bytes(data)
            try:
                fast = self._whole_frame(frame)
            except Exception:  # pragma: no cover - the general parser below counts what is wrong
                fast = None
            if fast is not None:
                self.bytes_in += len(frame)
                if frame:
                    self.fast_feeds += 1
                return fast
        self._buf += data
        self.bytes_in += len(data)
        out: list[MediaFrame] = []
        try:
            self._parse(out, frame_end)
        except Exception:  # a bug must not kill the receive loop (house rule 8); count it
            self.errors["internal"] += 1
            self.bytes_skipped += len(self._buf)
            self._buf.clear()
            self._unbounded = None
            self._drop_au()
        return out

    def flush(self) -> list[MediaFrame]:
        """End of stream: emit what is complete, count an unfinished packet as skipped."""
        out = self.feed(b"", frame_end=True)
        if self._buf:
            self.errors["truncated"] += 1
            self.bytes_skipped += len(self._buf)
            self._buf.clear()
        self._emit_au(out)
        return out

    # -- the whole-frame fast path --------------------------------------------------------------

    def _whole_frame(self, data: bytes) -> list[MediaFrame] | None:
        """One complete RTP frame with nothing buffered: its frames, or None for the general parser.

        Takes only what the general parser would read without a skip, a wait or a cut: packets
        back to back from byte 0 (MPEG-2 pack headers, system headers, PSMs before any PES,
        bounded MPEG-2 audio PES, one video stream's bounded PES, and the packets the parser
        skips by their length), each ending at the next start code or at the end, and video that
        makes one H.264/H.265 access unit of a codec already known from a PSM or a strong
        sniff. Nothing is changed before it is sure.
        """
        n = len(data)
        p = 0
        packs = system_headers = 0
        maps: list[dict[int, int] | None] = []  # the frame's PSMs, parsed
        video: list[tuple[int, int, int | None, int | None]] = []  # (payload start, end, pts, dts)
        audio: list[tuple[int, int, int, int | None]] = []  # (sid, payload start, end, pts)
        vsid = -1
        startswith = data.startswith
        while p < n:
            if n - p < 6 or not startswith(START, p):
                return None
            sid = data[p + 3]
            if sid == 0xBA:
                if n - p < 14 or data.find(START, p + 4, p + 14) >= 0 or data[p + 4] >> 6 != 1:
                    return None
                size = 14 + (data[p + 13] & 0x07)
                if n - p < size:
                    return None
                packs += 1
                p += size
                continue
            end = p + 6 + ((data[p + 4] << 8) | data[p + 5])
            if end > n:
                return None  # overrun or cut: let the parser judge (what follows is checked as the next packet)
            if sid == 0xBB:
                system_headers += 1
            elif sid == 0xBC:
                if video or audio:
                    return None  # a PSM after a PES: the parser applies it in order
                maps.append(_psm_entries(data[p + 6:end]))
            elif 0xC0 <= sid <= 0xEF:
                if end == p + 6 or n - p < 9 or data[p + 6] & 0xC0 != 0x80:
                    return None  # unbounded PES, or an MPEG-1 header
                flags, hl = data[p + 7], data[p + 8]
                hdr_end = p + 9 + hl
                if hdr_end >= end:
                    return None  # bad header length or an empty payload
                pts = dts = None
                if flags & 0x80 and hl >= 5:  # read_timestamp, inlined
                    pts = dts = (((data[p + 9] >> 1) & 0x07) << 30) | (data[p + 10] << 22) \
                        | ((data[p + 11] >> 1) << 15) | (data[p + 12] << 7) | (data[p + 13] >> 1)
                    if flags & 0x40 and hl >= 10:
                        dts = read_timestamp(data, p + 14)
                if sid >= 0xE0:
                    if vsid != sid and vsid >= 0:
                        return None
                    vsid = sid
                    video.append((hdr_end, end, pts, dts))
                else:
                    audio.append((sid, hdr_end, end, pts))
            elif sid < 0xBB or (sid == 0xBD and (sid in self._psm or any(sid in m for m in maps if m))):
                # not a PS packet, the program end code (4 bytes), or private stream 1 made a stream by a PSM
                return None
            # else private stream 1 (Hikvision's), padding, private stream 2, …: skipped by length
            p = end
        au: MediaFrame | None = None
        if video:
            au = self._whole_au(data, vsid, video, maps)
            if au is None:
                return None
        # sure now: what the general parser would have done, in its order
        self.packs += packs
        self.system_headers += system_headers
        for entries in maps:
            self._apply_psm(entries)
        out: list[MediaFrame] = []
        for sid, start, end, pts in audio:
            self._audio(out, sid, data[start:end], pts)
        if au is not None:
            out.append(au)
            self.video_frames += 1
        return out

    def _whole_au(self, data: bytes, sid: int, video: list[tuple[int, int, int | None, int | None]],
                  maps: list[dict[int, int] | None]) -> MediaFrame | None:
        """The one access unit of a whole frame's video PES, or None if the general parser must
        decide (no start code, two AUs, too large, codec unknown or still to be sniffed)."""
        if len(video) == 1:
            start, end, pts, dts = video[0]
            es = data[start:end]
        else:
            es = b"".join([data[s:e] for s, e, _, _ in video])
        size = len(es)
        if size > self.max_frame:
            return None
        stype = self._psm.get(sid)
        for entries in maps:  # the frame's own PSM, as _parse_psm would apply it
            if entries is not None and sid in entries:
                stype = entries[sid]
                if stype not in VIDEO_STREAM_TYPES:
                    return None  # it drops the sniffed guess: the parser sniffs again
        codec = VIDEO_STREAM_TYPES[stype] if stype in VIDEO_STREAM_TYPES else self._guess.get(sid)
        if codec is not Codec.H264 and codec is not Codec.H265:
            return None
        nals = [m.start() for m in START_CODE.finditer(es)]
        if not nals:
            return None
        # AU boundaries exactly as _scan_es finds them (only NALs with 5 bytes after them)
        h265 = codec is Codec.H265
        seen_vcl = False
        first = True
        key: bool | None = None  # is_keyframe's answer, from the first VCL NAL
        for i in nals:
            if i + 5 >= size:
                break
            t, vcl, opener = nal_role(es, i, h265)
            if first:
                first = False
            elif opener and seen_vcl:
                return None  # a second access unit starts in this frame
            if vcl and not seen_vcl:
                seen_vcl = True
                key = t in H265_IRAP if h265 else t == H264_IDR
        if len(video) > 1:  # the PTS of the PES the AU's first NAL starts in (_take_mark)
            at = nals[0] if not first else 0
            off = 0
            pts = dts = None
            for s, e, pes_pts, pes_dts in video:
                if off > at:
                    break
                pts, dts = pes_pts, pes_dts
                off += e - s
        starts = tuple(nals)
        if key is None:  # no VCL NAL before the last 5 bytes: ask the general rule
            key = is_keyframe(codec, es, starts)
        return MediaFrame("video", codec, es, pts, dts, key, sid, starts)

    # -- parsing ---------------------------------------------------------------------------

    def _skip(self, n: int, reason: str) -> None:
        if n > 0:
            self.bytes_skipped += n
            self.errors[reason] += 1

    def _parse(self, out: list[MediaFrame], final: bool) -> None:
        buf = self._buf
        n = len(buf)
        p = 0
        wait_video = False
        while True:
            if self._unbounded is not None:
                m = _PS_CODE.search(buf, p)
                end = m.start() if m else (n if final else max(p, n - 3))
                self._unbounded_data(out, bytes(buf[p:end]))
                p = end
                if m or final:
                    self._close_unbounded(out)
                if not m:
                    break
                continue
            m = _PS_CODE.search(buf, p)
            if m is None:
                keep = max(p, n - 3)  # a start code may straddle the next chunk
                self._skip(keep - p, "garbage")
                p = keep
                break
            i = m.start()
            self._skip(i - p, "garbage")
            p = i
            sid = buf[i + 3]
            if sid == 0xBA:
                if n - i < 14:
                    break
                inner = buf.find(START, i + 4, i + 14)
                if inner >= 0:  # truncated pack header (Hikvision H.265, §6.6)
                    self._skip(inner - i, "truncated_pack")
                    p = inner
                    continue
                b4 = buf[i + 4]
                if b4 >> 6 == 1:  # MPEG-2: 14 bytes + stuffing, skipped by its length
                    size = 14 + (buf[i + 13] & 0x07)
                elif b4 >> 4 == 2:  # MPEG-1 pack header
                    size = 12
                else:
                    self._skip(1, "bad_pack")
                    p = i + 1
                    continue
                if n - i < size:
                    break
                self.packs += 1
                p = i + size
                continue
            if sid == 0xB9:  # program end code
                p = i + 4
                continue
            if n - i < 6:
                wait_video = 0xE0 <= sid <= 0xEF
                break
            length = _U16.unpack_from(buf, i + 4)[0]
            if 0xC0 <= sid <= 0xEF or (sid == 0xBD and sid in self._psm):
                r = self._pes(out, i, sid, length, final)
                if r < 0:
                    wait_video = 0xE0 <= sid <= 0xEF
                    break
                p = r
                continue
            pend = self._packet_end(i, i + 6, length, final, check=sid != 0xBD)
            if pend is None:
                break
            if sid == 0xBC:
                self._parse_psm(bytes(buf[i + 6:pend]))
            elif sid == 0xBB:
                self.system_headers += 1
            p = pend
        if p:
            del buf[:p]
        if final and not wait_video and self._unbounded is None:
            self._emit_au(out)

    def _packet_end(self, i: int, body: int, length: int, final: bool, *, check: bool) -> int | None:
        """End of the packet at i by its length, or None to wait for more bytes.

        A correct packet is followed by a start code (or the end of a frame). If it is not and
        `check` is set, a PS-level start code inside the claimed body means the length was
        corrupted: cut the packet there.
        """
        buf = self._buf
        n = len(buf)
        end = i + 6 + length
        if end + 3 <= n:
            if buf.startswith(START, end):
                return end
        elif end <= n:
            tail = bytes(buf[end:n])
            if START.startswith(tail):
                if final:
                    return end
                return None
        elif not final:
            return None
        if check:
            m = _PS_CODE.search(buf, body, min(end, n))
            if m:
                self.errors["length_overrun"] += 1
                return m.start()
        return end if end <= n else None

    def _pes(self, out: list[MediaFrame], i: int, sid: int, length: int, final: bool) -> int:
        """Handle one A/V PES at i; return the next position, or -1 to wait for bytes."""
        buf = self._buf
        n = len(buf)
        pts = dts = None
        if n - i < 9:
            return -1
        if buf[i + 6] & 0xC0 == 0x80:  # MPEG-2 PES header (§2.4.3.6)
            flags, hl = buf[i + 7], buf[i + 8]
            hdr_end = i + 9 + hl
            if n < hdr_end:
                return -1
            if flags & 0x80 and hl >= 5:
                pts = read_timestamp(buf, i + 9)
                dts = read_timestamp(buf, i + 14) if flags & 0x40 and hl >= 10 else pts
        else:  # MPEG-1 PES header: stuffing, STD buffer, then PTS/DTS (ISO/IEC 11172-1)
            q = i + 6
            while q < n and buf[q] == 0xFF and q < i + 6 + 16:
                q += 1
            if q + 1 > n:
                return -1
            if buf[q] & 0xC0 == 0x40:
                q += 2
            if q + 1 > n:
                return -1
            kind = buf[q] >> 4
            need = 5 if kind == 2 else 10 if kind == 3 else 1
            if q + need > n:
                return -1
            if kind in (2, 3):
                pts = read_timestamp(buf, q)
                dts = read_timestamp(buf, q + 5) if kind == 3 else pts
            elif buf[q] != 0x0F:
                self._skip(1, "bad_pes_header")
                return i + 1
            hdr_end = q + need
        if length and hdr_end > i + 6 + length:
            self._skip(1, "bad_pes_header")
            return i + 1
        video = 0xE0 <= sid <= 0xEF or (sid == 0xBD and self._psm.get(sid) in VIDEO_STREAM_TYPES)
        if length == 0:
            # Unbounded PES (allowed for video, §6.6): runs to the next PS start code.
            if not video:
                self.errors["audio_length_0"] += 1
            self._unbounded = sid
            self._un_video = video
            self._un_pts = pts
            if video:
                self._video_start(out, sid, pts, dts)
            return hdr_end
        end = self._packet_end(i, hdr_end, length, final, check=True)
        if end is None:
            return -1
        payload = bytes(buf[hdr_end:end]) if end > hdr_end else b""
        if video:
            self._video_start(out, sid, pts, dts)
            self._video_data(out, payload)
        elif payload:
            self._audio(out, sid, payload, pts)
        return end

    def _unbounded_data(self, out: list[MediaFrame], data: bytes) -> None:
        if not data:
            return
        if self._un_video:
            self._video_data(out, data)
        else:
            self._un_parts.append(data)

    def _close_unbounded(self, out: list[MediaFrame]) -> None:
        sid = self._unbounded
        self._unbounded = None
        if self._un_parts and sid is not None:
            self._audio(out, sid, b"".join(self._un_parts), self._un_pts)
        self._un_parts = []

    # -- PSM ---------------------------------------------------------------------------------

    def _parse_psm(self, body: bytes) -> None:
        """Program stream map (§2.5.4): CRC not checked, loops bounded by its length."""
        self._apply_psm(_psm_entries(body))

    def _apply_psm(self, entries: dict[int, int] | None) -> None:
        self.psms += 1
        if entries is None:
            self.errors["bad_psm"] += 1
            return
        for esid, stype in entries.items():
            self._psm[esid] = stype
            self._guess.pop(esid, None)

    # -- frames --------------------------------------------------------------------------------

    def _video_start(self, out: list[MediaFrame], sid: int, pts: int | None, dts: int | None) -> None:
        """A video PES header: remember where its payload starts and its timestamps.

        ISO/IEC 13818-1 §2.4.3.7: the PTS belongs to the first access unit that *starts* in
        this PES. GB senders align frames to PES, other muxers (ffmpeg's 2 KB packs) do not,
        so for H.264/H.265 AU boundaries come from the NAL units themselves (see _scan_es).
        """
        if self._es and (sid != self._au_sid or (pts is not None and self._nal_codec() is None)):
            self._emit_au(out)  # new stream id, or a codec without NAL rules: cut at the PES
        if not self._es:
            self._marks.clear()
            self._au_sid = sid
            self._au_pts = self._au_dts = None
            self._au_started = False
        self._marks.append((len(self._es), pts, dts))

    def _video_data(self, out: list[MediaFrame], data: bytes) -> None:
        if not data:
            return
        es = self._es
        if not es and not self._marks:  # continuation without a header (after an error)
            self._marks.append((0, None, None))
            self._au_sid = self._unbounded or 0xE0
        es += data
        if len(es) > self.max_frame:
            self.errors["frame_too_large"] += 1
            self.bytes_skipped += len(es)
            self._drop_au()
            return
        codec = self._nal_codec()
        if codec is not None:
            self._scan_es(out, codec)

    def _take_mark(self, at: int) -> tuple[int | None, int | None]:
        """Timestamps for an AU starting at es offset `at`: the last PES starting at or before
        it, if no earlier AU already used that PES's PTS."""
        marks = self._marks
        k = 0
        while k + 1 < len(marks) and marks[k + 1][0] <= at:
            k += 1
        if not marks or marks[k][0] > at:
            return None, None
        _, pts, dts = marks[k]
        marks[k] = (marks[k][0], None, None)  # used
        del marks[:k]
        return pts, dts

    def _scan_es(self, out: list[MediaFrame], codec: Codec) -> None:
        """Find AU starts (H.264 §7.4.1.2.3, H.265 §7.4.2.4.4) among the new NAL headers."""
        es = self._es
        h265 = codec == Codec.H265
        find = es.find
        self._scanned = True
        i = find(START, self._scan)
        last = self._scan
        while i >= 0 and i + 5 < len(es):
            _, vcl, opener = nal_role(es, i, h265)
            if not self._au_started:
                self._au_started = True
                self._au_pts, self._au_dts = self._take_mark(i)
            elif opener and self._seen_vcl:
                cut = i - 1 if es[i - 1] == 0 else i
                self._emit_au(out, cut)
                i -= cut
                self._au_started = True
                self._au_pts, self._au_dts = self._take_mark(i)
            self._nals.append(i)
            if vcl:
                self._seen_vcl = True
            last = i + 3
            i = find(START, last)
        self._scan = i if i >= 0 else max(last, len(es) - 2)

    def _nal_codec(self) -> Codec | None:
        codec = self._video_codec(self._au_sid, self._es) if self._es else None
        return codec if codec in (Codec.H264, Codec.H265) else None

    def _drop_au(self) -> None:
        self._es = bytearray()
        self._marks.clear()
        self._scan = 0
        self._nals = []
        self._scanned = False
        self._seen_vcl = False
        self._au_started = False

    def _video_codec(self, sid: int, au: bytes | bytearray) -> Codec:
        stype = self._psm.get(sid)
        if stype is not None and stype in VIDEO_STREAM_TYPES:
            return VIDEO_STREAM_TYPES[stype]
        codec = self._guess.get(sid)
        if codec is None:
            codec, strong = sniff_video_codec(bytes(au[:4096]))
            if strong:
                self._guess[sid] = codec
        return codec

    def _emit_au(self, out: list[MediaFrame], cut: int | None = None) -> None:
        """Emit es[:cut] (everything by default) as one access unit."""
        es = self._es
        if not es:
            return
        if not self._au_started:
            self._au_pts, self._au_dts = self._take_mark(0)
        nals: tuple[int, ...] | None = None
        if cut is None or cut >= len(es):
            if self._scanned:
                # plus the last few bytes the incremental scan left for more data
                nals = (*self._nals, *start_codes(es, self._scan))
            data = bytes(es)
            sid = self._au_sid
            self._drop_au()
        else:
            if self._scanned:
                nals = tuple(p for p in self._nals if p < cut)
                self._nals = [p - cut for p in self._nals if p >= cut]
            data = bytes(es[:cut])
            sid = self._au_sid
            del es[:cut]
            marks = self._marks
            prior = [m for m in marks if m[0] <= cut]  # the PES the next AU starts in
            self._marks = [(0, *prior[-1][1:])] if prior else [(0, None, None)]
            self._marks += [(off - cut, p, d) for off, p, d in marks if off > cut]
            self._scan = max(0, self._scan - cut)
            self._seen_vcl = False
        self._au_started = False
        if not data:
            return
        codec = self._video_codec(sid, data)
        if codec not in (Codec.H264, Codec.H265):
            nals = None
        out.append(MediaFrame("video", codec, data, self._au_pts, self._au_dts,
                              is_keyframe(codec, data, nals), sid, nals))
        self.video_frames += 1

    def _audio(self, out: list[MediaFrame], sid: int, payload: bytes, pts: int | None) -> None:
        stype = self._psm.get(sid)
        if _is_adts(payload):  # Dahua declares G.711 but sends ADTS AAC (§6.6)
            codec = Codec.AAC
        elif stype is not None:
            codec = AUDIO_STREAM_TYPES.get(stype, Codec.UNKNOWN)
            if codec == Codec.AAC:
                codec = Codec.UNKNOWN if not payload else Codec.AAC
        else:
            codec = Codec.G711A  # GB's usual audio; libmpeg would guess AAC (§6.5 step 5)
        out.append(MediaFrame("audio", codec, payload, pts, pts, True, sid))
        self.audio_frames += 1
