"""gateway.media.avcc: avcC/hvcC records and length-prefixed packets back to Annex-B."""

from __future__ import annotations

import pytest

from gateway.media.avcc import AnnexBConverter, config_record_nals, length_prefixed_to_annexb
from gateway.media.errors import NalError
from gateway.media.frames import Codec
from gateway.media.nal import annexb_to_length_prefixed, avcc_record, parameter_sets

# 640x360 High profile SPS/PPS as x264 writes them
SPS = bytes.fromhex("6764001eacd940a02ff9610000030001000003003c8f162d96")
PPS = bytes.fromhex("68ebe3cb22c0")
IDR = b"\x65\x88\x84\x00\x33\xff"
P = b"\x41\x9a\x21\x6c"
S = b"\x00\x00\x00\x01"


def test_avcc_round_trip_and_length_prefixed_packets() -> None:
    rec = avcc_record(SPS, PPS)
    assert config_record_nals(Codec.H264, rec) == (4, [SPS, PPS])
    annexb = S + IDR
    assert length_prefixed_to_annexb(annexb_to_length_prefixed(annexb)) == annexb


def test_converter_puts_parameter_sets_before_keyframes_from_mp4() -> None:
    conv = AnnexBConverter(Codec.H264, avcc_record(SPS, PPS))
    key = conv.convert(annexb_to_length_prefixed(S + IDR), keyframe=True)
    ps = parameter_sets(Codec.H264, key)
    assert ps.complete and ps.sps == SPS and key.endswith(S + IDR)
    assert conv.convert(annexb_to_length_prefixed(S + P), keyframe=False) == S + P


def test_converter_passes_annexb_with_inband_parameter_sets_untouched() -> None:
    conv = AnnexBConverter(Codec.H264, S + SPS + S + PPS)
    au = S + SPS + S + PPS + S + IDR
    assert conv.convert(au, keyframe=True) is au
    assert conv.convert(S + IDR, keyframe=True) == au   # the last in-band sets are reused


@pytest.mark.parametrize("bad", [b"\x00\x00\x00\x09\x65", b"\x00\x00", b"\x00\x00\x00\x00"])
def test_bad_lengths_raise_nal_error(bad: bytes) -> None:
    with pytest.raises(NalError):
        length_prefixed_to_annexb(bad)


@pytest.mark.parametrize("rec", [b"", b"\x01\x64\x00", b"\x02" * 10, avcc_record(SPS, PPS)[:-7]])
def test_bad_records_raise_nal_error(rec: bytes) -> None:
    with pytest.raises(NalError):
        config_record_nals(Codec.H264, rec)
