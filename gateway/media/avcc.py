"""Container packets → the hub's Annex-B access units (sans-IO), for pulled sources.

MP4, FLV/RTMP and Matroska carry H.264/H.265 as length-prefixed NAL units with the parameter sets
in a decoder configuration record (avcC, ISO/IEC 14496-15 §5.3.3.1; hvcC, §8.3.3.1); RTSP/RTP
and MPEG-TS carry Annex-B with the parameter sets in-band or in SDP (sprop-parameter-sets, which
FFmpeg hands over as Annex-B extradata). The hub wants Annex-B, and a keyframe that carries its
parameter sets (late joiners, FLV sequence header): `AnnexBConverter` does both, copying nothing
when the packet is already Annex-B with its parameter sets.
"""

from __future__ import annotations

from gateway.media.errors import NalError
from gateway.media.frames import Codec
from gateway.media.nal import parameter_sets

START = b"\x00\x00\x00\x01"


def is_annexb(data: bytes) -> bool:
    return data.startswith(b"\x00\x00\x01") or data.startswith(START)


def config_record_nals(codec: Codec, record: bytes) -> tuple[int, list[bytes]]:
    """(NAL length size, parameter set NAL units) of an avcC/hvcC record."""
    try:
        if codec is Codec.H265:
            if len(record) < 23 or record[0] != 1:
                raise NalError("not an hvcC record")
            size = (record[21] & 3) + 1
            pos, nals = 23, []
            for _ in range(record[22]):
                count = int.from_bytes(record[pos + 1:pos + 3], "big")
                pos += 3
                for _ in range(count):
                    n = int.from_bytes(record[pos:pos + 2], "big")
                    nals.append(record[pos + 2:pos + 2 + n])
                    pos += 2 + n
            if pos > len(record):
                raise NalError("truncated configuration record")
            return size, nals
        if len(record) < 7 or record[0] != 1:
            raise NalError("not an avcC record")
        size = (record[4] & 3) + 1
        pos, nals = 6, []
        for i in range(2):  # SPS list, then the PPS list with its own count byte
            if i:
                pos += 1
            for _ in range(record[5] & 0x1F if i == 0 else record[pos - 1]):
                n = int.from_bytes(record[pos:pos + 2], "big")
                nals.append(record[pos + 2:pos + 2 + n])
                pos += 2 + n
        if not nals or any(len(n) == 0 for n in nals) or pos > len(record):
            raise NalError("truncated configuration record")
        return size, nals
    except IndexError as exc:
        raise NalError("truncated configuration record") from exc


def length_prefixed_to_annexb(data: bytes, size: int = 4) -> bytes:
    """Length-prefixed NAL units → Annex-B (4-byte start codes); NalError on a bad length."""
    parts: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + size > end:
            raise NalError("truncated NAL length")
        n = int.from_bytes(data[pos:pos + size], "big")
        pos += size
        if n == 0 or pos + n > end:
            raise NalError(f"NAL length {n} overruns the packet")
        parts.append(START)
        parts.append(data[pos:pos + n])
        pos += n
    return b"".join(parts)


class AnnexBConverter:
    """One stream's packets → Annex-B access units, parameter sets put in front of keyframes."""

    __slots__ = ("codec", "length_size", "param_sets")

    def __init__(self, codec: Codec, extradata: bytes | None) -> None:
        self.codec = codec
        self.length_size = 0          # 0: packets are Annex-B
        self.param_sets = b""         # Annex-B VPS/SPS/PPS from the extradata
        if extradata:
            if is_annexb(extradata):
                self.param_sets = extradata
            else:
                self.length_size, nals = config_record_nals(codec, extradata)
                self.param_sets = b"".join(START + n for n in nals)

    def convert(self, data: bytes, keyframe: bool) -> bytes:
        if self.length_size and not is_annexb(data):
            data = length_prefixed_to_annexb(data, self.length_size)
        if keyframe:
            ps = parameter_sets(self.codec, data)
            if ps.complete:
                self.param_sets = b"".join(START + p for p in (ps.vps, ps.sps, ps.pps) if p is not None)
            elif self.param_sets:
                data = self.param_sets + data
        return data
