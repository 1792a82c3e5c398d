import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import split_access_units
from gateway.media.ps import PsDemuxer, read_timestamp
from gateway.media.psmux import PsMuxer

from .vectors import audio_frames, brute_start_codes, read, video_frames

H264 = video_frames(Codec.H264)
H265 = video_frames(Codec.H265)


def demux_whole(data: bytes) -> tuple[list[MediaFrame], PsDemuxer]:
    d = PsDemuxer()
    return d.feed(data) + d.flush(), d


def demux_bytes(data: bytes) -> list[MediaFrame]:
    d = PsDemuxer()
    out = [f for i in range(len(data)) for f in d.feed(data[i:i + 1])]
    return out + d.flush()


def test_read_timestamp_doc_example():
    # gb28181.md §6.5: PTS 7200 encodes as 21 00 01 38 41.
    assert read_timestamp(bytes.fromhex("2100013841"), 0) == 7200


def test_ours_h264_with_g711a_whole_and_bytewise():
    data = read("ps_ours_h264_g711a.ps")
    out, d = demux_whole(data)
    video = [f for f in out if f.kind == "video"]
    audio = [f for f in out if f.kind == "audio"]
    assert video == H264 and audio == audio_frames()
    assert [f.keyframe for f in video].count(True) == 3
    assert d.errors == {} and d.bytes_skipped == 0
    assert d.stream_types == {0xE0: 0x1B, 0xC0: 0x90}
    assert demux_bytes(data) == out


def test_frame_end_emits_each_frame_without_waiting():
    mux = PsMuxer(Codec.H264, max_pes_payload=700)
    d = PsDemuxer()
    for f in H264:
        assert d.feed(mux.mux(f), frame_end=True) == [f]


def test_frame_end_bytewise_equals_whole():
    mux = PsMuxer(Codec.H265, max_pes_payload=700)
    chunks = [mux.mux(f) for f in H265]
    d = PsDemuxer()
    got = []
    for c in chunks:
        for i in range(len(c)):
            got += d.feed(c[i:i + 1], frame_end=i == len(c) - 1)
    assert got == H265


def test_ours_h265():
    out, d = demux_whole(read("ps_ours_h265.ps"))
    assert out == H265 and d.errors == {}


@pytest.mark.parametrize("name,codec", [("ps_ffmpeg_h264.vob", Codec.H264), ("ps_ffmpeg_h264.mpg", Codec.H264),
                                        ("ps_ffmpeg_h265.vob", Codec.H265)])
def test_ffmpeg_program_streams(name, codec):
    """ffmpeg packs 2 KB PES across frame boundaries, adds padding packets, writes no PSM; MPEG-1
    (.mpg) uses MPEG-1 pack and PES headers. AUs must come out exact, PTS as ffprobe reports."""
    data = read(name)
    out, d = demux_whole(data)
    aus = split_access_units(codec, read("h264.es" if codec == Codec.H264 else "h265.es"))
    assert [f.data for f in out] == aus
    assert {f.codec for f in out} == {codec}
    assert [f.keyframe for f in out] == [k % 10 == 0 for k in range(25)]
    assert out[0].pts == 45000 and out[1].pts == 48600  # ffprobe -show_frames: 45000, 48600, N/A…
    assert d.errors == {} and d.bytes_skipped == 0
    assert demux_bytes(data) == out


@pytest.mark.parametrize("name", ["quirk_stuffing.ps", "quirk_private_bd.ps", "quirk_no_psm.ps",
                                  "quirk_pes_len0.ps", "quirk_truncated_pack.ps", "quirk_garbage.ps"])
def test_quirks_give_the_clean_frames(name):
    data = read(name)
    out, d = demux_whole(data)
    assert out == H264
    assert demux_bytes(data) == out
    if name == "quirk_truncated_pack.ps":
        assert d.errors["truncated_pack"] == 25
    elif name == "quirk_garbage.ps":
        assert d.bytes_skipped == 25 * 17 and d.errors["garbage"] == 25
    else:
        assert d.errors == {} and d.bytes_skipped == 0
    if name == "quirk_no_psm.ps":
        assert d.stream_types == {}


def test_h265_with_private_stream_type_is_sniffed():
    out, d = demux_whole(read("quirk_h265_private_type.ps"))
    assert out == H265
    assert d.stream_types[0xE0] == 0x06


def test_g711_declared_but_adts_sent_is_aac():
    out, _ = demux_whole(read("quirk_dahua_aac.ps"))
    audio = [f for f in out if f.kind == "audio"]
    assert [f.codec for f in audio] == [Codec.AAC]
    assert audio[0].data == read("aac.adts")
    assert [f.data for f in out if f.kind == "video"] == [f.data for f in H264[:5]]


def test_psm_with_overrunning_descriptors_is_bounded():
    # es_map_length claims 0x40 bytes, a descriptor claims 0x30: both overrun; CRC is garbage.
    psm = bytes.fromhex("000001bc0012a0ff000000401be00030" "90c00000" "deadbeef")
    d = PsDemuxer()
    assert d.feed(psm + b"\x00\x00\x01\xb9") == []
    assert d.stream_types == {0xE0: 0x1B}
    assert d.errors == {}


def test_corrupted_pes_length_is_cut_at_the_next_pack():
    mux = PsMuxer(Codec.H264)
    chunks = [bytearray(mux.mux(f)) for f in H264[:4]]
    i = chunks[1].find(b"\x00\x00\x01\xe0")
    chunks[1][i + 4:i + 6] = b"\xff\xf0"  # far past the frame
    out, d = demux_whole(b"".join(chunks))
    assert [f.data for f in out] == [f.data for f in H264[:4]]
    assert d.errors["length_overrun"] == 1


def _corrupt(data: bytes, draw) -> tuple[bytes, int]:
    stream = bytearray(data)
    start = draw(st.integers(0, len(stream) // 3))
    junk = draw(st.binary(min_size=1, max_size=200))
    mode = draw(st.sampled_from(["overwrite", "insert", "delete"]))
    if mode == "overwrite":
        stream[start:start + len(junk)] = junk
    elif mode == "insert":
        stream[start:start] = junk
    else:
        del stream[start:start + len(junk)]
    return bytes(stream), start + 2 * len(junk)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_corruption_never_raises_and_recovers_at_next_keyframe(data):
    clean = read("ps_ours_h264_g711a.ps")
    corrupted, damage_end = _corrupt(clean, data.draw)
    d = PsDemuxer()
    sizes = data.draw(st.lists(st.integers(1, 2000), min_size=1, max_size=20))
    out, pos, k = [], 0, 0
    while pos < len(corrupted):
        n = sizes[k % len(sizes)]
        out += d.feed(corrupted[pos:pos + n])
        pos, k = pos + n, k + 1
    out += d.flush()
    assert d.bytes_skipped + d.buffered <= d.bytes_in
    assert all(v > 0 for v in d.errors.values())
    assert d.errors.get("internal", 0) == 0
    # The last key frame (k=20) starts after the damage: from there on output is exact.
    key20 = _nth(clean, b"\x00\x00\x01\xbb", 3) - 14  # its pack header precedes the system header
    assert damage_end < key20
    video = [f for f in out if f.kind == "video"]
    idx = [i for i, f in enumerate(video) if f.keyframe and f.pts == H264[20].pts]
    assert idx, "did not recover at the key frame"
    assert video[idx[-1]:] == H264[20:]
    assert [f for f in out if f.kind == "audio"][-4:] == audio_frames()[-4:]
    _assert_nal_positions(out)


def _nth(data: bytes, needle: bytes, n: int) -> int:
    pos = -1
    for _ in range(n):
        pos = data.find(needle, pos + 1)
    return pos


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_pure_garbage_never_raises(junk):
    d = PsDemuxer()
    d.feed(b"\x00\x00\x01\xba" + junk)
    d.feed(b"\x00\x00\x01\xe0\x00\x00\x80\x80\x05" + junk, frame_end=True)
    d.flush()
    assert d.errors.get("internal", 0) == 0
    assert d.buffered == 0


def _assert_nal_positions(frames: list[MediaFrame]) -> None:
    """Every H.264/H.265 frame carries exactly the start codes a plain scan of it finds."""
    for f in frames:
        if f.kind == "video" and f.codec in (Codec.H264, Codec.H265):
            assert f.nals == brute_start_codes(f.data)


@pytest.mark.parametrize("name", ["ps_ours_h264_g711a.ps", "ps_ours_h265.ps", "ps_ffmpeg_h264.vob",
                                  "ps_ffmpeg_h264.mpg", "ps_ffmpeg_h265.vob", "quirk_stuffing.ps",
                                  "quirk_private_bd.ps", "quirk_no_psm.ps", "quirk_pes_len0.ps",
                                  "quirk_truncated_pack.ps", "quirk_garbage.ps", "quirk_h265_private_type.ps"])
def test_frames_carry_their_nalbrute_start_codes(name):
    """The demuxer hands the start codes it found to the FLV muxer (no second scan): they must
    be complete and exact whatever the chunking, including AUs cut inside one PES (ffmpeg)."""
    data = read(name)
    whole, _ = demux_whole(data)
    assert any(f.nals for f in whole if f.kind == "video")
    _assert_nal_positions(whole)
    _assert_nal_positions(demux_bytes(data))
