"""Throughput of the sans-IO media cores for a 2 Mbit/s, 25 fps GB stream.

    python -m load_tests.bench_media_cores [--seconds 20]

The input is prepared outside the timing: H.264 access units from tests/data/media/h264.es padded
with an extra slice to a 2 Mbit/s profile (I frame every 50 frames, 8× a P frame), G.711A audio,
muxed to PS with gateway.media.psmux, cut into ≤1400-byte RTP packets, with every 50th pair of
packets swapped. Timed per packet: parse_rtp → ReorderBuffer → FrameAssembler → PsDemuxer
(frame_end) → FlvMuxer tag; per stage figures come from running each stage over the previous
stage's saved output. CPU time is process time (one core).
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from pathlib import Path

from gateway.media.flv import FlvMuxer
from gateway.media.frames import Codec, FrameAssembler, MediaFrame
from gateway.media.nal import split_access_units
from gateway.media.ps import PsDemuxer
from gateway.media.psmux import PsMuxer
from gateway.media.reorder import ReorderBuffer
from gateway.media.rfc4571 import Rfc4571Deframer, frame
from gateway.media.rtp import packetize, parse_rtp

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "media"
BITRATE = 2_000_000
FPS = 25


def build_stream(seconds: int) -> tuple[list[bytes], int]:
    rng = random.Random(1)
    aus = split_access_units(Codec.H264, (DATA / "h264.es").read_bytes())
    key_au, p_au = aus[0], aus[1]
    frames_total = seconds * FPS
    gop = 50
    per_gop = BITRATE / 8 * gop / FPS
    p_size = int(per_gop / (gop - 1 + 8))
    filler_pool = bytes(rng.randrange(1, 256) for _ in range(1 << 17))  # no 00 00 01 inside
    mux = PsMuxer(Codec.H264, Codec.G711A)
    datagrams: list[bytes] = []
    seq = 0
    payload_bytes = 0
    for k in range(frames_total):
        key = k % gop == 0
        size = p_size * 8 if key else p_size
        base = key_au if key else p_au
        extra = size - len(base)
        off = rng.randrange(0, len(filler_pool) - extra)
        data = base + b"\x00\x00\x01\x01\x40" + filler_pool[off:off + extra]  # another slice, first_mb != 0
        pts = 7200 + 3600 * k
        video = MediaFrame("video", Codec.H264, data, pts, pts, key)
        audio = MediaFrame("audio", Codec.G711A, filler_pool[:320], pts, pts, True, 0xC0)
        ps = mux.mux(video) + mux.mux(audio)
        pkts = packetize(ps, ssrc=0x06516E81, timestamp=pts, first_sequence=seq)
        seq = (seq + len(pkts)) & 0xFFFF
        datagrams += pkts
        payload_bytes += len(ps)
    for i in range(1, len(datagrams) - 1, 50):
        datagrams[i], datagrams[i + 1] = datagrams[i + 1], datagrams[i]
    return datagrams, payload_bytes


def run(datagrams: list[bytes]) -> tuple[float, float, int]:
    reorder, assembler, demux, flv = ReorderBuffer(), FrameAssembler(), PsDemuxer(), FlvMuxer(Codec.H264, Codec.G711A)
    frames_out = 0
    tags = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for d in datagrams:
        for p in reorder.push(parse_rtp(d)):
            for fr in assembler.push(p):
                for mf in demux.feed(fr.payload, frame_end=True):
                    if mf.codec == Codec.UNKNOWN:
                        continue
                    ts = (mf.dts or 0) // 90
                    tags += len(flv.video_tag(mf, ts) if mf.kind == "video" else flv.audio_tag(mf, ts))
                    frames_out += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert not demux.errors and reorder.lost == 0 and tags > 0, (demux.errors, reorder.lost)
    return cpu, wall, frames_out


def stage_costs(datagrams: list[bytes]) -> dict[str, float]:
    costs: dict[str, float] = {}
    t = time.process_time()
    packets = [parse_rtp(d) for d in datagrams]
    costs["parse_rtp"] = time.process_time() - t
    reorder = ReorderBuffer()
    t = time.process_time()
    ordered = [p for pkt in packets for p in reorder.push(pkt)]
    costs["reorder"] = time.process_time() - t
    assembler = FrameAssembler()
    t = time.process_time()
    rtp_frames = [f for p in ordered for f in assembler.push(p)]
    costs["frame_assembly"] = time.process_time() - t
    demux = PsDemuxer()
    t = time.process_time()
    media = [m for f in rtp_frames for m in demux.feed(f.payload, frame_end=True)]
    costs["ps_demux"] = time.process_time() - t
    flv = FlvMuxer(Codec.H264, Codec.G711A)
    t = time.process_time()
    for m in media:
        if m.codec == Codec.UNKNOWN:
            continue
        ts = (m.dts or 0) // 90
        flv.video_tag(m, ts) if m.kind == "video" else flv.audio_tag(m, ts)
    costs["flv_mux"] = time.process_time() - t
    tcp = b"".join(frame(d) for d in datagrams)
    chunks = [tcp[i:i + 65536] for i in range(0, len(tcp), 65536)]
    deframer = Rfc4571Deframer(10 * 1024)
    t = time.process_time()
    n = sum(len(deframer.feed(c)) for c in chunks)
    costs["rfc4571_deframe (TCP only)"] = time.process_time() - t
    assert n == len(datagrams)
    return costs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60, help="seconds of 2 Mbit/s stream to push")
    args = ap.parse_args()
    datagrams, ps_bytes = build_stream(args.seconds)
    wire = sum(len(d) for d in datagrams)
    run(datagrams[: len(datagrams) // 10])  # warm-up
    cpu, wall, frames_out = run(datagrams)
    assert frames_out == 2 * FPS * args.seconds, frames_out  # every video and audio frame, once
    n = len(datagrams)
    print(f"stream: {args.seconds} s, {n} RTP packets ({n / args.seconds:.0f}/s), "
          f"{wire * 8 / args.seconds / 1e6:.2f} Mbit/s on the wire, {frames_out} frames out")
    print(f"pipeline (parse+reorder+assemble+demux+FLV): {n / cpu:,.0f} packets/s, "
          f"{wire * 8 / cpu / 1e6:,.0f} Mbit/s, {cpu / n * 1e6:.2f} µs CPU/packet "
          f"(wall {wall:.3f} s, CPU {cpu:.3f} s)")
    per_stream = cpu / args.seconds  # CPU seconds per second of one stream
    print(f"CPU seconds per second per 2 Mbit/s stream: {per_stream:.5f} → "
          f"~{1 / per_stream:,.0f} streams per core (cores only, no sockets/asyncio)")
    for name, c in stage_costs(datagrams).items():
        print(f"  {name:28s} {c / n * 1e6:6.2f} µs/packet")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS {rss:.0f} MiB (includes the prepared {ps_bytes / 2**20:.1f} MiB of input)")


if __name__ == "__main__":
    main()
