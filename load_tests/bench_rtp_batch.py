"""CPU per frame of `RtpSession.feed_many` on the batches UdpReceiver hands it, without sockets.

    python -m load_tests.bench_rtp_batch [--frames 1500] [--rounds 6] [--stage frames|demux]

One 2 Mbit/s 25 fps GB-PS stream (PsRtpSender: H.264 padded to the bitrate, ≤1400-byte RTP
payloads, the sequence crossing the 16-bit wrap) is laid out frame by frame into one shared
buffer exactly as `udp_batch.BatchReader` leaves a recvmmsg batch (datagram i at i × 65536), and
fed to a latched session, one `feed_many` per frame (`--per-batch N`: per N frames, as a loop
that fell behind reads them). Paths, rounds alternating: `each` takes every batch datagram by
datagram (feed_many's loop, as before `RtpSession._whole_batch`); `new` is the session as it is.
Only the `feed_many` calls are timed (thread CPU), not the copy into the buffer. `--stage frames`
stops at the RTP frame (no PS demux), `demux` goes on to MediaFrames. Prints µs of CPU per frame
and per datagram, frames/s of one core, CPU s/s of one stream and RSS.
"""

from __future__ import annotations

import argparse
import mmap
import resource
import time

from gateway.media.receiver import RtpSession
from load_tests.bench_rtp_receive import (
    SSRC,
    CountingSink,
    EachFramesOnlySession,
    EachSession,
    FramesOnlySession,
    build_frames,
)

STEP = 65536
SRC = ("127.0.0.1", 5000)
FPS = 25


def one_round(kind: type[RtpSession], frames: list[list[bytes]], shared: mmap.mmap, per_batch: int = 1) -> float:
    """Thread CPU seconds of the feed_many calls for every frame but the first (which latches)."""
    session = kind(CountingSink(), ssrc=SSRC, allowed_hosts=[SRC[0]])
    session.feed(frames[0][0], SRC)
    clock = time.thread_time
    total = 0.0
    batches = [[p for f in frames[i:i + per_batch] for p in f] for i in range(1, len(frames), per_batch)]
    for pkts in batches:
        for k, p in enumerate(pkts):
            shared[k * STEP:k * STEP + len(p)] = p
        sizes = tuple(len(p) for p in pkts)
        c0 = clock()
        session.feed_many(shared, STEP, sizes, SRC)
        total += clock() - c0
    assert session.sink.frames >= len(frames) - 15, session.sink.frames  # type: ignore[attr-defined]  # demux: from the first IDR
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--bitrate", type=int, default=2_000_000)
    ap.add_argument("--stage", choices=("frames", "demux"), default="frames")
    ap.add_argument("--per-batch", type=int, default=1,
                    help="frames per batch (a loop that falls behind reads 2–3 frames per socket)")
    args = ap.parse_args(argv)
    frames = build_frames(args.frames, args.bitrate)
    per_frame = sum(len(f) for f in frames) / len(frames)
    shared = mmap.mmap(-1, STEP * 64)
    kinds: dict[str, type[RtpSession]] = (
        {"each": EachFramesOnlySession, "new": FramesOnlySession} if args.stage == "frames"
        else {"each": EachSession, "new": RtpSession})
    best: dict[str, float] = {}
    print(f"{args.frames - 1} frames ({per_frame:.1f} datagrams/frame, {args.per_batch} per batch), "
          f"stage {args.stage}, best of {args.rounds}")
    for r in range(args.rounds):
        order = list(kinds.items()) if r % 2 == 0 else list(kinds.items())[::-1]
        for name, kind in order:
            us = one_round(kind, frames, shared, args.per_batch) / (args.frames - 1) * 1e6
            best[name] = min(best.get(name, us), us)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name, us in best.items():
        print(f"  {name:5s} {us:7.2f} µs CPU/frame  {us / per_frame:5.2f} µs/datagram  {1e6 / us:9,.0f} frames/s  "
              f"{us * FPS / 1e6:.5f} CPU s/s per stream  max RSS {rss:.0f} MiB")
    if "each" in best and "new" in best:
        print(f"new/each: {best['new'] / best['each']:.2f}×")


if __name__ == "__main__":
    main()
