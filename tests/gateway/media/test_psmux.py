import pytest

from gateway.media.errors import PsError
from gateway.media.frames import Codec, MediaFrame
from gateway.media.ps import PsDemuxer
from gateway.media.psmux import PsMuxer, encode_timestamp, pack_header, pes_packet

from .vectors import H264_FIRST_SPS_PES, video_frames


def test_doc_examples_byte_exact():
    # gb28181.md §6.5 examples, produced there by an independent encoder.
    assert pack_header(3600) == bytes.fromhex("000001BA440004708401005F6BF8")
    mux = PsMuxer(Codec.H264, Codec.G711A)
    assert mux._system_header() == bytes.fromhex("000001BB000C802FB504E17FE0E400C0C020")
    assert mux._psm() == bytes.fromhex("000001BC0012A0FF000000081BE0000090C000004BFCC750")
    assert encode_timestamp(0b0010, 7200) == bytes.fromhex("2100013841")
    assert pes_packet(0xE0, bytes.fromhex("000000016764001F"), 7200, aligned=True)[:14] == H264_FIRST_SPS_PES


def test_keyframe_carries_system_header_and_psm_others_do_not():
    frames = video_frames(Codec.H264)
    mux = PsMuxer(Codec.H264)
    key, inter = mux.mux(frames[0]), mux.mux(frames[1])
    assert key.startswith(b"\x00\x00\x01\xba") and inter.startswith(b"\x00\x00\x01\xba")
    assert b"\x00\x00\x01\xbb" in key[:40] and b"\x00\x00\x01\xbc" in key[:80]
    assert b"\x00\x00\x01\xbb" not in inter and b"\x00\x00\x01\xbc" not in inter


def test_large_frame_split_into_pes_of_at_most_65_kb_only_first_has_pts():
    big = b"\x00\x00\x00\x01\x65" + bytes(range(1, 256)) * 800  # 204 KB IDR slice
    frame = MediaFrame("video", Codec.H264, big, 90000, 86400, True)
    ps = PsMuxer(Codec.H264).mux(frame)
    starts = [i for i in range(len(ps) - 3) if ps[i:i + 4] == b"\x00\x00\x01\xe0"]
    assert len(starts) == 4
    lengths = [int.from_bytes(ps[i + 4:i + 6], "big") for i in starts]
    assert all(n <= 0xFFFF for n in lengths)
    assert ps[starts[0] + 7] == 0xC0 and all(ps[i + 7] == 0 for i in starts[1:])
    d = PsDemuxer()
    assert d.feed(ps, frame_end=True) == [frame]


def test_round_trip_with_audio_and_b_frame_timestamps():
    frames = video_frames(Codec.H265)
    frames = [MediaFrame(f.kind, f.codec, f.data, f.pts + 3600, f.dts, f.keyframe) for f in frames]
    audio = MediaFrame("audio", Codec.G711U, bytes(range(160)), 7200, 7200, True, 0xC0)
    mux = PsMuxer(Codec.H265, Codec.G711U, max_pes_payload=333)
    d = PsDemuxer()
    for f in frames:
        # Audio leaves as soon as its PES is complete, ahead of the still-open video AU.
        assert d.feed(mux.mux(f) + mux.mux(audio), frame_end=True) == [audio, f]


def test_aud_insertion():
    f = video_frames(Codec.H264)[1]
    ps = PsMuxer(Codec.H264, insert_aud=True).mux(f)
    (back,) = PsDemuxer().feed(ps, frame_end=True)
    assert back.data == b"\x00\x00\x00\x01\x09\xf0" + f.data


@pytest.mark.parametrize("kwargs,frame", [
    ({"video_codec": Codec.AAC}, None),
    ({"video_codec": Codec.H264, "audio_codec": Codec.UNKNOWN}, None),
    ({"video_codec": Codec.H264}, MediaFrame("video", Codec.H265, b"", 0, 0, False)),
    ({"video_codec": Codec.H264}, MediaFrame("audio", Codec.G711A, b"", 0, 0, True)),
    ({"video_codec": Codec.H264}, MediaFrame("video", Codec.H264, b"", None, None, False)),
])
def test_misuse_raises_ps_error(kwargs, frame):
    with pytest.raises(PsError):
        PsMuxer(**kwargs).mux(frame)
