"""PsDemuxer's whole-frame fast path gives exactly what the general parser gives.

Every test feeds the same chunks to a demuxer as it is and to one whose fast path is switched off
(`whole_frames=False`, so every byte goes through `_parse`), then compares each feed's
frames field by field (stream ID and NAL positions included, which MediaFrame's == ignores) and
every counter. Inputs: our muxer's frames (one or two per RTP frame, audio, small PES, AUDs, the
PSM on key frames or never), the same cut, garbled or with garbage, and the committed vectors cut
at their pack headers.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.frames import Codec, MediaFrame
from gateway.media.ps import PsDemuxer
from gateway.media.psmux import PsMuxer

from .vectors import DATA, audio_frames, video_frames

H264 = video_frames(Codec.H264)
H265 = video_frames(Codec.H265)
AUDIO = audio_frames()


def fields(frames: list[MediaFrame]) -> list[tuple[Any, ...]]:
    return [(f.kind, f.codec, f.data, f.pts, f.dts, f.keyframe, f.stream_id, f.nals) for f in frames]


def state(d: PsDemuxer) -> dict[str, Any]:
    return {"errors": dict(d.errors), "skipped": d.bytes_skipped, "in": d.bytes_in, "video": d.video_frames,
            "audio": d.audio_frames, "packs": d.packs, "sh": d.system_headers, "psms": d.psms,
            "types": d.stream_types, "buffered": d.buffered}


def run_both(chunks: list[tuple[bytes, bool]], **kw: Any) -> PsDemuxer:
    """Feed both demuxers; assert equal frames after every feed, equal counters throughout."""
    fast, slow = PsDemuxer(**kw), PsDemuxer(whole_frames=False, **kw)
    for data, end in chunks:
        assert fields(fast.feed(data, frame_end=end)) == fields(slow.feed(data, frame_end=end))
        assert state(fast) == state(slow)
    assert fields(fast.flush()) == fields(slow.flush())
    assert state(fast) == state(slow)
    return fast


def muxed(codec: Codec, *, audio: bool, pes: int, aud: bool) -> list[bytes]:
    """One RTP frame's PS per video frame (+ its audio pack)."""
    mux = PsMuxer(codec, Codec.G711A if audio else None, max_pes_payload=pes, insert_aud=aud)
    frames = H264 if codec == Codec.H264 else H265
    return [mux.mux(f) + (mux.mux(AUDIO[k]) if audio else b"") for k, f in enumerate(frames)]


@pytest.mark.parametrize("codec", [Codec.H264, Codec.H265])
@pytest.mark.parametrize("audio", [False, True])
def test_clean_frames_take_the_fast_path(codec: Codec, audio: bool) -> None:
    frames = muxed(codec, audio=audio, pes=0xFF00, aud=False)
    d = run_both([(f, True) for f in frames])
    # the first frames wait for the PSM of the first keyframe (it is the first frame) — all fast
    assert d.fast_feeds == len(frames)


def test_memoryview_and_bytearray_input() -> None:
    frames = muxed(Codec.H264, audio=True, pes=700, aud=True)
    d = run_both([(memoryview(f) if k % 2 else bytearray(f), True) for k, f in enumerate(frames)])
    assert d.fast_feeds == len(frames)


def test_two_access_units_in_one_frame_go_to_the_parser() -> None:
    frames = muxed(Codec.H264, audio=False, pes=0xFF00, aud=False)
    d = run_both([(frames[0], True), (frames[1] + frames[2], True), (frames[3], True)])
    assert d.fast_feeds == 2


def without(ps: bytes, sid: int) -> bytes:
    """`ps` less its packets of stream `sid` (found by their start code and length)."""
    code = bytes((0, 0, 1, sid))
    while (i := ps.find(code)) >= 0:
        ps = ps[:i] + ps[i + 6 + int.from_bytes(ps[i + 4:i + 6], "big"):]
    return ps


def test_no_psm_is_sniffed_by_the_parser_then_fast() -> None:
    mux = PsMuxer(Codec.H265)
    d = run_both([(without(without(mux.mux(f), 0xBB), 0xBC), True) for f in H265])
    assert d.stream_types == {} and 0 < d.fast_feeds < len(H265)


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.iterdir()
                                        if p.suffix in (".ps", ".vob", ".mpg")))
def test_vectors_cut_at_pack_headers(name: str) -> None:
    data = (DATA / name).read_bytes()
    cuts = [i for i in range(len(data)) if data.startswith(b"\x00\x00\x01\xba", i)] + [len(data)]
    if cuts[0]:
        cuts.insert(0, 0)
    d = run_both([(data[a:b], True) for a, b in itertools.pairwise(cuts) if b > a])
    if name.startswith(("ps_ours", "quirk_stuffing", "quirk_dahua")):
        assert d.fast_feeds > 5  # GB-style packs, pack stuffing, ADTS declared as G.711


@pytest.mark.parametrize("extra", [
    b"\x00\x00\x01\xbd\x00\x08\x00\x00\x00\x01\x00\x00\x01\xba",  # Hikvision's private stream 1
    b"\x00\x00\x01\xbe\x00\x04\xff\xff\xff\xff",  # padding
])
def test_packets_skipped_by_length_stay_on_the_fast_path(extra: bytes) -> None:
    frames = [f[:14] + extra + f[14:] for f in muxed(Codec.H264, audio=True, pes=0xFF00, aud=False)]
    assert run_both([(f, True) for f in frames]).fast_feeds == len(frames)


def test_private_stream_1_declared_in_the_psm_goes_to_the_parser() -> None:
    mux = PsMuxer(Codec.H264)
    psm = mux.mux(H264[0])
    at = psm.find(b"\x00\x00\x01\xbc")
    es_map = bytes((0x1B, 0xBD, 0, 0))  # the PSM says 0xBD carries H.264
    body = b"\xa0\xff\x00\x00" + len(es_map).to_bytes(2, "big") + es_map + b"\x00" * 4
    declared = psm[:at] + b"\x00\x00\x01\xbc" + len(body).to_bytes(2, "big") + body
    pes = b"\x00\x00\x01\xbd\x00\x0b\x80\x80\x05\x21\x00\x01\x38\x41\x00\x00\x01"
    chunks = [(declared + pes, True), (declared, True), (pes, True), (mux.mux(H264[1]), True)]
    assert run_both(chunks).fast_feeds == 1  # the PSM alone


def _frames(draw: Any) -> list[bytes]:
    codec = draw(st.sampled_from([Codec.H264, Codec.H265]))
    return muxed(codec, audio=draw(st.booleans()), pes=draw(st.sampled_from([0xFF00, 3000, 500, 40])),
                 aud=draw(st.booleans()))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_valid_frames_any_grouping(data: Any) -> None:
    frames = _frames(data.draw)
    chunks: list[tuple[bytes, bool]] = []
    k = 0
    while k < len(frames):
        n = data.draw(st.integers(1, 3))
        chunks.append((b"".join(frames[k:k + n]), data.draw(st.booleans()) or n == 1))
        k += n
    run_both(chunks)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_cut_garbled_and_garbage_frames(data: Any) -> None:
    frames = _frames(data.draw)
    chunks: list[tuple[bytes, bool]] = []
    for f in frames:
        how = data.draw(st.sampled_from(["keep", "keep", "cut", "flip", "flip_head", "junk", "drop_head", "split"]))
        if how == "cut":
            f = f[:data.draw(st.integers(0, len(f) - 1))]
        elif how.startswith("flip"):  # anywhere, or in the pack/system/PSM/PES headers
            at = data.draw(st.integers(0, len(f) - 1 if how == "flip" else min(len(f) - 1, 80)))
            f = f[:at] + bytes((f[at] ^ data.draw(st.integers(1, 255)),)) + f[at + 1:]
        elif how == "junk":
            at = data.draw(st.integers(0, len(f)))
            f = f[:at] + data.draw(st.binary(min_size=1, max_size=12)) + f[at:]
        elif how == "drop_head":
            f = f[data.draw(st.integers(1, 40)):]
        elif how == "split":
            at = data.draw(st.integers(1, len(f) - 1))
            chunks.append((f[:at], False))
            f = f[at:]
        chunks.append((f, data.draw(st.integers(0, 9)) > 0))
    run_both(chunks)



def test_edges_the_fast_path_leaves_or_takes() -> None:
    mux = PsMuxer(Codec.H264, max_pes_payload=50)
    key, p1, p2 = (mux.mux(f) for f in H264[:3])
    second = p1.find(b"\x00\x00\x01\xe0", p1.find(b"\x00\x00\x01\xe0") + 4)
    two_ids = p1[:second + 3] + b"\xe1" + p1[second + 4:]  # a second video stream ID mid-frame
    tail = mux.mux(MediaFrame("video", Codec.H264, H264[3].data + b"\x00\x00\x01\x0c\xff", 90000, 90000, False))
    stuffed = bytearray(p2)
    stuffed[13] |= 0x07  # pack stuffing claimed past the frame's first PES start: a cut pack
    assert second > 0
    for chunk, fast in ((two_ids, 0), (tail, 1), (bytes(stuffed), 0), (key[:15], 0), (key[:16], 0),
                        (bytes(stuffed[:16]), 0), (p2 + b"\x00\x00\x01\xe0\x00\x00", 0)):
        assert run_both([(key, True), (chunk, True)]).fast_feeds == 1 + fast
    small = run_both([(key, True), (p1, True)], max_frame=len(H264[0].data) - 1)
    assert small.fast_feeds == 1 and small.errors == {"frame_too_large": 1}


def test_a_start_code_that_is_no_ps_packet_goes_to_the_parser() -> None:
    frames = muxed(Codec.H264, audio=False, pes=0xFF00, aud=False)
    broken = frames[1][:17] + b"\xa0" + frames[1][18:]  # the PES start code's ID flipped to 0xA0
    assert run_both([(frames[0], True), (broken, True), (frames[2], True)]).fast_feeds == 1
