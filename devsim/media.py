"""Simulated cameras' media: answer INVITE with a GB SDP, stream a looped test pattern as PS over RTP.

The pattern (moving bars + a frame counter, 640x360 @ 25 fps, GOP 50, no B-frames) is encoded
once with PyAV (libx264 baseline; libx265 for H.265 devices) in a worker thread and cached under
a temp directory, so hundreds of cameras share one encode. Each frame is PS-muxed and
packetised once; sending copies the prepared packet and patches sequence number, timestamp and
SSRC with `struct.pack_into` (and the SCR/PTS of the frame's first packet), so looping never
makes timestamps go backwards. One ticker sends every active stream's frame every 40 ms (§5).
Transports from the offer (§5.5): UDP; TCP passive (platform listens, we connect after ACK);
TCP active (we listen on the port given in our answer, the platform connects), RFC 4571 framed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gateway.gb.sdp import MediaTransport, build_play_answer, parse_offer
from gateway.media.frames import Codec, MediaFrame
from gateway.media.psmux import PsMuxer, encode_timestamp, pack_header
from gateway.media.rfc4571 import frame as rfc4571_frame
from gateway.media.rtp import packetize

if TYPE_CHECKING:
    from devsim.serve import RequestHandler
    from devsim.swarm import DevState
    from gateway.sip.message import Request

log = logging.getLogger(__name__)

WIDTH, HEIGHT, FPS, GOP, LOOP_FRAMES = 640, 360, 25, 50, 250
FRAME_TICKS = 90000 // FPS
CACHE_VERSION = 1
_RTP_HDR = struct.Struct("!HII")  # sequence, timestamp, SSRC at offset 2 of the RTP header


def cache_dir() -> Path:
    return Path(os.environ.get("GBGATE_SIM_CACHE") or Path(tempfile.gettempdir()) / "gbgate-sim")


def _draw(i: int, n: int) -> Any:
    import numpy as np

    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    colours = [(255, 255, 255), (0, 255, 255), (255, 255, 0), (0, 255, 0), (255, 0, 255), (255, 0, 0), (0, 0, 255)]
    bw = WIDTH // len(colours)
    for k, c in enumerate(colours):
        img[:, k * bw:(k + 1) * bw] = c
    shift = (i * WIDTH // n) % WIDTH  # bars move once around per loop, so the loop is seamless
    img = np.roll(img, shift, axis=1)
    y = (i * 4) % (HEIGHT - 40)
    img[y:y + 40, :] = 255 - img[y:y + 40, :]
    try:
        import cv2

        cv2.rectangle(img, (10, 10), (250, 60), (0, 0, 0), -1)
        cv2.putText(img, f"gbgate {i:04d}", (18, 48), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (255, 255, 255), 2)
    except ImportError:
        img[10:60, 10:10 + (i % 240)] = 0
    return img


def encode_pattern(codec: str = "h264", frames: int = LOOP_FRAMES) -> list[tuple[bool, bytes]]:
    """(keyframe, Annex-B access unit) for one loop of the pattern; blocking (run in a thread)."""
    import av

    name: Literal["libx264", "libx265"] = "libx265" if codec == "h265" else "libx264"
    enc = av.CodecContext.create(name, "w")
    enc.width, enc.height, enc.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    enc.framerate = Fraction(FPS)
    enc.time_base = Fraction(1, FPS)
    enc.gop_size = GOP
    enc.max_b_frames = 0
    if codec == "h265":
        enc.options = {"preset": "ultrafast", "x265-params": f"keyint={GOP}:min-keyint={GOP}:bframes=0:"
                       "repeat-headers=1:log-level=error"}
    else:
        enc.profile = "Baseline"
        enc.options = {"preset": "veryfast", "tune": "zerolatency",
                       "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:repeat-headers=1"}
    out: list[tuple[bool, bytes]] = []
    for i in range(frames):
        vf = av.VideoFrame.from_ndarray(_draw(i, frames), format="rgb24").reformat(format="yuv420p")
        vf.pts = i
        for pkt in enc.encode(vf):
            out.append((bool(pkt.is_keyframe), bytes(pkt)))
    for pkt in enc.encode(None):
        out.append((bool(pkt.is_keyframe), bytes(pkt)))
    return out


def load_pattern(codec: str = "h264") -> list[tuple[bool, bytes]]:
    """The cached encode (length-prefixed file), encoding it first if needed."""
    path = cache_dir() / f"pattern-v{CACHE_VERSION}-{codec}-{WIDTH}x{HEIGHT}-{FPS}-{LOOP_FRAMES}.bin"
    try:
        data = path.read_bytes()
        out, pos = [], 0
        while pos < len(data):
            n, key = struct.unpack_from("!IB", data, pos)
            out.append((bool(key), data[pos + 5:pos + 5 + n]))
            pos += 5 + n
        if out:
            return out
    except (OSError, struct.error):
        pass
    aus = encode_pattern(codec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(struct.pack("!IB", len(au), key) + au for key, au in aus))
    os.replace(tmp, path)
    return aus


@dataclass(slots=True)
class PreparedFrame:
    """One frame's RTP packets (header fields zero), and where its SCR/PTS sit in the first one."""

    packets: list[bytes]
    pts_off: int  # offset of the 5-byte PTS in the first packet


def prepare(aus: list[tuple[bool, bytes]], codec: str, *, tcp: bool, mtu: int = 1400) -> list[PreparedFrame]:
    """PS-mux and packetise every access unit once; `tcp` adds the RFC 4571 length prefix."""
    mux = PsMuxer(Codec.H265 if codec == "h265" else Codec.H264)
    out = []
    for i, (key, au) in enumerate(aus):
        ts = 3600 + i * FRAME_TICKS
        ps = mux.mux(MediaFrame("video", mux.video_codec, au, ts, ts, key))
        p = ps.find(b"\x00\x00\x01\xe0")
        pkts = packetize(ps, ssrc=0, timestamp=0, first_sequence=0, mtu=mtu)
        pre = 2 if tcp else 0
        out.append(PreparedFrame([rfc4571_frame(x) for x in pkts] if tcp else pkts, pre + 12 + p + 9))
    return out


_PATTERNS: dict[tuple[str, bool], list[PreparedFrame]] = {}


@dataclass(slots=True)
class Stream:
    """One media session of one channel."""

    call_id: str
    channel_id: str
    codec: str
    transport: MediaTransport
    ssrc: int
    dest: tuple[str, int]
    local_port: int
    udp: socket.socket | None = None
    tcp: asyncio.Transport | None = None
    server: asyncio.AbstractServer | None = None
    started: bool = False
    frame_no: int = 0
    seq: int = 0
    sent_packets: int = 0
    errors: int = 0
    frames: list[PreparedFrame] = field(default_factory=list)

    def send_frame(self) -> None:
        if self.udp is None and (self.tcp is None or self.tcp.is_closing()):
            return  # TCP not connected (yet): hold at the current frame, so the peer starts on a keyframe
        f = self.frames[self.frame_no % len(self.frames)]
        ts = (3600 + self.frame_no * FRAME_TICKS) & 0xFFFFFFFF
        pre = 2 if self.transport.is_tcp else 0
        chunks = []
        for i, pkt in enumerate(f.packets):
            buf = bytearray(pkt)
            _RTP_HDR.pack_into(buf, pre + 2, self.seq, ts, self.ssrc)
            self.seq = (self.seq + 1) & 0xFFFF
            if i == 0:  # keep the PS clock monotonic across loops (SCR = DTS − 3600, §6.7)
                buf[pre + 16:pre + 22] = pack_header(max(0, ts - 3600))[4:10]
                buf[f.pts_off:f.pts_off + 5] = encode_timestamp(0b0010, ts)
            chunks.append(buf)
        self.frame_no += 1
        try:
            if self.udp is not None:
                for c in chunks:
                    self.udp.sendto(c, self.dest)
            elif self.tcp is not None:
                self.tcp.write(b"".join(chunks))
            self.sent_packets += len(chunks)
        except OSError:
            self.errors += 1

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
        if self.server is not None:
            self.server.close()


class _Sink(asyncio.Protocol):
    """Media TCP connection: we only send; whatever arrives (RTCP) is ignored."""

    def __init__(self, on_up: Callable[[asyncio.Transport], None]) -> None:
        self.on_up = on_up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.on_up(transport)  # type: ignore[arg-type]


class MediaSessions:
    """INVITE/ACK/BYE for the swarm, and the 25 fps ticker that feeds every started stream."""

    def __init__(self, handler: RequestHandler) -> None:
        self.h = handler
        self.swarm = handler.swarm
        self.streams: dict[str, Stream] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._serial = 0

    def active(self) -> int:
        return sum(1 for s in self.streams.values() if s.started)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for s in self.streams.values():
            s.close()
        self.streams.clear()

    def on_request(self, req: Request, method: str, st: DevState | None, addr: Any, reply: Any) -> None:
        if method == "INVITE":
            if st is None:
                self.h.respond(req, 404, reply)
                return
            self.h.respond(req, 100, reply, cache=False)
            self.swarm.counts["invites"] += 1
            self.swarm.spawn(self._invite(req, st, reply))
        elif method == "ACK":
            s = self.streams.get(req.call_id)
            if s is not None and not s.started:
                self.swarm.spawn(self._start(s))
        elif method == "BYE":
            s = self.streams.pop(req.call_id, None)
            self.h.respond(req, 200 if s is not None else 481, reply)
            if s is not None:
                self.swarm.counts["byes"] += 1
                s.close()
        else:  # CANCEL, INFO
            self.h.respond(req, 200, reply)

    async def _invite(self, req: Request, st: DevState, reply: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            offer = parse_offer(req.body)
        except Exception:
            self.h.respond(req, 488, reply)
            return
        channel = req.request_uri.user or st.dev.device_id
        codec = st.dev.codec if st.dev.codec in ("h264", "h265") else "h264"
        tcp = offer.transport.is_tcp
        key = (codec, tcp)
        if key not in _PATTERNS:
            _PATTERNS[key] = prepare(await asyncio.to_thread(load_pattern, codec), codec, tcp=tcp)
        self._serial = (self._serial + 1) % 10000
        ssrc_text = offer.ssrc or f"0{self.swarm.domain[3:8]}{self._serial:04d}"
        host = self.swarm.local_host
        s = Stream(req.call_id, channel, codec, offer.transport, int(ssrc_text), (offer.ip, offer.port), 0,
                   frames=_PATTERNS[key])
        if offer.transport is MediaTransport.UDP:
            s.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.udp.bind((host, 0))
            s.udp.setblocking(False)
            s.local_port = s.udp.getsockname()[1]
        elif offer.transport is MediaTransport.TCP_ACTIVE:  # the platform connects to us
            def up(tr: asyncio.Transport) -> None:
                if s.tcp is None:
                    s.tcp = tr
                else:
                    tr.close()

            s.server = await loop.create_server(lambda: _Sink(up), host, 0)
            s.local_port = s.server.sockets[0].getsockname()[1]
        else:  # TCP passive: we connect after ACK; our port in the answer is informational
            probe = socket.socket()
            probe.bind((host, 0))
            s.local_port = probe.getsockname()[1]
            probe.close()
        answer = build_play_answer(channel_id=channel, media_ip=host, media_port=s.local_port, ssrc=ssrc_text,
                                   transport=offer.transport, session=offer.session_name or "Play")
        self.streams[req.call_id] = s
        contact = f"<sip:{channel}@{host}:{st.local.port}>"
        data = self.h.respond(req, 200, reply, body=answer,
                              headers=[("Contact", contact), ("Content-Type", "application/sdp")])
        for delay in (0.5, 1.0, 2.0, 4.0):  # 2xx retransmission until ACK (Timer G, RFC 3261 §13.3.1.4)
            await asyncio.sleep(delay)
            if s.started or req.call_id not in self.streams:
                return
            reply(data)

    async def _start(self, s: Stream) -> None:
        s.started = True
        if s.transport is MediaTransport.TCP_PASSIVE:
            loop = asyncio.get_running_loop()
            for _ in range(20):
                try:
                    tr, _p = await loop.create_connection(lambda: _Sink(lambda t: None), s.dest[0], s.dest[1],
                                                          local_addr=(self.swarm.local_host, s.local_port))
                    s.tcp = tr
                    break
                except OSError:
                    await asyncio.sleep(0.25)
        if self._ticker is None or self._ticker.done():
            self._ticker = self.swarm.spawn(self._tick())

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        t_next = loop.time()
        while self.streams:
            for s in list(self.streams.values()):
                if s.started:
                    s.send_frame()
            t_next += 1.0 / FPS
            delay = t_next - loop.time()
            if delay < -0.2:  # far behind (loop stalled): skip instead of bursting
                t_next = loop.time()
                delay = 0.0
            await asyncio.sleep(max(0.0, delay))
