import json
import struct
import subprocess

import pytest

from gateway.media.errors import FlvError
from gateway.media.flv import FlvMuxer, amf0_metadata, flv_header, flv_tag
from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import parameter_sets, parse_sps_resolution

from .vectors import read, video_frames


def tags(data: bytes) -> list[tuple[int, int, bytes]]:
    """Parse an FLV byte string strictly; returns (type, timestamp, body) and checks every field."""
    assert data[:3] == b"FLV" and data[3] == 1 and data[5:9] == b"\x00\x00\x00\x09"
    assert data[9:13] == b"\x00\x00\x00\x00"  # PreviousTagSize0
    pos, out = 13, []
    while pos < len(data):
        ttype = data[pos]
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | (data[pos + 7] << 24)
        assert data[pos + 8:pos + 11] == b"\x00\x00\x00"  # StreamID
        body = data[pos + 11:pos + 11 + size]
        (prev,) = struct.unpack_from(">I", data, pos + 11 + size)
        assert prev == 11 + size
        out.append((ttype, ts, body))
        pos += 15 + size
    assert pos == len(data)
    return out


def write_flv(codec: Codec) -> tuple[bytes, list[MediaFrame]]:
    frames = video_frames(codec)
    mux = FlvMuxer(codec)
    w, h = parse_sps_resolution(codec, parameter_sets(codec, frames[0].data).sps)
    parts = [mux.header(), mux.metadata(w, h, 25)]
    for f in frames:
        parts.append(mux.video_tag(f, (f.dts - 7200) // 90))
    return b"".join(parts), frames


def test_header_and_previous_tag_size0():
    assert flv_header(True, False) == b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00"
    assert flv_header(True, True)[4] == 0x05 and flv_header(False, True)[4] == 0x04


def test_tag_fields_bit_by_bit_with_extended_timestamp():
    tag = flv_tag(9, 0x12345678, b"abc")
    assert tag == bytes.fromhex("09 000003 345678 12 000000") + b"abc" + struct.pack(">I", 14)


def test_avc_sequence_header_and_metadata():
    parsed = tags(write_flv(Codec.H264)[0])
    assert parsed[0][0] == 18 and b"onMetaData" in parsed[0][2]
    ttype, ts, body = parsed[1]
    assert (ttype, ts) == (9, 0)
    assert body[:5] == b"\x17\x00\x00\x00\x00" and body[5:] == read("h264.avcc")


def test_avc_tags_exact():
    data, frames = write_flv(Codec.H264)
    video = [t for t in tags(data) if t[0] == 9]
    assert len(video) == 26  # one sequence header (parameter sets never change) + 25 frames
    for (ttype, ts, body), f in zip(video[1:], frames, strict=True):
        assert ttype == 9 and ts == (f.dts - 7200) // 90
        assert body[0] == (0x17 if f.keyframe else 0x27)
        assert body[1] == 1  # AVC NALU
        assert body[2:5] == b"\x00\x00\x00"  # composition time 0 (no B frames)
        n = int.from_bytes(body[5:9], "big")
        assert body[9] & 0x1F in (1, 5, 6) and 9 + n <= len(body)


def test_composition_time_is_signed_24_bit():
    f = video_frames(Codec.H264)[1]
    mux = FlvMuxer(Codec.H264)
    plus = mux.video_tag(MediaFrame("video", Codec.H264, f.data, 7200 + 7200, 7200, False), 0)
    assert plus[11 + 2:11 + 5] == (80).to_bytes(3, "big")
    minus = mux.video_tag(MediaFrame("video", Codec.H264, f.data, 0, 90, False), 0)
    assert minus[11 + 2:11 + 5] == b"\xff\xff\xff"


def test_hevc_enhanced_tags():
    data, frames = write_flv(Codec.H265)
    video = [t for t in tags(data) if t[0] == 9]
    seq = video[0][2]
    assert seq[0] == 0x90 and seq[1:5] == b"hvc1" and seq[5:] == read("h265.hvcc")  # IsExHeader|key|SequenceStart
    for (_, _, body), f in zip(video[1:], frames, strict=True):
        assert body[0] == (0x80 | (0x10 if f.keyframe else 0x20) | 1)  # CodedFrames
        assert body[1:5] == b"hvc1" and body[5:8] == b"\x00\x00\x00"


def test_g711_and_aac_audio():
    mux = FlvMuxer(Codec.H264, Codec.G711A)
    tag = mux.audio_tag(MediaFrame("audio", Codec.G711A, b"\xd5" * 320, 0, 0, True), 40)
    assert tag[0] == 8 and tag[11] == 0x72 and tag[12:12 + 320] == b"\xd5" * 320
    assert FlvMuxer(None, Codec.G711U).audio_tag(MediaFrame("audio", Codec.G711U, b"\xff", 0, 0, True), 0)[11] == 0x82
    aac = FlvMuxer(Codec.H264, Codec.AAC)
    out = aac.audio_tag(MediaFrame("audio", Codec.AAC, read("aac.adts"), 0, 0, True), 1000)
    parsed = tags(flv_header(False, True) + out)
    assert parsed[0][2][:2] == b"\xaf\x00" and parsed[0][2][2:] == bytes.fromhex("1588")  # AAC-LC 8 kHz mono
    assert all(b[:2] == b"\xaf\x01" for _, _, b in parsed[1:]) and len(parsed) > 2
    assert [ts for _, ts, _ in parsed[1:3]] == [1000, 1128]  # 1024 samples at 8 kHz
    assert aac.sequence_headers() == flv_tag(8, 0, b"\xaf\x00\x15\x88")


def test_metadata_amf0():
    body = amf0_metadata({"width": 320, "stereo": False, "encoder": "gbgate"})
    assert body.startswith(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x03")
    assert b"\x00\x05width\x00" + struct.pack(">d", 320.0) in body
    assert b"\x00\x06stereo\x01\x00" in body and body.endswith(b"\x00\x00\x09")


def test_misuse_raises_flv_error():
    with pytest.raises(FlvError):
        FlvMuxer(Codec.AAC)
    with pytest.raises(FlvError):
        FlvMuxer(Codec.H265).sequence_header(b"\x42\x01", b"\x44\x01")
    with pytest.raises(FlvError):
        FlvMuxer(Codec.H264).video_tag(video_frames(Codec.H265)[0], 0)


def _ffprobe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["streams"][0]


@pytest.mark.interop
@pytest.mark.requires("ffprobe")
def test_ffprobe_reads_our_avc_flv(tmp_path):
    path = tmp_path / "h264.flv"
    path.write_bytes(write_flv(Codec.H264)[0])
    s = _ffprobe(path)
    assert (s["codec_name"], s["width"], s["height"], s["nb_read_frames"]) == ("h264", 320, 240, "25")


def _ffprobe_version() -> tuple[int, int]:
    out = subprocess.run(["ffprobe", "-version"], capture_output=True, text=True).stdout.split()
    try:
        major, minor = out[2].split(".")[:2]
        return int(major), int(minor.split("-")[0])
    except (IndexError, ValueError):
        return (0, 0)


@pytest.mark.interop
@pytest.mark.requires("ffprobe")
def test_ffprobe_reads_our_hevc_enhanced_flv(tmp_path):
    if _ffprobe_version() < (6, 1):
        pytest.skip(f"ffprobe {_ffprobe_version()} predates enhanced-FLV HEVC demuxing (FFmpeg 6.1); "
                    "test_pyav_reads_our_hevc_enhanced_flv covers it with PyAV's newer libavformat")
    path = tmp_path / "h265.flv"
    path.write_bytes(write_flv(Codec.H265)[0])
    s = _ffprobe(path)
    assert (s["codec_name"], s["width"], s["height"], s["nb_read_frames"]) == ("hevc", 320, 240, "25")


@pytest.mark.interop
def test_pyav_reads_our_hevc_enhanced_flv(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "h265.flv"
    path.write_bytes(write_flv(Codec.H265)[0])
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.width, stream.codec_context.height) == \
            ("hevc", 320, 240)
        assert sum(1 for _ in c.decode(video=0)) == 25
