"""gateway.media.adts: raw AAC + AudioSpecificConfig → ADTS that the FLV muxer's parser reads back."""

from __future__ import annotations

import pytest

from gateway.media.adts import AdtsWrapper
from gateway.media.errors import MediaError
from gateway.media.flv import adts_frames


@pytest.mark.parametrize("asc", [bytes((0x12, 0x10)), bytes((0x15, 0x88)), bytes((0x11, 0x90))])
def test_wrapped_frames_parse_back_with_the_same_config(asc: bytes) -> None:
    w = AdtsWrapper(asc)
    raws = [b"\x21\x00" * 50, b"\x01" * 7, b"\x02" * 1500]
    out = b"".join(w.wrap(r) for r in raws)
    got_asc, frames = adts_frames(out)
    assert got_asc == asc and frames == raws


def test_adts_input_passes_and_raw_input_needs_a_config() -> None:
    adts = AdtsWrapper(bytes((0x12, 0x10))).wrap(b"\x21" * 30)
    assert AdtsWrapper(None).wrap(adts) is adts and AdtsWrapper(bytes((0x15, 0x88))).wrap(adts) is adts
    with pytest.raises(MediaError):
        AdtsWrapper(None).wrap(b"\x21" * 30)


@pytest.mark.parametrize("asc", [b"\x12", bytes((0x2A, 0x10)), bytes((0x17, 0x90))])
def test_configs_adts_cannot_express_are_refused(asc: bytes) -> None:
    with pytest.raises(MediaError):
        AdtsWrapper(asc)
