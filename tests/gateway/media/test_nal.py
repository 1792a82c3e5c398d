import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.media.errors import NalError
from gateway.media.frames import Codec
from gateway.media.nal import (
    annexb_to_length_prefixed,
    avcc_record,
    hvcc_record,
    is_keyframe,
    nal_type,
    parameter_sets,
    parse_sps,
    parse_sps_resolution,
    sniff_video_codec,
    split_access_units,
    split_annexb,
    unescape_rbsp,
)
from tests.gateway.media.vectors import brute_start_codes

from .vectors import read


def test_split_annexb_three_and_four_bytebrute_start_codes():
    data = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x01\x65\xcc\xdd"
    assert [bytes(n) for n in split_annexb(data)] == [b"\x67\xaa", b"\x68\xbb", b"\x65\xcc\xdd"]
    assert split_annexb(b"no start code") == []


def test_access_units_and_keyframes_of_vectors():
    for codec, name in ((Codec.H264, "h264.es"), (Codec.H265, "h265.es")):
        es = read(name)
        aus = split_access_units(codec, es)
        assert len(aus) == 25 and b"".join(aus) == es
        assert [is_keyframe(codec, au) for au in aus] == [k % 10 == 0 for k in range(25)]
        assert sniff_video_codec(aus[0]) == (codec, True)
        assert sniff_video_codec(aus[1])[0] == codec


def test_parameter_sets_alone_do_not_make_a_keyframe():
    ps = parameter_sets(Codec.H264, read("h264.es"))
    p_frame = split_access_units(Codec.H264, read("h264.es"))[1]
    au = b"\x00\x00\x00\x01" + ps.sps + b"\x00\x00\x00\x01" + ps.pps + p_frame
    assert not is_keyframe(Codec.H264, au)


def test_nal_types():
    assert nal_type(Codec.H264, b"\x65") == 5
    assert nal_type(Codec.H265, b"\x26\x01") == 19
    assert nal_type(Codec.H265, b"\x40\x01") == 32


@pytest.mark.parametrize("codec,name,size", [
    (Codec.H264, "h264.es", (320, 240)),
    (Codec.H265, "h265.es", (320, 240)),
    (Codec.H264, "h264_high444_cqm_interlaced_330x250.es", (330, 250)),
    (Codec.H265, "h265_main10_330x250.es", (330, 250)),
])
def test_sps_resolution(codec, name, size):
    ps = parameter_sets(codec, read(name))
    assert parse_sps_resolution(codec, ps.sps) == size


def test_high_profile_details():
    info = parse_sps(Codec.H264, parameter_sets(Codec.H264, read("h264_high444_cqm_interlaced_330x250.es")).sps)
    assert (info.profile_idc, info.chroma_format_idc) == (244, 3)
    info5 = parse_sps(Codec.H265, parameter_sets(Codec.H265, read("h265_main10_330x250.es")).sps)
    assert (info5.profile_idc, info5.bit_depth_luma, info5.bit_depth_chroma) == (2, 10, 10)


def test_records_equal_ffmpeg_mp4_boxes():
    ps = parameter_sets(Codec.H264, read("h264.es"))
    assert avcc_record(ps.sps, ps.pps) == read("h264.avcc")
    ps5 = parameter_sets(Codec.H265, read("h265.es"))
    assert ps5.vps is not None
    assert hvcc_record(ps5.vps, ps5.sps, ps5.pps) == read("h265.hvcc")


def test_emulation_prevention_removed():
    assert unescape_rbsp(b"\x67\x00\x00\x03\x01\x00\x00\x03\x00\x00\x03") == b"\x67\x00\x00\x01\x00\x00\x00\x00"


def test_truncated_sps_raises_nal_error():
    sps = parameter_sets(Codec.H264, read("h264.es")).sps
    with pytest.raises(NalError):
        parse_sps(Codec.H264, sps[:5])
    with pytest.raises(NalError):
        parse_sps(Codec.H265, b"\x42\x01\x01")


@given(st.binary(max_size=64))
def test_sps_garbage_raises_only_nal_error(data):
    for codec in (Codec.H264, Codec.H265):
        try:
            parse_sps(codec, data)
        except NalError:
            pass


def test_length_prefixed_drops_aud_and_optionally_parameter_sets():
    au = (b"\x00\x00\x00\x01\x09\xf0" + b"\x00\x00\x00\x01\x67\x11"
          + b"\x00\x00\x01\x68\x22" + b"\x00\x00\x01\x65\x33\x44")
    assert annexb_to_length_prefixed(au) == struct.pack(">I", 2) + b"\x67\x11" + struct.pack(">I", 2) + \
        b"\x68\x22" + struct.pack(">I", 3) + b"\x65\x33\x44"
    assert annexb_to_length_prefixed(au, drop_parameter_sets=True) == struct.pack(">I", 3) + b"\x65\x33\x44"
    assert annexb_to_length_prefixed(au, drop_aud=False).startswith(struct.pack(">I", 2) + b"\x09\xf0")


_PIECES = st.lists(st.one_of(st.sampled_from([b"\x00\x00\x01", b"\x00\x00\x00\x01", b"\x00", b"\x09\xf0",
                                              b"\x67\x42", b"\x65\x88", b"\x41\x9a", b"\x40\x01", b"\x26\x01"]),
                             st.binary(max_size=12)), max_size=30)


@given(_PIECES, st.sampled_from([Codec.H264, Codec.H265]), st.booleans(), st.booleans())
def test_known_start_codes_give_what_a_scan_gives(pieces, codec, drop_aud, drop_ps):
    """The FLV path reuses the demuxer's start-code positions: same output as scanning."""
    au = b"".join(pieces)
    starts = brute_start_codes(au)
    assert annexb_to_length_prefixed(au, codec, drop_aud=drop_aud, drop_parameter_sets=drop_ps,
                                     starts=starts) == \
        annexb_to_length_prefixed(au, codec, drop_aud=drop_aud, drop_parameter_sets=drop_ps)
    assert is_keyframe(codec, au, starts) == is_keyframe(codec, au)
