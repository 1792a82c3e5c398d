"""The receiver pipeline of gb28181.md §6.4 over the committed RTP captures, without sockets."""

from gateway.media.flv import FlvMuxer
from gateway.media.frames import Codec, FrameAssembler, MediaFrame
from gateway.media.ps import PsDemuxer
from gateway.media.reorder import ReorderBuffer
from gateway.media.rfc4571 import Rfc4571Deframer
from gateway.media.rtp import is_rtcp, parse_rtp

from .vectors import SSRC, audio_frames, pcap_payloads, read, video_frames


def receive(datagrams: list[bytes]) -> tuple[list[MediaFrame], ReorderBuffer, FrameAssembler]:
    reorder, frames, demux = ReorderBuffer(capacity=32), FrameAssembler(), PsDemuxer()
    out: list[MediaFrame] = []
    for d in datagrams:
        if is_rtcp(d):
            continue
        pkt = parse_rtp(d)
        assert pkt.ssrc == SSRC
        for p in reorder.push(pkt):
            for fr in frames.push(p):
                assert not fr.gap
                out += demux.feed(fr.payload, frame_end=True)
    for p in reorder.flush():
        for fr in frames.push(p):
            out += demux.feed(fr.payload, frame_end=True)
    for fr in frames.flush():
        out += demux.feed(fr.payload, frame_end=True)
    out += demux.flush()
    assert demux.errors == {}
    return out, reorder, frames


def test_udp_capture_with_reordering_and_duplicate():
    out, reorder, frames = receive(pcap_payloads("rtp_h264_udp.pcap"))
    assert [f for f in out if f.kind == "video"] == video_frames(Codec.H264)
    assert [f for f in out if f.kind == "audio"] == audio_frames()
    assert (reorder.duplicate, reorder.reordered, reorder.lost, reorder.late) == (1, 1, 0, 0)
    assert frames.frames == 25 and frames.gap_frames == 0  # sequence wraps 65535 → 0 inside


def test_tcp_capture_same_frames_and_flv():
    packets = Rfc4571Deframer(10 * 1024).feed(read("rtp_h264_tcp.rfc4571"))
    out, _, _ = receive(packets)
    video = [f for f in out if f.kind == "video"]
    assert video == video_frames(Codec.H264)
    mux = FlvMuxer(Codec.H264, Codec.G711A)
    flv = mux.header() + b"".join(
        mux.video_tag(f, f.dts // 90) if f.kind == "video" else mux.audio_tag(f, f.dts // 90) for f in out)
    assert flv.count(b"\x17\x01\x00\x00\x00") == 3  # three key frames as AVC NALU tags


def test_lost_packet_flags_the_frame():
    datagrams = pcap_payloads("rtp_h264_udp.pcap")
    victim = parse_rtp(datagrams[15]).sequence
    kept = [d for d in datagrams if parse_rtp(d).sequence != victim]
    reorder, frames = ReorderBuffer(capacity=8), FrameAssembler()
    flagged = [fr for d in kept for p in reorder.push(parse_rtp(d)) for fr in frames.push(p) if fr.gap]
    assert reorder.lost == 1 and len(flagged) == 1
