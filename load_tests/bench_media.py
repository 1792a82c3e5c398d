"""Media-plane benchmark: gbgate (own process) + N PS/RTP cameras + M HTTP-FLV viewers per stream.

    python -m load_tests.bench_media --streams 20 --viewers 2 --bitrate 2000000 --seconds 20
    python -m load_tests.bench_media --quick
    python -m load_tests.bench_media --streams 50 --seconds 40 --workers 2   # media workers (issue 15)
    python -m load_tests.bench_media --streams 400 --seconds 30 --workers 2 --viewer-procs 2
    python -m load_tests.bench_media --streams 20 --sender asyncio            # the old per-camera sender

Each camera is a SIP UA (one asyncio UDP socket per camera, REGISTER with digest, answers
Catalog/DeviceInfo MESSAGEs and INVITE with an SDP answer carrying y=, ACK, BYE). Its media, the
H.264 test vector as MPEG-PS over RTP/UDP (gb28181.md §6.7) padded with filler NAL units to the
requested bitrate, is sent by `load_tests.rtp_blast` in a process of its own (`--gen-procs`):
frames pre-built once and patched per send, sent together every `--tick-ms` with sendmmsg (one
UDP_SEGMENT message per frame where the kernel has it, `--send-mode`), so that 400 cameras take
a small share of the 2 cores the gateway needs; `--sender asyncio` is the old way, a PsRtpSender
task per camera. Viewers (`load_tests.flv_count`, a bare asyncio protocol: de-chunk, walk the FLV
tags of each read) run in `--viewer-procs` processes of their own, reading /live/{id}.flv and
counting FLV video tags; the first viewer of each stream triggers the INVITE, the others join the
running stream 2–4 s later. The gateway runs as configured (uvloop when installed; set
GBGATE_RUNTIME__EVENT_LOOP=asyncio to compare).
Prints: gateway CPU seconds per second in steady state (every stream up, every viewer joined) and
over the whole run, RSS, per-stream delivered bitrate, frame drops, time to first frame (first
viewer: INVITE included; late viewer: from the GOP cache), kernel UDP drops, and the load
generator's own rate and CPU — RTP sender, camera SIP UAs and viewers apart (its frames per second
must reach the target for the figures to count; on loopback the sender's kernel time includes
putting each datagram into the gateway's socket). With `--workers N` the gateway runs N media
worker processes (media.workers) and the CPU is given per process (main, each worker) and in total.
Added latency: every frame carries its send time (CLOCK_MONOTONIC, one clock for all processes)
in its filler NAL, and each viewer subtracts it from the time the read holding the frame's FLV tag
arrived; printed as mean, p99 and max over every frame delivered.

`PsRtpSender` is also what tests/interop uses as the camera's media sender.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.media import rfc4571
from gateway.media.frames import Codec, MediaFrame
from gateway.media.nal import is_keyframe, split_access_units
from gateway.media.psmux import PsMuxer
from gateway.media.rtp import packetize

VECTOR = Path(__file__).resolve().parents[1] / "tests" / "data" / "media" / "h264.es"
FPS = 25


def load_aus(path: Path = VECTOR, codec: Codec = Codec.H264) -> list[bytes]:
    return split_access_units(codec, path.read_bytes())


def _filler(n: int) -> bytes:
    """An H.264 filler-data NAL (type 12) of about n bytes: decoders skip it (H.264 §7.4.2.7)."""
    if n <= 6:
        return b""
    return b"\x00\x00\x00\x01\x0c" + b"\xff" * (n - 6) + b"\x80"


class PsRtpSender:
    """Loops an H.264 elementary stream as PS over RTP: one timestamp per frame, marker last."""

    def __init__(self, *, ssrc: int, fps: int = FPS, bitrate: int | None = None, aus: list[bytes] | None = None,
                 audio: bool = False, start_ts: int | None = None, mtu: int = 1400, stamp: bool = False) -> None:
        self.ssrc = ssrc
        self.stamp = stamp  # the send time in each frame's filler NAL (added-latency measurement)
        self.fps = fps
        self.aus = aus or load_aus()
        self.audio = audio
        self.mtu = mtu
        self.mux = PsMuxer(Codec.H264, Codec.G711A if audio else None)
        self.seq = random.randrange(0x10000)
        self.ts = random.randrange(1 << 30) if start_ts is None else start_ts
        self.index = 0
        pad = 0
        if bitrate:
            natural = sum(len(a) for a in self.aus) * 8 * fps / len(self.aus)
            pad = max(0, int((bitrate - natural) / 8 / fps))
        self.pad = _filler(pad)
        self.frames_sent = 0
        self.packets_sent = 0
        self.bytes_sent = 0

    def next_frame(self) -> list[bytes]:
        """RTP packets of the next frame (video, then its audio in the same timestamp)."""
        au = self.aus[self.index % len(self.aus)]
        self.index += 1
        key = is_keyframe(Codec.H264, au)
        pad = self.pad
        if self.stamp and len(pad) > 32:  # hex digits: never a start code or emulation-prevention byte
            pad = pad[:5] + b"LAT%016x" % time.monotonic_ns() + pad[24:]
        data = au + pad if pad else au
        pts = self.ts & ((1 << 33) - 1)
        ps = self.mux.mux(MediaFrame("video", Codec.H264, data, pts, pts, key))
        if self.audio:
            ps += self.mux.mux(MediaFrame("audio", Codec.G711A, b"\xd5" * 320, pts, pts, True, 0xC0))
        pkts = packetize(ps, ssrc=self.ssrc, timestamp=self.ts, first_sequence=self.seq, mtu=self.mtu)
        self.seq = (self.seq + len(pkts)) & 0xFFFF
        self.ts = (self.ts + 90000 // self.fps) & 0xFFFFFFFF
        self.frames_sent += 1
        self.packets_sent += len(pkts)
        self.bytes_sent += sum(len(p) for p in pkts)
        return pkts

    async def _pace(self, send: Any, seconds: float | None, stop: asyncio.Event | None) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        while (seconds is None or loop.time() - t0 < seconds) and not (stop and stop.is_set()):
            for p in self.next_frame():
                send(p)
            k += 1
            delay = t0 + k / self.fps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)

    async def run_udp(self, host: str, port: int, *, seconds: float | None = None, stop: asyncio.Event | None = None,
                      local: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(local)
        sock.setblocking(False)
        dest = (host, port)

        def send(p: bytes) -> None:
            with contextlib.suppress(OSError):
                sock.sendto(p, dest)
        try:
            await self._pace(send, seconds, stop)
        finally:
            sock.close()

    async def run_tcp_connect(self, host: str, port: int, *, seconds: float | None = None,
                              stop: asyncio.Event | None = None, retry_for: float = 5.0) -> None:
        """Device connects to the platform (platform TCP passive)."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                _r, w = await asyncio.open_connection(host, port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        await self._stream(w, seconds, stop)

    async def run_tcp_listen(self, host: str, port: int, *, seconds: float | None = None,
                             stop: asyncio.Event | None = None) -> None:
        """Device listens; the platform connects (platform TCP active)."""
        conn: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

        async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            if not conn.done():
                conn.set_result(w)
            else:
                w.close()
        server = await asyncio.start_server(on_conn, host, port)
        try:
            w = await conn
        finally:
            server.close()
        await self._stream(w, seconds, stop)

    async def _stream(self, w: asyncio.StreamWriter, seconds: float | None, stop: asyncio.Event | None) -> None:
        def send(p: bytes) -> None:
            if not w.is_closing():
                w.write(rfc4571.frame(p))
        try:
            await self._pace(send, seconds, stop)
        finally:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


# ------------------------------------------------------------------------------ the bench

DOMAIN, SERVER_ID, PASSWORD = "3402000000", "34020000002000000001", "12345678"


def cam_id(i: int) -> str:
    return f"3402000000132{i + 1:07d}"


async def _child(data_dir: str, media_transport: str) -> None:
    """Run the gateway (the real Gateway; the media plane wired here until app.py does it)."""
    from aiohttp import web

    from gateway.api import build_web_app, live
    from gateway.api.auth import Role
    from gateway.app import Gateway, install_media
    from gateway.config import load_settings
    from whitelist.model import Credential, Entry, EntryStatus

    env = {"GBGATE_SIP__PORT": "0", "GBGATE_HTTP__PORT": "0", "GBGATE_DATA_DIR": data_dir,
           "GBGATE_DATABASE__URL": f"sqlite:///{data_dir}/gbgate.db",
           "GBGATE_HEALTH__JOURNAL_PATH": f"{data_dir}/journal/health.log",
           "GBGATE_MEDIA__TRANSPORT": media_transport, "GBGATE_MEDIA__PORT_MIN": "40000",
           "GBGATE_MEDIA__PORT_MAX": "41999", "GBGATE_SIP__QUERY_TIMEOUT": "2",
           "GBGATE_SIP__CATALOG_FIRST_TIMEOUT": "3", "GBGATE_SIP__CATALOG_IDLE_TIMEOUT": "1",
           # every simulated camera shares 127.0.0.1: the per-source flood guard would ban the lot
           "GBGATE_WHITELIST__FLOOD_MAX_PER_SECOND": "100000",
           **{k: v for k, v in os.environ.items() if k.startswith("GBGATE_")}}
    settings = load_settings(env=env)
    gw = Gateway(settings)
    await gw.start()
    svc = gw.services
    assert svc is not None and gw.adapter is not None and gw.endpoint is not None
    url = gw.http_url
    if svc.streams is None:
        assert gw.router is not None
        plane = install_media(adapter=gw.adapter, router=gw.router, endpoint=gw.endpoint, settings=settings,
                              repo=svc.repo)
        await plane.start()
        svc.streams = plane.hub
        runner = web.AppRunner(build_web_app(svc, [live.routes]), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    token = await svc.tokens.create(Role.ADMIN, "bench")
    for i in range(int(os.environ.get("BENCH_CAMERAS", "1"))):
        entry = Entry(device_id=cam_id(i), status=EntryStatus.APPROVED,
                      credential=Credential.from_password(cam_id(i), DOMAIN, PASSWORD))
        await svc.admission.store.save_entry(entry, actor="bench", action="add")
    await svc.admission.sync()
    print(json.dumps({"sip_port": gw.endpoint.udp_port, "url": url, "token": token}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await gw.stop()


class Camera(asyncio.DatagramProtocol):
    """A minimal GB camera UA: REGISTER with digest, 200 to MESSAGE, INVITE → 200 + PS/RTP, BYE → 200."""

    def __init__(self, device_id: str, server: tuple[str, int], bitrate: int,
                 blast: Generators | None = None) -> None:
        self.device_id = device_id
        self.server = server
        self.bitrate = bitrate
        self.blast = blast  # the rtp_blast processes send the media; None: a PsRtpSender task here
        self.ssrc: int | None = None
        self.invites = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.registered = asyncio.get_running_loop().create_future()
        self.stop_media: asyncio.Event | None = None
        self.sender: PsRtpSender | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _register(self, auth: str | None = None, cseq: int = 1) -> None:
        from gateway.sip.message import new_branch
        port = self.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        lines = [f"REGISTER sip:{SERVER_ID}@{DOMAIN} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch={new_branch()}",
                 f"From: <sip:{self.device_id}@{DOMAIN}>;tag=r{self.device_id[-6:]}",
                 f"To: <sip:{self.device_id}@{DOMAIN}>", f"Call-ID: reg-{self.device_id}@127.0.0.1",
                 f"CSeq: {cseq} REGISTER", f"Contact: <sip:{self.device_id}@127.0.0.1:{port}>",
                 "Max-Forwards: 70", "Expires: 3600", *( [f"Authorization: {auth}"] if auth else []),
                 "Content-Length: 0", "", ""]
        self.transport.sendto("\r\n".join(lines).encode(), self.server)  # type: ignore[union-attr]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        from gateway.sip.digest import authorization
        from gateway.sip.message import Response, make_response, parse_message, serialize
        try:
            msg = parse_message(data)
        except Exception:
            return
        if isinstance(msg, Response):
            if msg.cseq[1] == "REGISTER":
                if msg.status == 401:
                    self._register(authorization(msg.headers.get("WWW-Authenticate") or "", method="REGISTER",
                                                 uri=f"sip:{SERVER_ID}@{DOMAIN}", username=self.device_id,
                                                 password=PASSWORD), cseq=2)
                elif msg.status == 200 and not self.registered.done():
                    self.registered.set_result(None)
            return
        send = self.transport.sendto  # type: ignore[union-attr]
        if msg.method == "INVITE":
            from gateway.gb.sdp import build_play_answer, parse_offer
            offer = parse_offer(msg.body)
            self.invites += 1
            body = build_play_answer(channel_id=self.device_id, media_ip="127.0.0.1", media_port=15060,
                                     ssrc=offer.ssrc or "0", transport=offer.transport)
            send(serialize(make_response(msg, 200, to_tag="cam", headers=[("Content-Type", "application/sdp")],
                                         body=body)), addr)
            if self.blast is not None:
                self.ssrc = int(offer.ssrc or 0)
                self.blast.start(self.device_id, self.ssrc, offer.ip, offer.port)
                return
            if self.stop_media is not None:
                self.stop_media.set()
            self.stop_media = asyncio.Event()
            self.sender = PsRtpSender(ssrc=int(offer.ssrc or 0), bitrate=self.bitrate, stamp=True)
            task = asyncio.get_running_loop().create_task(
                self.sender.run_udp(offer.ip, offer.port, stop=self.stop_media))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif msg.method == "BYE":
            if self.stop_media is not None:
                self.stop_media.set()
            if self.blast is not None and self.ssrc is not None:
                self.blast.stop(self.device_id)
            send(serialize(make_response(msg, 200)), addr)
        elif msg.method != "ACK":
            send(serialize(make_response(msg, 200, to_tag="cam")), addr)


async def viewer(url: str, seconds: float, out: dict[str, Any]) -> None:
    """HTTP-FLV client: bytes, video tags, time to first byte, timestamp gaps as drops, latency."""
    from load_tests.flv_count import view
    await view(url, seconds, out)


class Generators:
    """The rtp_blast processes (`--gen-procs`) that send every camera's PS/RTP; streams go to one
    by camera. Their CPU is read from /proc, apart from this process's SIP user agents."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs
        self.pids = [p.pid for p in procs]
        self.mode = "?"

    @classmethod
    async def spawn(cls, n: int, *, bitrate: int, mode: str, tick_ms: float, pin: bool) -> Generators:
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "load_tests.rtp_blast", "--serve", "--bitrate", str(bitrate), "--mode", mode,
            "--tick-ms", str(tick_ms), *(["--cpu", str(k)] if pin else []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            for k in range(max(1, n))]
        return cls(procs)

    def _send(self, key: str, line: str) -> None:
        stdin = self.procs[int(key[-7:]) % len(self.procs)].stdin
        assert stdin is not None
        stdin.write(line.encode())

    def start(self, key: str, ssrc: int, host: str, port: int) -> None:
        self._send(key, f"start {key} {ssrc} {host} {port}\n")

    def stop(self, key: str) -> None:
        self._send(key, f"stop {key}\n")

    async def stats(self) -> dict[str, Any]:
        total: dict[str, Any] = {"frames": 0, "packets": 0, "bytes": 0, "errors": 0, "streams": 0}
        for p in self.procs:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write(b"stats\n")
            one = json.loads(await asyncio.wait_for(p.stdout.readline(), 10))
            for k in total:
                total[k] += one[k]
            self.mode = one["mode"]
        return total

    async def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None and not p.stdin.is_closing():
                with contextlib.suppress(Exception):
                    p.stdin.write(b"quit\n")
                    p.stdin.close()
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 5)
            except TimeoutError:
                p.kill()
                await p.wait()


def _proc_cpu(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(parts[11]) + int(parts[12])) / tick
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
    return cpu, rss


def _proc_sys(pid: int) -> float:
    """Kernel CPU seconds of a process (on loopback, partly the peer's network work done in its context)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[12]) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The gateway's media worker processes."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
    return sorted(out)


class Steady:
    """CPU of the gateway's processes (main, workers), the RTP generators, this process (the
    cameras' SIP user agents, and their media when no generator runs) and the viewers, and frames
    sent, over a window."""

    def __init__(self, gateway_pids: list[int], viewer_pids: list[int], cams: list[Camera],
                 gen: Generators | None, gen_frames: int) -> None:
        self.gw_pids, self.viewer_pids, self.cams, self.gen = gateway_pids, viewer_pids, cams, gen
        self.gen_pids = gen.pids if gen is not None else []
        self.t0 = time.monotonic()
        self.g0 = [_proc_cpu(p)[0] for p in gateway_pids]
        self.v0, self.k0 = sum(_proc_cpu(p)[0] for p in viewer_pids), time.process_time()
        self.r0 = sum(_proc_cpu(p)[0] for p in self.gen_pids)
        self.f0 = self._sent() + gen_frames
        self.seconds = self.gateway = self.viewers = self.cameras = self.sent_fps = self.generator = 0.0
        self.sip_uas = 0.0
        self.per_process: list[float] = []
        self.m0 = _machine_busy()
        self.machine = self.others = self.generator_sys = self.viewers_sys = 0.0
        self.gs0 = sum(_proc_sys(p) for p in self.gen_pids)
        self.vs0 = sum(_proc_sys(p) for p in viewer_pids)

    def _sent(self) -> int:
        return sum(c.sender.frames_sent for c in self.cams if c.sender is not None)

    def stop(self, gen_frames: int = 0) -> None:
        self.seconds = dt = time.monotonic() - self.t0
        self.per_process = [(_proc_cpu(p)[0] - a) / dt for p, a in zip(self.gw_pids, self.g0, strict=True)]
        self.gateway = sum(self.per_process)
        self.viewers = (sum(_proc_cpu(p)[0] for p in self.viewer_pids) - self.v0) / dt
        self.sip_uas = (time.process_time() - self.k0) / dt
        self.generator = (sum(_proc_cpu(p)[0] for p in self.gen_pids) - self.r0) / dt
        self.cameras = self.sip_uas + self.generator
        self.machine = (_machine_busy() - self.m0) / dt
        self.generator_sys = (sum(_proc_sys(p) for p in self.gen_pids) - self.gs0) / dt
        self.viewers_sys = (sum(_proc_sys(p) for p in self.viewer_pids) - self.vs0) / dt
        self.others = max(0.0, self.machine - self.gateway - self.cameras - self.viewers)
        self.sent_fps = (self._sent() + gen_frames - self.f0) / dt


_COUNTERS = ("lost", "reorder", "late", "duplicate", "reset", "relatch", "drop", "gap", "reinvite", "error",
             "wrong", "disconnected", "bad", "timeout", "packets", "received")


async def _ingest_counters(url: str, token: str) -> dict[str, int]:
    """The gateway's own loss/reorder/drop counters (GET /api/v1/streams), summed over streams: where
    frames went missing, if any did."""
    import aiohttp
    total: dict[str, int] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, int) and not isinstance(v, bool) and any(w in prefix.lower() for w in _COUNTERS):
            total[prefix] = total.get(prefix, 0) + v
    try:
        async with aiohttp.ClientSession() as http, http.get(
                f"{url}/api/v1/streams", headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=20)) as resp:
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}
    for st in body.get("streams", []):
        walk("", st)
    return {k: v for k, v in sorted(total.items()) if v}


def _machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat): what else ran beside the bench."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def _udp_rcvbuf_errors() -> int:
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


async def bench(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    data_dir = tempfile.mkdtemp(prefix="gbgate-bench-media-")
    env = {**os.environ, "BENCH_CAMERAS": str(args.streams), "GBGATE_MEDIA__WORKERS": str(args.workers)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "load_tests.bench_media", "--child", data_dir, "--transport", "udp",
        stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
    gw_pids = [proc.pid, *_children(proc.pid)]
    cams: list[Camera] = []
    gen: Generators | None = None
    viewer_procs: list[asyncio.subprocess.Process] = []
    try:
        if args.sender == "blast":
            gen = await Generators.spawn(args.gen_procs, bitrate=args.bitrate, mode=args.send_mode,
                                         tick_ms=args.tick_ms, pin=args.gen_pin)
        for i in range(args.streams):
            _t, cam = await loop.create_datagram_endpoint(
                lambda i=i: Camera(cam_id(i), ("127.0.0.1", info["sip_port"]), args.bitrate, gen),
                local_addr=("127.0.0.1", 0))
            cam._register()
            cams.append(cam)
        await asyncio.wait_for(asyncio.gather(*(c.registered for c in cams)), 30)
        await asyncio.sleep(1.0)
        idle0, _ = _proc_cpu(proc.pid)
        await asyncio.sleep(3.0)
        idle_cpu = (_proc_cpu(proc.pid)[0] - idle0) / 3.0
        url = info["url"]
        # Viewers run in a process of their own, so that reading 2 × N streams never slows the
        # cameras' pacing (both share this 2-core machine with the gateway).
        # Later viewers join running streams (GOP cache), spread over 2 s as people would.
        spec = [{"url": f"{url}/live/{cam.device_id}.flv?token={info['token']}",
                 "delay": 0.0 if v == 0 else 2.0 + 2.0 * i / args.streams,
                 "seconds": args.seconds - (0.0 if v == 0 else 2.0 + 2.0 * i / args.streams)}
                for i, cam in enumerate(cams) for v in range(args.viewers)]
        # --viewer-procs of them, each a contiguous share of the list (results come back in order).
        nv = max(1, min(args.viewer_procs, len(spec)))
        shares = [spec[k * len(spec) // nv:(k + 1) * len(spec) // nv] for k in range(nv)]
        viewer_procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "load_tests.bench_media", "--viewers-child",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE) for _ in shares]
        udp0 = _udp_rcvbuf_errors()
        cpu0, rss0 = _proc_cpu(proc.pid)
        cpu0 += sum(_proc_cpu(p)[0] for p in gw_pids[1:])
        rss0 += sum(_proc_cpu(p)[1] for p in gw_pids[1:])
        t0 = time.monotonic()
        out_tasks = [loop.create_task(v.communicate(json.dumps(share).encode()))
                     for v, share in zip(viewer_procs, shares, strict=True)]
        # Steady state: from when every stream is up and every viewer joined (5 s, or 1 s after the
        # last INVITE was answered when they take longer), to 1 s before the end.
        await asyncio.sleep(5.0)
        while True:
            up = ((await gen.stats())["streams"] if gen is not None
                  else sum(1 for c in cams if c.sender is not None))
            if up >= args.streams:
                break
            if time.monotonic() - t0 > args.seconds - 7.0:
                print(f"{up} of {args.streams} streams up {time.monotonic() - t0:.0f} s in: the steady window "
                      "starts anyway")
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0 if time.monotonic() - t0 > 5.5 else 0.0)
        steady = Steady(gw_pids, [v.pid for v in viewer_procs], cams, gen,
                        (await gen.stats())["frames"] if gen is not None else 0)
        await asyncio.sleep(max(1.0, args.seconds - 1.0 - (time.monotonic() - t0)))
        gen_end = await gen.stats() if gen is not None else {}
        steady.stop(gen_end.get("frames", 0))
        flat = [r for stdout, _ in await asyncio.gather(*out_tasks) for r in json.loads(stdout)]
        results = [flat[i * args.viewers:(i + 1) * args.viewers] for i in range(args.streams)]
        elapsed = time.monotonic() - t0
        cpu1, rss = _proc_cpu(proc.pid)
        cpu1 += sum(_proc_cpu(p)[0] for p in gw_pids[1:])
        rss += sum(_proc_cpu(p)[1] for p in gw_pids[1:])
        udp_drops = _udp_rcvbuf_errors() - udp0
        ingest = await _ingest_counters(info["url"], info["token"])
    finally:
        for c in cams:
            if c.stop_media is not None:
                c.stop_media.set()
        if gen is not None:
            await gen.close()
        for v in viewer_procs:
            if v.returncode is None:
                v.kill()
                await v.wait()
        proc.terminate()
        await proc.wait()
    sent_fps = args.streams * FPS
    per_stream = [rs[0].get("bytes", 0) * 8 / max(1e-9, rs[0].get("seconds", 1.0)) for rs in results]
    failed = sum(1 for rs in results for r in rs if r.get("status") != 200 or not r.get("frames"))
    first = [rs[0].get("ttfb", float("nan")) for rs in results]
    late = [r.get("ttfb", float("nan")) for rs in results for r in rs[1:]]
    missing = sum(r.get("missing", 0) for rs in results for r in rs)
    frames = sum(r.get("frames", 0) for rs in results for r in rs)
    cpu_s = (cpu1 - cpu0) / elapsed
    lat_n = sum(r.get("lat_n", 0) for rs in results for r in rs)
    lat_mean = sum(r.get("lat_sum_ns", 0) for rs in results for r in rs) / max(1, lat_n) / 1e6
    lat_max = max((r.get("lat_max_ns", 0) for rs in results for r in rs), default=0) / 1e6
    lat_p99 = statistics.median([r["lat_p99_ns"] / 1e6 for rs in results for r in rs if r.get("lat_n")] or [0])
    expected = sum(max(0.0, r.get("seconds", 0.0)) * FPS for rs in results for r in rs)
    print(f"streams={args.streams} viewers/stream={args.viewers} bitrate={args.bitrate} seconds={elapsed:.1f} "
          f"media workers={args.workers}")
    names = ["main"] + [f"worker {k}" for k in range(len(gw_pids) - 1)]
    print("gateway CPU per process, steady state: " + "; ".join(
        f"{n} {c:.3f} s/s = {c / args.streams * 1000:.2f} ms per stream-second"
        for n, c in zip(names, steady.per_process, strict=True)))
    print(f"gateway CPU s/s, steady state ({steady.seconds:.0f} s): {steady.gateway:.3f} "
          f"({steady.gateway / args.streams * 1000:.2f} ms/s per stream); whole run with the INVITEs: {cpu_s:.3f} "
          f"({cpu_s / args.streams * 1000:.2f} ms/s per stream); idle before the streams: {idle_cpu:.3f}")
    print(f"gateway RSS: {rss / 1e6:.1f} MB, idle with cameras registered {rss0 / 1e6:.1f} MB "
          f"→ {(rss - rss0) / 1e6 / args.streams:.2f} MB per active stream")
    print(f"delivered to the first viewer of each stream: median {statistics.median(per_stream) / 1e6:.2f} Mbit/s; "
          f"frames {frames} ({frames / max(1e-9, elapsed) / (args.streams * args.viewers):.1f} fps per viewer, "
          f"source {sent_fps / args.streams} fps); missing frames (timestamp gaps) {missing}; "
          f"viewers without video {failed}; frames delivered / expected at {FPS} fps: "
          f"{frames / max(1.0, expected) * 100:.1f} %")
    print(f"added latency (camera send → viewer receive, {lat_n} frames): mean {lat_mean:.2f} ms, "
          f"median viewer p99 {lat_p99:.2f} ms, max {lat_max:.1f} ms")
    print(f"time to first frame: first viewer (INVITE included) median {statistics.median(first) * 1000:.0f} ms, "
          f"max {max(first) * 1000:.0f} ms" + (f"; late joiners median {statistics.median(late) * 1000:.1f} ms, "
                                                f"max {max(late) * 1000:.1f} ms" if late else ""))
    print(f"kernel UDP RcvbufErrors during run: {udp_drops}; load generator in steady state: "
          f"{steady.sent_fps / args.streams:.1f} fps sent per camera (target {FPS}), cameras "
          f"{steady.cameras:.2f} CPU s/s, viewers {steady.viewers:.2f} CPU s/s")
    gen_what = (f"rtp_blast ×{len(gen.pids)} ({gen.mode}, tick {args.tick_ms:g} ms; {gen_end.get('errors', 0)} "
                f"send errors)" if gen is not None else "PsRtpSender tasks in the SIP UAs' process")
    print(f"load generator CPU, steady state: RTP/PS sender {steady.generator:.3f} s/s [{gen_what}] = "
          f"{steady.generator / args.streams * 1000:.2f} ms per stream-second (kernel {steady.generator_sys:.3f}); "
          f"camera SIP UAs {steady.sip_uas:.3f} s/s; viewers {steady.viewers:.3f} s/s (kernel "
          f"{steady.viewers_sys:.3f}; {len(viewer_procs)} process(es)); "
          f"all load {steady.cameras + steady.viewers:.3f} s/s")
    print("gateway's ingest/viewer counters, summed over streams (non-zero only): "
          + (", ".join(f"{k} {v}" for k, v in ingest.items()) or "none"))
    invites = sum(c.invites for c in cams)
    if invites > sum(1 for c in cams if c.invites):
        print(f"note: {invites} INVITEs for {sum(1 for c in cams if c.invites)} cameras: the gateway re-INVITEd "
              "some (each restarts that camera's media: new sequence numbers and timestamps)")
    ssrcs = [c.ssrc for c in cams if c.ssrc is not None]
    if len(set(ssrcs)) < len(ssrcs):
        print(f"note: the gateway offered {len(ssrcs)} INVITEs {len(set(ssrcs))} distinct SSRCs (streams told apart "
              "by port)")
    print(f"machine, steady state: {steady.machine:.2f} of {os.cpu_count()} cores busy; processes outside "
          f"this bench {steady.others:.2f} (when they take what the gateway needs, re-run)")


async def _delayed(delay: float, coro: Any) -> Any:
    await asyncio.sleep(delay)
    return await coro


async def _viewers_child() -> None:
    """Run the viewers given as JSON on stdin; print their results as JSON, in order."""
    spec = json.loads(sys.stdin.read())
    results: list[dict[str, Any]] = [{} for _ in spec]
    await asyncio.gather(*(_delayed(v["delay"], viewer(v["url"], v["seconds"], results[k]))
                           for k, v in enumerate(spec)), return_exceptions=True)
    print(json.dumps(results), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=20)
    p.add_argument("--viewers", type=int, default=2)
    p.add_argument("--bitrate", type=int, default=2_000_000)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--quick", action="store_true", help="4 streams × 2 viewers for 6 s")
    p.add_argument("--workers", default="1", help="media.workers of the gateway (1, N or auto)")
    p.add_argument("--sender", choices=("blast", "asyncio"), default="blast",
                   help="blast: pre-built frames from rtp_blast processes (cheap); asyncio: a PsRtpSender "
                        "task per camera in this process (the old generator)")
    p.add_argument("--gen-procs", type=int, default=1, help="rtp_blast processes (cameras spread over them)")
    p.add_argument("--send-mode", choices=("auto", "gso", "mmsg", "sendto"), default="auto",
                   help="how rtp_blast sends: gso (one message per frame, UDP_SEGMENT), mmsg (sendmmsg of "
                        "packets), sendto (a loop); auto picks the first the kernel has")
    p.add_argument("--tick-ms", type=float, default=2.0, help="rtp_blast sends the frames due every TICK ms")
    p.add_argument("--gen-pin", action=argparse.BooleanOptionalAction, default=False,
                   help="pin each rtp_blast process to one CPU (loopback may reorder a sender's packets when it "
                        "migrates between CPUs on a busy machine; a camera's NIC queue would not)")
    p.add_argument("--viewer-procs", type=int, default=1, help="processes the HTTP-FLV viewers are spread over")
    p.add_argument("--child", metavar="DATA_DIR", help=argparse.SUPPRESS)
    p.add_argument("--transport", default="udp", help=argparse.SUPPRESS)
    p.add_argument("--viewers-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.viewers_child:
        from gateway.cli.common import event_loop_factory
        with asyncio.Runner(loop_factory=event_loop_factory("auto")) as r:
            r.run(_viewers_child())
        return 0
    if args.child:
        with contextlib.suppress(KeyboardInterrupt):
            from gateway.cli.common import event_loop_factory
            choice = os.environ.get("GBGATE_RUNTIME__EVENT_LOOP", "auto")
            with asyncio.Runner(loop_factory=event_loop_factory(choice)) as r:
                r.run(_child(args.child, args.transport))
        return 0
    if args.quick:
        args.streams, args.viewers, args.seconds = 4, 2, 6.0
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
