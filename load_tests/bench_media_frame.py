"""CPU per video frame after RTP: PS demux → FLV tag → two direct HTTP-FLV viewers, old vs new code.

    python -m load_tests.bench_media_frame [--seconds 60] [--rounds 5] [--base REV] [--audio] [--pad slice] [--sockets]

The input is what load_tests/rtp_blast sends for a 2 Mbit/s 25 fps GB-PS stream (the camera of the
media benches): the H.264 access units of tests/data/media/h264.es looped, each padded with a filler
NAL unit (type 12) to 2 Mbit/s, muxed by gateway.media.psmux (pack header, system header + PSM on
keyframes, PES of ≤ 0xFF00 bytes); `--audio` adds a G.711A pack to every RTP frame; `--pad slice`
pads with a second slice of random bytes (emulation-prevented, like CABAC data from a real camera)
instead of rtp_blast's 0xFF filler, which is faster to scan for start codes. One RTP frame's
payload is one `PsDemuxer.feed(payload, frame_end=True)`, as RtpSession._frame does, and every frame
goes to `Stream.push` of a real StreamHub with two FLV viewers written directly into in-memory
transports through the HTTP chunk framing (what gateway/outputs/flv_http does); `--sockets`: into
real TCP transports (uvloop), read by a forked process, so that the writes' cost is measured too.

"old" is gateway/media/{nal,ps,flv,fanout,hub}.py as of `--base` (loaded from git into a private
package; the modules this work did not touch are shared), "new" is the work tree. Both run in this
process, alternating, best of `--rounds`; CPU is process time (one core). Per stage: the demuxer
alone, FlvMuxer.video_tag alone, and the whole pipeline (the rest is the hub and the fan-out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import random
import re
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import is_keyframe, split_access_units
from gateway.media.psmux import PsMuxer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "media"
BITRATE = 2_000_000
FPS = 25
OWNED = ("nal", "avcc", "ps", "flv", "fanout", "hub")
DEFAULT_BASE = "ca00369"  # the branch point of perf-media-demux


def build_payloads(seconds: int, *, audio: bool = False, pad_with: str = "filler") -> list[bytes]:
    """One PS payload per RTP frame, as rtp_blast pads and muxes them (PTS 3600 apart)."""
    aus = split_access_units(Codec.H264, (DATA / "h264.es").read_bytes())
    natural = sum(len(a) for a in aus) * 8 * FPS / len(aus)
    pad_n = max(0, int((BITRATE - natural) / 8 / FPS))
    if pad_with == "slice":  # another slice of the picture (first_mb_in_slice != 0): random, no start code
        rng = random.Random(1)
        body = bytes(rng.randrange(256) for _ in range(pad_n)).replace(b"\x00\x00", b"\x00\x03")
        pad = b"\x00\x00\x01\x01\x40" + body[:pad_n - 6] + b"\x80"
    else:
        pad = b"\x00\x00\x00\x01\x0c" + b"\xff" * (pad_n - 6) + b"\x80" if pad_n > 6 else b""
    mux = PsMuxer(Codec.H264, Codec.G711A if audio else None)
    g711 = (DATA / "g711a.raw").read_bytes()[:320]
    out = []
    for k in range(seconds * FPS):
        au = aus[k % len(aus)]
        pts = 7200 + 3600 * k
        ps = mux.mux(MediaFrame("video", Codec.H264, au + pad, pts, pts, is_keyframe(Codec.H264, au)))
        if audio:
            ps += mux.mux(MediaFrame("audio", Codec.G711A, g711, pts, pts, True, 0xC0))
        out.append(ps)
    return out


def load_old(rev: str) -> dict[str, ModuleType]:
    """gateway/media/<OWNED>.py at `rev` as the private package _media_old (imports among them rewired)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_media_frame_"))
    pkg = tmp / "_media_old"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    names = "|".join(OWNED)
    for name in OWNED:
        src = subprocess.run(["git", "show", f"{rev}:gateway/media/{name}.py"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        (pkg / f"{name}.py").write_text(re.sub(rf"\bgateway\.media\.({names})\b", r"_media_old.\1", src))
    sys.path.insert(0, str(tmp))
    return {name: importlib.import_module(f"_media_old.{name}") for name in OWNED}


def load_new() -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"gateway.media.{name}") for name in OWNED}


class Wire:
    """An asyncio transport that swallows what it is given (an empty socket buffer); `keep`: keeps it."""

    def __init__(self, keep: bool = False) -> None:
        self.bytes = 0
        self.writes = 0
        self.kept: list[bytes] | None = [] if keep else None

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.writes += 1
        if self.kept is not None:
            self.kept.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


class _Handle:
    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {}


class _Opener:
    def __init__(self) -> None:
        self.sink: Any = None
        self.opened = asyncio.Event()

    async def open(self, channel_id: str, sink: Any) -> _Handle:
        self.sink = sink
        self.opened.set()
        return _Handle()


def http_chunk(data: bytes) -> bytes:
    return b"".join((b"%x\r\n" % len(data), data, b"\r\n"))


async def _tcp_viewers(n: int) -> tuple[list[asyncio.Transport], int]:
    """`--sockets`: n server-side TCP transports on this loop, their clients in a forked process
    that reads until EOF (its CPU, and the kernel's receive work done in it, is not counted)."""
    loop = asyncio.get_running_loop()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(n)
    addr = lsock.getsockname()
    pid = os.fork()
    if pid == 0:  # the viewers: drain every connection until the bench closes it
        try:
            conns = [socket.create_connection(addr) for _ in range(n)]
            buf = bytearray(1 << 18)
            open_ = {c.fileno(): c for c in conns}
            while open_:
                ready, _w, _x = select.select(list(open_.values()), [], [])
                for c in ready:
                    if not c.recv_into(buf):
                        del open_[c.fileno()]
        finally:
            os._exit(0)
    transports = []
    for _ in range(n):
        conn, _peer = await loop.sock_accept(lsock)
        t, _p = await loop.connect_accepted_socket(asyncio.Protocol, conn)
        transports.append(t)
    lsock.close()
    return transports, pid


async def _viewers(mods: dict[str, ModuleType], payloads: list[bytes],
                   clock: list[float], keep: bool = False, sockets: bool = False) -> tuple[Any, Any, list[Any]]:
    """A hub stream with two direct FLV viewers, fed the first keyframe and one more frame."""
    opener = _Opener()
    hub = mods["hub"].StreamHub(opener, clock=lambda: clock[0])
    demux = mods["ps"].PsDemuxer()
    subs = [asyncio.create_task(hub.subscribe("c1")) for _ in range(2)]
    await opener.opened.wait()
    for p in payloads[:2]:
        for f in demux.feed(p, frame_end=True):
            opener.sink.push(f)
    wires: list[Any] = []
    tcp: list[asyncio.Transport] = []
    if sockets:
        tcp, _pid = await _tcp_viewers(len(subs))
    for task in subs:
        sub = await task
        wire = tcp.pop() if sockets else Wire(keep)
        sub.go_direct(wire, http_chunk)
        wires.append(wire)
    return demux, opener.sink, wires


async def viewer_bytes(mods: dict[str, ModuleType], payloads: list[bytes]) -> bytes:
    """Everything the first viewer received (untimed: what old and new code must agree on)."""
    clock = [0.0]
    demux, stream, wires = await _viewers(mods, payloads, clock, keep=True)
    for k, p in enumerate(payloads[2:]):
        clock[0] = k / FPS
        for f in demux.feed(p, frame_end=True):
            stream.push(f)
    assert wires[0].kept == wires[1].kept and wires[0].kept is not None
    return b"".join(wires[0].kept)


async def pipeline(mods: dict[str, ModuleType], payloads: list[bytes], sockets: bool = False) -> tuple[float, int, int]:
    """(CPU s, frames pushed, bytes written per viewer) for payloads[2:] through the whole path
    (`sockets`: into real TCP sockets, whose bytes are not counted here: 0)."""
    clock = [0.0]
    demux, stream, wires = await _viewers(mods, payloads, clock, sockets=sockets)
    if sockets:
        return await _pipeline_tcp(demux, stream, wires, payloads, clock)
    before = wires[0].bytes
    t0 = time.process_time()
    frames = await _feed(demux, stream, payloads, clock, pace=0.0)
    cpu = time.process_time() - t0
    assert not demux.errors, demux.errors
    assert wires[0].bytes == wires[1].bytes
    return cpu, frames, wires[0].bytes - before


async def _feed(demux: Any, stream: Any, payloads: list[bytes], clock: list[float], *, pace: float) -> int:
    """payloads[2:] through demuxer and stream, the clock at each frame's time; frames pushed.
    `pace` > 0: sleep that long after each payload (the viewers' sockets drain meanwhile)."""
    frames = 0
    push = stream.push
    feed = demux.feed
    for k, p in enumerate(payloads[2:]):
        clock[0] = k / FPS
        for f in feed(p, frame_end=True):
            push(f)
            frames += 1
        if pace:
            await asyncio.sleep(pace)
    return frames


async def _pipeline_tcp(demux: Any, stream: Any, wires: list[asyncio.Transport], payloads: list[bytes],
                        clock: list[float]) -> tuple[float, int, int]:
    """The timed loop of `pipeline` into TCP transports, paced: after each frame the loop sleeps
    half a millisecond (no CPU: the reader drains the sockets meanwhile, as a viewer keeps up
    between two frames of a stream), so the writes meet sockets with room as in the gateway."""
    t0 = time.process_time()
    frames = await _feed(demux, stream, payloads, clock, pace=0.0005)
    while any(w.get_write_buffer_size() for w in wires):
        await asyncio.sleep(0.001)
    cpu = time.process_time() - t0
    assert not demux.errors, demux.errors
    assert not any(w.is_closing() for w in wires)
    for w in wires:
        w.close()
    await asyncio.sleep(0)
    with contextlib.suppress(ChildProcessError):
        os.wait()
    return cpu, frames, 0


def demux_only(mods: dict[str, ModuleType], payloads: list[bytes]) -> tuple[float, list[MediaFrame]]:
    demux = mods["ps"].PsDemuxer()
    feed = demux.feed
    t0 = time.process_time()
    out = [f for p in payloads for f in feed(p, frame_end=True)]
    return time.process_time() - t0, out


def tags_only(mods: dict[str, ModuleType], frames: list[MediaFrame]) -> tuple[float, int]:
    flv = mods["flv"].FlvMuxer(Codec.H264, Codec.G711A)
    size = 0
    t0 = time.process_time()
    for f in frames:
        ts = (f.dts or 0) // 90
        size += len(flv.video_tag(f, ts) if f.kind == "video" else flv.audio_tag(f, ts))
    return time.process_time() - t0, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="seconds of stream per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--base", default=DEFAULT_BASE, help="git revision of the old code ('' to skip it)")
    ap.add_argument("--audio", action="store_true", help="a G.711A pack in every RTP frame too")
    ap.add_argument("--pad", choices=("filler", "slice"), default="filler",
                    help="pad to 2 Mbit/s with rtp_blast's 0xFF filler NAL or with random slice data")
    ap.add_argument("--sockets", action="store_true",
                    help="the pipeline's two viewers on real TCP sockets (read by a forked process), on uvloop "
                         "when installed: the writes' own cost (kernel included) is in the figure")
    args = ap.parse_args()
    run: Any = asyncio.run
    if args.sockets:
        with contextlib.suppress(ImportError):
            import uvloop
            run = uvloop.run
    payloads = build_payloads(args.seconds, audio=args.audio, pad_with=args.pad)
    variants = {"new": load_new()}
    if args.base:
        variants = {"old": load_old(args.base), **variants}
    n = len(payloads)
    best: dict[str, dict[str, float]] = {v: {} for v in variants}
    check: dict[str, tuple[Any, ...]] = {}
    seen = {name: asyncio.run(viewer_bytes(mods, payloads)) for name, mods in variants.items()}
    if "old" in seen:
        assert seen["old"] == seen["new"], "old and new code wrote different bytes to the viewers"
    for _ in range(args.rounds):
        for name, mods in variants.items():
            b = best[name]
            cpu_d, frames = demux_only(mods, payloads)
            cpu_t, tag_bytes = tags_only(mods, frames)
            cpu_p, pushed, wrote = run(pipeline(mods, payloads, args.sockets))
            for key, val in (("demux", cpu_d), ("tag", cpu_t), ("pipeline", cpu_p / (n - 2) * n)):
                b[key] = min(b.get(key, float("inf")), val)
            check[name] = (len(frames), [(f.pts, f.keyframe, f.data) for f in frames], tag_bytes, pushed, wrote)
    if "old" in check:
        assert check["old"] == check["new"], "old and new code disagree"
    mbit = sum(len(p) for p in payloads) * 8 / args.seconds / 1e6
    print(f"input: {n} RTP frames ({args.seconds} s of {mbit:.2f} Mbit/s GB-PS{' + G.711A' if args.audio else ''}, "
          f"{args.pad} padding), "
          f"{check['new'][0]} frames out, 2 direct HTTP-FLV viewers; best of {args.rounds}")
    print(f"{'':8s} {'demux':>12s} {'FLV tag':>12s} {'pipeline':>12s} {'frames/s':>10s} {'CPU s/s':>9s}")
    for name, b in best.items():
        per = {k: v / n * 1e6 for k, v in b.items()}
        print(f"{name:8s} {per['demux']:9.2f} µs {per['tag']:9.2f} µs {per['pipeline']:9.2f} µs "
              f"{n / b['pipeline']:10,.0f} {b['pipeline'] / args.seconds:9.5f}")
    if "old" in best:
        o, w = best["old"], best["new"]
        print("new/old: " + ", ".join(f"{k} {w[k] / o[k]:.2f}×" for k in ("demux", "tag", "pipeline")))
    print("(pipeline = demux + tag + hub push + framing + 2 transport writes, per RTP frame; "
          "CPU s/s = CPU seconds per second of one stream, " + ("TCP sends included, " if args.sockets else
                                                                "sockets and ") + "RTP excluded)")
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
