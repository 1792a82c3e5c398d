"""Loading helpers for tests/data/media (the vectors are described in make_vectors.py)."""

from __future__ import annotations

import struct
from pathlib import Path

from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import is_keyframe, split_access_units

DATA = Path(__file__).resolve().parents[2] / "data" / "media"
SSRC = 0x06516E81


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def video_frames(codec: Codec, name: str | None = None) -> list[MediaFrame]:
    """The frames every PS vector of ours encodes: PTS = DTS = 7200 + 3600·k."""
    es = read(name or ("h264.es" if codec == Codec.H264 else "h265.es"))
    return [MediaFrame("video", codec, au, 7200 + 3600 * k, 7200 + 3600 * k, is_keyframe(codec, au))
            for k, au in enumerate(split_access_units(codec, es))]


def audio_frames() -> list[MediaFrame]:
    raw = read("g711a.raw")
    return [MediaFrame("audio", Codec.G711A, raw[k * 320:(k + 1) * 320], 7200 + 3600 * k,
                       7200 + 3600 * k, True, 0xC0) for k in range(25)]


def pcap_payloads(name: str) -> list[bytes]:
    """UDP payloads of a LINKTYPE_RAW (IPv4) pcap."""
    data = read(name)
    magic, _, _, _, _, _, link = struct.unpack_from("<IHHiIII", data)
    assert magic == 0xA1B2C3D4 and link == 101
    pos, out = 24, []
    while pos < len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, pos)
        pkt = data[pos + 16:pos + 16 + incl]
        ihl = (pkt[0] & 0x0F) * 4
        assert pkt[9] == 17
        out.append(pkt[ihl + 8:])
        pos += 16 + incl
    return out

# gb28181.md §6.5: PES for an IDR with PTS = 7200 carrying the first bytes of an SPS.
H264_FIRST_SPS_PES = bytes.fromhex("000001E000108480052100013841000000016764001F")[:14]


def brute_start_codes(data: bytes) -> tuple[int, ...]:
    """Every 00 00 01 in `data`, found by plain search: the oracle for the demuxer's positions."""
    out, i = [], data.find(b"\x00\x00\x01")
    while i >= 0:
        out.append(i)
        i = data.find(b"\x00\x00\x01", i + 3)
    return tuple(out)
