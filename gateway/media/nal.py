"""H.264 / H.265 NAL unit helpers (ITU-T H.264 §7.3, H.265 §7.3; ISO/IEC 14496-15 records).

Annex-B splitting finds start codes with one compiled pattern (`START_CODE`: about twice as fast
as a `bytes.find` loop on slice data, and one C call for the whole unit) and stops at the first
slice where a decision (key frame, codec sniffing) needs only the leading NAL units. SPS parsing reads
exp-Golomb codes from the RBSP (emulation prevention removed) held as one Python int.
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gateway.media.errors import NalError
from gateway.media.frames import Codec

START = b"\x00\x00\x01"
START_CODE = re.compile(re.escape(START))  # finditer: non-overlapping, as a find(START, i + 3) loop
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")

# H.264 Table 7-1
H264_SLICE, H264_IDR, H264_SEI, H264_SPS, H264_PPS, H264_AUD = 1, 5, 6, 7, 8, 9
# H.265 Table 7-1
H265_IRAP = range(16, 22)  # BLA_W_LP .. CRA_NUT
H265_VPS, H265_SPS, H265_PPS, H265_AUD = 32, 33, 34, 35
H265_SEI_PREFIX, H265_SEI_SUFFIX = 39, 40
_H264_HIGH = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))
_H265_STRONG = frozenset((0x40, 0x42, 0x44, 0x46, 0x4E, 0x50))


def _iter_start_codes(buf: bytes | bytearray, pos: int = 0) -> Iterator[int]:
    """Positions of the 00 00 01 start codes in `buf` from `pos`, found lazily."""
    find = buf.find
    i = find(START, pos)
    while i >= 0:
        yield i
        i = find(START, i + 3)


def start_codes(buf: bytes | bytearray, pos: int = 0) -> list[int]:
    """Positions of every 00 00 01 start code in `buf` from `pos` (one regex scan)."""
    return [m.start() for m in START_CODE.finditer(buf, pos)]


def _nal_offsets(data: bytes | memoryview, starts: Sequence[int] | None = None) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of each NAL payload; end excludes trailing zero bytes. `starts`: the
    start codes' positions when the caller already found them (no scan)."""
    buf = data if isinstance(data, bytes) else bytes(data)
    if starts is None:
        starts = start_codes(buf)
    last = len(starts) - 1
    for k, i in enumerate(starts):
        start = i + 3
        end = len(buf) if k == last else starts[k + 1]
        while end > start and buf[end - 1] == 0:  # 4-byte start code / trailing_zero_8bits
            end -= 1
        if end > start:
            yield start, end


def split_annexb(data: bytes | memoryview) -> list[memoryview]:
    """NAL units of an Annex-B byte stream, without start codes (zero-copy views)."""
    view = memoryview(data)
    return [view[s:e] for s, e in _nal_offsets(data)]


def nal_type(codec: Codec, nal: bytes | memoryview) -> int:
    """NAL unit type from the first header octet."""
    b0 = nal[0]
    return (b0 >> 1) & 0x3F if codec == Codec.H265 else b0 & 0x1F


def _first_nal_bytes(data: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """Yield (byte0, byte1) of each NAL header, cheaply (no slicing)."""
    buf = data if isinstance(data, bytes) else bytes(data)
    n = len(buf)
    for i in _iter_start_codes(buf):
        if i + 3 >= n:
            return
        yield buf[i + 3], buf[i + 4] if i + 4 < n else 0


def is_keyframe(codec: Codec, au: bytes | memoryview, starts: Sequence[int] | None = None) -> bool:
    """True if the access unit holds an IDR (H.264) / IRAP (H.265) slice.

    Parameter sets alone do not make a key frame (small vendors repeat SPS/PPS before P
    frames, gb28181.md §6.6). Scanning stops at the first slice. `starts`: the positions of
    the AU's start codes, when known (the demuxer's hot path).
    """
    if codec not in (Codec.H264, Codec.H265):
        return False
    buf = au if isinstance(au, bytes) else bytes(au)
    n = len(buf)
    h265 = codec == Codec.H265
    for i in starts if starts is not None else _iter_start_codes(buf):
        if i + 3 >= n:
            break
        b0 = buf[i + 3]
        if h265:
            t = (b0 >> 1) & 0x3F
            if t < 32:
                return t in H265_IRAP
        else:
            t = b0 & 0x1F
            if 1 <= t <= 5:
                return t == H264_IDR
    return False


def sniff_video_codec(au: bytes | memoryview) -> tuple[Codec, bool]:
    """Guess H.264 vs H.265 from NAL headers when the PSM is missing or private (§6.6).

    Returns (codec, strong): strong when a parameter set / AUD / IDR identified it.
    """
    h264 = h265 = 0
    for k, (b0, b1) in enumerate(_first_nal_bytes(au)):
        if b0 & 0x80:
            continue
        if b0 in _H265_STRONG and b1 == 0x01:
            h265 += 2
        elif b0 & 0x1F in (H264_IDR, H264_SPS, H264_PPS, H264_AUD):
            h264 += 2
        elif b1 == 0x01 and (b0 >> 1) & 0x3F in (0, 1, 19, 20, 21):
            h265 += 1
        elif b0 & 0x1F == H264_SLICE:
            h264 += 1
        if k >= 16 or max(h264, h265) >= 4:
            break
    if h264 == h265:
        return Codec.UNKNOWN, False
    codec = Codec.H264 if h264 > h265 else Codec.H265
    return codec, max(h264, h265) >= 2


@dataclass(slots=True, frozen=True)
class ParameterSets:
    """First VPS/SPS/PPS found in an access unit (VPS only for H.265)."""

    vps: bytes | None
    sps: bytes | None
    pps: bytes | None

    @property
    def complete(self) -> bool:
        return self.sps is not None and self.pps is not None


def parameter_sets(codec: Codec, au: bytes | memoryview, starts: Sequence[int] | None = None) -> ParameterSets:
    """Extract the parameter sets an access unit carries (stops at the first slice). `starts`:
    the AU's start code positions when known (MediaFrame.nals), so the AU is not scanned again."""
    buf = au if isinstance(au, bytes) else bytes(au)
    found: dict[int, bytes] = {}
    h265 = codec == Codec.H265
    wanted = (H265_VPS, H265_SPS, H265_PPS) if h265 else (0, H264_SPS, H264_PPS)
    for s, e in _nal_offsets(buf, starts):
        t = nal_type(codec, buf[s:s + 1])
        if (t < 32) if h265 else (1 <= t <= 5):
            break
        if t in wanted and t not in found:
            found[t] = buf[s:e]
    return ParameterSets(found.get(wanted[0]) if codec == Codec.H265 else None,
                         found.get(wanted[1]), found.get(wanted[2]))


def annexb_to_length_prefixed(au: bytes | memoryview, codec: Codec = Codec.H264, *,
                              drop_aud: bool = True, drop_parameter_sets: bool = False,
                              starts: Sequence[int] | None = None) -> bytes:
    """Annex-B → 4-byte length-prefixed NAL units (ISO/IEC 14496-15 §5.3.2, FLV/MP4).

    `starts`: every start code's position in `au`, when the caller already found them."""
    buf = au if isinstance(au, bytes) else bytes(au)
    parts, _ = length_prefixed_parts(buf, codec, drop_aud=drop_aud, drop_parameter_sets=drop_parameter_sets,
                                     starts=starts)
    return b"".join(parts)


def length_prefixed_parts(buf: bytes, codec: Codec = Codec.H264, *, drop_aud: bool = True,
                          drop_parameter_sets: bool = False, starts: Sequence[int] | None = None,
                          ) -> tuple[list[bytes | memoryview], int]:
    """`annexb_to_length_prefixed` as pieces to join (4-byte lengths and views of `buf`, nothing
    copied) and their total size, so a container can put its header and trailer in the same join."""
    aud, psets = (H265_AUD, (H265_VPS, H265_SPS, H265_PPS)) if codec == Codec.H265 \
        else (H264_AUD, (H264_SPS, H264_PPS))
    if starts is None:
        starts = start_codes(buf)
    parts: list[bytes | memoryview] = []
    size = 0
    pack = _U32.pack
    h265 = codec == Codec.H265
    view = memoryview(buf)
    n = len(buf)
    last = len(starts) - 1
    for k, i in enumerate(starts):
        s = i + 3
        e = n if k == last else starts[k + 1]
        while e > s and buf[e - 1] == 0:  # 4-byte start code / trailing_zero_8bits
            e -= 1
        if e <= s:
            continue
        t = (buf[s] >> 1) & 0x3F if h265 else buf[s] & 0x1F
        if (drop_aud and t == aud) or (drop_parameter_sets and t in psets):
            continue
        parts.append(pack(e - s))
        parts.append(view[s:e])
        size += 4 + e - s
    return parts, size


def unescape_rbsp(nal: bytes | memoryview) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 → 00 00; H.264 §7.4.1)."""
    return bytes(nal).replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    """MSB-first bit reader with exp-Golomb, over an RBSP held as one int."""

    __slots__ = ("left", "value")

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = 8 * len(data)

    def u(self, n: int) -> int:
        if n > self.left:
            raise NalError("SPS ends early")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)

    def ue(self) -> int:
        rest = self.value & ((1 << self.left) - 1)
        zeros = self.left - rest.bit_length()
        if zeros > 31 or rest == 0:
            raise NalError("bad exp-Golomb code")
        self.u(zeros)
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


@dataclass(slots=True, frozen=True)
class SpsInfo:
    """What the FLV/MP4 records and the hub need from an SPS."""

    width: int
    height: int
    profile_idc: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    ptl: bytes = b""  # H.265 general profile_tier_level (12 bytes)
    max_sub_layers: int = 1
    temporal_id_nesting: bool = False


def _skip_scaling_list(r: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + r.se() + 256) % 256
        last = nxt or last


def _parse_h264_sps(rbsp: bytes) -> SpsInfo:
    r = _Bits(rbsp)
    r.u(8)  # NAL header
    profile, _constraints, level = r.u(8), r.u(8), r.u(8)
    r.ue()  # seq_parameter_set_id
    chroma, separate, bd_l, bd_c = 1, 0, 8, 8
    if profile in _H264_HIGH:
        chroma = r.ue()
        if chroma == 3:
            separate = r.u(1)
        bd_l, bd_c = r.ue() + 8, r.ue() + 8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if r.u(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.u(1)
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    w_mbs, h_units = r.ue() + 1, r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    width, height = w_mbs * 16, (2 - frame_mbs_only) * h_units * 16
    if r.u(1):  # frame_cropping_flag (§7.4.2.1.1, CropUnitX/Y)
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        array_type = 0 if separate else chroma
        if array_type == 0:
            cx, cy = 1, 2 - frame_mbs_only
        else:
            cx = 2 if chroma in (1, 2) else 1
            cy = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
        width -= cx * (left + right)
        height -= cy * (top + bottom)
    return SpsInfo(width, height, profile, level, chroma, bd_l, bd_c)


def _parse_h265_sps(rbsp: bytes) -> SpsInfo:
    r = _Bits(rbsp)
    r.u(16)  # NAL header
    r.u(4)  # sps_video_parameter_set_id
    max_sub_layers = r.u(3) + 1
    nesting = bool(r.u(1))
    if len(rbsp) < 15:
        raise NalError("SPS ends early")
    ptl = rbsp[3:15]
    r.u(96)  # general profile_tier_level (§7.3.3)
    sub = max_sub_layers - 1
    flags = [(r.u(1), r.u(1)) for _ in range(sub)]
    if sub:
        r.u(2 * (8 - sub))
    for profile_present, level_present in flags:
        r.u(88 * profile_present + 8 * level_present)
    r.ue()  # sps_seq_parameter_set_id
    chroma = r.ue()
    if chroma == 3:
        r.u(1)
    width, height = r.ue(), r.ue()
    if r.u(1):  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sw = 2 if chroma in (1, 2) else 1
        sh = 2 if chroma == 1 else 1
        width -= sw * (left + right)
        height -= sh * (top + bottom)
    bd_l, bd_c = r.ue() + 8, r.ue() + 8
    return SpsInfo(width, height, ptl[0] & 0x1F, ptl[11], chroma, bd_l, bd_c, ptl, max_sub_layers, nesting)


def parse_sps(codec: Codec, sps: bytes | memoryview) -> SpsInfo:
    """Parse an SPS NAL unit (header included, no start code). Raises NalError."""
    rbsp = unescape_rbsp(sps)
    if codec == Codec.H264:
        return _parse_h264_sps(rbsp)
    if codec == Codec.H265:
        return _parse_h265_sps(rbsp)
    raise NalError(f"no SPS for codec {codec}")


def parse_sps_resolution(codec: Codec, sps: bytes | memoryview) -> tuple[int, int]:
    """(width, height) in luma samples after cropping. Raises NalError."""
    info = parse_sps(codec, sps)
    return info.width, info.height


def _as_list(x: bytes | Sequence[bytes]) -> list[bytes]:
    return [bytes(x)] if isinstance(x, bytes | bytearray | memoryview) else [bytes(i) for i in x]


def avcc_record(sps: bytes | Sequence[bytes], pps: bytes | Sequence[bytes]) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1), 4-byte NAL lengths."""
    spss, ppss = _as_list(sps), _as_list(pps)
    if not spss or not ppss or len(spss[0]) < 4:
        raise NalError("avcC needs at least one SPS and one PPS")
    first = spss[0]
    out = [bytes((1, first[1], first[2], first[3], 0xFF, 0xE0 | len(spss)))]
    for s in spss:
        out += [_U16.pack(len(s)), s]
    out.append(bytes((len(ppss),)))
    for p in ppss:
        out += [_U16.pack(len(p)), p]
    if first[1] in (100, 110, 122, 244):
        info = parse_sps(Codec.H264, first)
        out.append(bytes((0xFC | info.chroma_format_idc, 0xF8 | (info.bit_depth_luma - 8),
                          0xF8 | (info.bit_depth_chroma - 8), 0)))
    return b"".join(out)


def hvcc_record(vps: bytes | Sequence[bytes], sps: bytes | Sequence[bytes],
                pps: bytes | Sequence[bytes]) -> bytes:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1), 4-byte NAL lengths."""
    vpss, spss, ppss = _as_list(vps), _as_list(sps), _as_list(pps)
    if not (vpss and spss and ppss):
        raise NalError("hvcC needs VPS, SPS and PPS")
    info = parse_sps(Codec.H265, spss[0])
    out = [bytes((1,)), info.ptl[:11], bytes((info.ptl[11],)),
           bytes((0xF0, 0x00, 0xFC, 0xFC | info.chroma_format_idc,
                  0xF8 | (info.bit_depth_luma - 8), 0xF8 | (info.bit_depth_chroma - 8), 0, 0,
                  (info.max_sub_layers << 3) | (int(info.temporal_id_nesting) << 2) | 3, 3))]
    for t, nals in ((H265_VPS, vpss), (H265_SPS, spss), (H265_PPS, ppss)):
        out += [bytes((0x80 | t,)), _U16.pack(len(nals))]
        for n in nals:
            out += [_U16.pack(len(n)), n]
    return b"".join(out)


def split_access_units(codec: Codec, data: bytes) -> list[bytes]:
    """Cut an Annex-B elementary stream into access units (H.264 §7.4.1.2.3, H.265 §7.4.2.4.4).

    A new AU starts at an AUD, or at a parameter set / SEI / first slice of a picture that
    follows a slice (first_mb_in_slice == 0 / first_slice_segment_in_pic_flag). For files and
    the camera simulator; the live path gets AUs from PES boundaries.
    """
    h265 = codec == Codec.H265
    cuts: list[int] = []
    seen_vcl = False
    find = data.find
    i = find(START)
    while i >= 0 and i + 4 < len(data):
        start = i - 1 if i > 0 and data[i - 1] == 0 else i
        b0 = data[i + 3]
        if h265:
            t = (b0 >> 1) & 0x3F
            vcl = t < 32
            first = vcl and i + 5 < len(data) and bool(data[i + 5] & 0x80)
            opens = t in (H265_AUD, H265_VPS, H265_SPS, H265_PPS, H265_SEI_PREFIX) or 41 <= t <= 44
        else:
            t = b0 & 0x1F
            vcl = 1 <= t <= 5
            first = vcl and bool(data[i + 4] & 0x80)
            opens = t in (H264_AUD, H264_SPS, H264_PPS, H264_SEI) or 14 <= t <= 18
        if not cuts or (t == (H265_AUD if h265 else H264_AUD)) or (seen_vcl and (opens or first)):
            cuts.append(0 if not cuts else start)
            seen_vcl = False
        if vcl:
            seen_vcl = True
        i = find(START, i + 3)
    cuts.append(len(data))
    return [data[a:b] for a, b in itertools.pairwise(cuts) if b > a]
