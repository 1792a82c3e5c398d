"""Regenerate the media test vectors (committed; tests never run this or ffmpeg).

    python tests/data/media/make_vectors.py      # from the repo root, needs ffmpeg (5.1 used)

ffmpeg-made (independent of our code):
  h264.es      testsrc 320x240 25 fps 1 s, libx264 -g 10 -bf 0 -crf 40 (25 AUs, IDR at 0/10/20)
  h265.es      same with libx265
  g711a.raw    1 s 440 Hz sine, 8 kHz A-law (25 × 320-byte frames)
  h264_high444_cqm_interlaced_330x250.es  one frame: High 4:4:4, JVT scaling lists, field coding,
               cropping (SPS parser check)
  h265_main10_330x250.es                  one frame: Main 10, conformance window
  aac.adts     0.2 s 440 Hz sine, 8 kHz mono AAC-LC in ADTS
  ps_ffmpeg_h264.vob / ps_ffmpeg_h264.mpg / ps_ffmpeg_h265.vob   `-c copy -f vob|mpeg`: MPEG-2 and
               MPEG-1 program streams with 2 KB packs, padding packets and PES not aligned to frames
  h264.avcc / h265.hvcc   the avcC/hvcC box payloads ffmpeg writes into MP4 for these streams
Made with our muxer (gateway.media.psmux), video PTS = 7200 + 3600·k:
  ps_ours_h264_g711a.ps   H.264 + G.711A (audio pack after each video frame), PES split at 1000 B
  ps_ours_h265.ps         H.265
  quirk_stuffing.ps       pack stuffing 6 bytes `FE FF 00 00 01 BB` (a fake start code)
  quirk_private_bd.ps     0xBD PES holding `00 00 00 01 00 00 01 BA` after each pack header
  quirk_no_psm.ps         no PSM at all (codec sniffed from NAL headers)
  quirk_pes_len0.ps       one video PES per frame with PES_packet_length 0
  quirk_truncated_pack.ps `00 00 01 BA` immediately followed by the real pack header
  quirk_garbage.ps        17 bytes of garbage (no 00 00 01) between every pack
  quirk_h265_private_type.ps  H.265 announced with stream_type 0x06 in the PSM
  quirk_dahua_aac.ps      PSM says G.711A (0x90) but the audio PES carry ADTS AAC
  rtp_h264_udp.pcap       ps_ours_h264_g711a.ps as RTP/UDP (PT 96, SSRC 0x06516E81, ≤1400 B, one
                          timestamp per frame, marker on the last), with packets 5/6 swapped,
                          packet 20 duplicated (LINKTYPE_RAW IPv4, 127.0.0.1:30000 → :10000)
  rtp_h264_tcp.rfc4571    the same packets in order, RFC 4571 framed, an RTCP RR after packet 10
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from gateway.media import rfc4571  # noqa: E402
from gateway.media.frames import Codec, MediaFrame  # noqa: E402
from gateway.media.nal import is_keyframe, split_access_units  # noqa: E402
from gateway.media.psmux import PsMuxer, pack_header, pes_packet  # noqa: E402
from gateway.media.rtp import packetize  # noqa: E402

SSRC = 0x06516E81
FF = ["ffmpeg", "-v", "error", "-y"]
SRC = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "1"]


def ffmpeg() -> None:
    x265 = ["-x265-params", "log-level=error"]
    subprocess.run([*FF, *SRC, "-c:v", "libx264", "-g", "10", "-bf", "0", "-crf", "40",
                    "-pix_fmt", "yuv420p", "-f", "h264", str(HERE / "h264.es")], check=True)
    subprocess.run([*FF, *SRC, "-c:v", "libx265", "-g", "10", "-bf", "0", "-crf", "40", *x265,
                    "-pix_fmt", "yuv420p", "-f", "hevc", str(HERE / "h265.es")], check=True)
    subprocess.run([*FF, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000", "-t", "1",
                    "-c:a", "pcm_alaw", "-f", "alaw", str(HERE / "g711a.raw")], check=True)
    subprocess.run([*FF, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000", "-t", "0.2",
                    "-c:a", "aac", "-ac", "1", "-f", "adts", str(HERE / "aac.adts")], check=True)
    odd = ["-f", "lavfi", "-i", "testsrc=size=330x250:rate=25", "-frames:v", "1"]
    subprocess.run([*FF, *odd, "-c:v", "libx264", "-profile:v", "high444", "-pix_fmt", "yuv444p",
                    "-x264-params", "cqm=jvt:interlaced=1:tff=1", "-crf", "51", "-f", "h264",
                    str(HERE / "h264_high444_cqm_interlaced_330x250.es")], check=True)
    subprocess.run([*FF, *odd, "-c:v", "libx265", *x265, "-crf", "51", "-pix_fmt", "yuv420p10le",
                    "-f", "hevc", str(HERE / "h265_main10_330x250.es")], check=True)
    for es, fmt, name in (("h264.es", "vob", "ps_ffmpeg_h264.vob"), ("h264.es", "mpeg", "ps_ffmpeg_h264.mpg"),
                          ("h265.es", "vob", "ps_ffmpeg_h265.vob")):
        subprocess.run([*FF, "-i", str(HERE / es), "-c", "copy", "-f", fmt, str(HERE / name)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        for es, box, out in (("h264.es", b"avcC", "h264.avcc"), ("h265.es", b"hvcC", "h265.hvcc")):
            mp4 = Path(tmp) / "x.mp4"
            subprocess.run([*FF, "-i", str(HERE / es), "-c", "copy", "-tag:v",
                            "avc1" if box == b"avcC" else "hvc1", str(mp4)], check=True)
            data = mp4.read_bytes()
            i = data.find(box)
            size = int.from_bytes(data[i - 4:i], "big")
            (HERE / out).write_bytes(data[i + 4:i - 4 + size])


def video_frames(codec: Codec, name: str) -> list[MediaFrame]:
    aus = split_access_units(codec, (HERE / name).read_bytes())
    return [MediaFrame("video", codec, au, 7200 + 3600 * k, 7200 + 3600 * k, is_keyframe(codec, au))
            for k, au in enumerate(aus)]


def audio_frames() -> list[MediaFrame]:
    raw = (HERE / "g711a.raw").read_bytes()
    return [MediaFrame("audio", Codec.G711A, raw[k * 320:(k + 1) * 320], 7200 + 3600 * k, 7200 + 3600 * k,
                       True, 0xC0) for k in range(25)]


def ours() -> list[bytes]:
    """Per-frame PS chunks of ps_ours_h264_g711a.ps (video frame + its audio)."""
    mux = PsMuxer(Codec.H264, Codec.G711A, max_pes_payload=1000)
    chunks = [mux.mux(v) + mux.mux(a) for v, a in zip(video_frames(Codec.H264, "h264.es"), audio_frames(),
                                                       strict=True)]
    (HERE / "ps_ours_h264_g711a.ps").write_bytes(b"".join(chunks))
    mux5 = PsMuxer(Codec.H265, max_pes_payload=1000)
    (HERE / "ps_ours_h265.ps").write_bytes(b"".join(mux5.mux(f) for f in video_frames(Codec.H265, "h265.es")))
    return chunks


def quirks() -> None:
    frames = video_frames(Codec.H264, "h264.es")
    mux = PsMuxer(Codec.H264)
    headers = mux._system_header() + mux._psm()
    stuffed, private, no_psm, len0, trunc, garbage = [], [], [], [], [], []
    rng = random.Random(4)
    junk_pool = bytes(b for b in range(1, 256)) * 2
    for f in frames:
        pack = pack_header(f.dts - 3600)
        key = headers if f.keyframe else b""
        pes = pes_packet(0xE0, f.data, f.pts, aligned=f.keyframe)
        stuffed.append(pack[:13] + b"\xfe" + b"\xfe\xff\x00\x00\x01\xbb" + key + pes)
        private.append(pack + pes_packet(0xBD, b"HIK\x00\x00\x00\x01\x00\x00\x01\xba\x07") + key + pes)
        no_psm.append(pack + (mux._system_header() if f.keyframe else b"") + pes)
        len0.append(pack + key + pes[:4] + b"\x00\x00" + pes[6:])
        trunc.append(b"\x00\x00\x01\xba" + pack + key + pes)
        garbage.append(bytes(rng.sample(junk_pool, 17)) + pack + key + pes)
    for name, parts in (("quirk_stuffing.ps", stuffed), ("quirk_private_bd.ps", private),
                        ("quirk_no_psm.ps", no_psm), ("quirk_pes_len0.ps", len0),
                        ("quirk_truncated_pack.ps", trunc), ("quirk_garbage.ps", garbage)):
        (HERE / name).write_bytes(b"".join(parts))
    # H.265 under a private stream type: the PSM entry 0x24 becomes 0x06 (CRC left stale, as Dahua).
    mux5 = PsMuxer(Codec.H265)
    ps5 = b"".join(mux5.mux(f) for f in video_frames(Codec.H265, "h265.es"))
    (HERE / "quirk_h265_private_type.ps").write_bytes(ps5.replace(b"\x24\xe0\x00\x00", b"\x06\xe0\x00\x00"))
    # Dahua: G.711 announced, AAC sent.
    adts = (HERE / "aac.adts").read_bytes()
    muxa = PsMuxer(Codec.H264, Codec.G711A)
    out = []
    for k, f in enumerate(frames[:5]):
        out.append(muxa.mux(f) + pack_header(f.pts) + pes_packet(0xC0, adts, f.pts) if k == 2 else muxa.mux(f))
    (HERE / "quirk_dahua_aac.ps").write_bytes(b"".join(out))


def rtp(chunks: list[bytes]) -> None:
    packets: list[bytes] = []
    seq = 0xFFF0  # wraps through 65535 → 0 inside the capture
    for k, chunk in enumerate(chunks):
        pk = packetize(chunk, ssrc=SSRC, timestamp=7200 + 3600 * k, first_sequence=seq)
        seq = (seq + len(pk)) & 0xFFFF
        packets += pk
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0x12345678)  # RTCP RR without report blocks
    (HERE / "rtp_h264_tcp.rfc4571").write_bytes(
        b"".join(rfc4571.frame(p) + (rfc4571.frame(rr) if i == 10 else b"") for i, p in enumerate(packets)))
    udp = list(packets)
    udp[5], udp[6] = udp[6], udp[5]
    udp.insert(21, udp[20])
    recs = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for i, p in enumerate(udp):
        ulen = 8 + len(p)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, i & 0xFFFF, 0, 64, 17, 0,
                         bytes((127, 0, 0, 1)), bytes((127, 0, 0, 1)))
        dgram = ip + struct.pack("!HHHH", 30000, 10000, ulen, 0) + p
        recs.append(struct.pack("<IIII", 1_700_000_000 + i // 50, (i % 50) * 20_000, len(dgram), len(dgram)))
        recs.append(dgram)
    (HERE / "rtp_h264_udp.pcap").write_bytes(b"".join(recs))


if __name__ == "__main__":
    ffmpeg()
    rtp(ours())
    quirks()
    for p in sorted(HERE.iterdir()):
        print(f"{p.stat().st_size:8d}  {p.name}")
