"""Benchmark (issue 14): gateway CPU per relayed stream to an upper platform vs to an HTTP-FLV viewer.

    python -m load_tests.bench_cascade_relay [--streams 20] [--seconds 10] [--bitrate 2000000]

gbgate runs in its own process (bench_media's child, with one `[[cascade]]` upper configured);
N devsim cameras (640x360 H.264 at 25 fps, padded with filler NALs to `--bitrate`, PS over
RTP/UDP) register to it from this process.
Two phases, each with one consumer per stream and the gateway's CPU read from /proc over a steady
window (after `--warmup` seconds, so the INVITEs to the cameras are not in it):
  flv   — one HTTP-FLV reader per stream (bench_media's viewers, in a process of their own);
  relay — the upper (a UDP socket in this process: 200 to REGISTER/MESSAGE) INVITEs every channel
          with a PS/96 offer (s=Play, y=, c=/m= a UDP sink of ours), ACKs, counts RTP bytes, BYEs.
Between the phases the ingests close (linger 1 s), so each phase pays its own camera INVITEs,
outside the window. Prints ms of gateway CPU per stream-second for each kind side by side (both
include the camera ingest: PS demux and the hub), and the idle cost with the cameras registered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devsim import messages as sim_messages
from devsim.devices import make_devices
from devsim.swarm import DeviceSwarm
from gateway.gb.sdp import MediaTransport, build_play_offer
from gateway.sip.message import Headers, Request, Response, make_response, new_branch, parse_message, serialize
from load_tests.bench_media import FPS, PASSWORD, SERVER_ID, _filler, _proc_cpu, cam_id

UPPER, UPPER_DOMAIN = "44000000002000000001", "4400000000"


class Upper(asyncio.DatagramProtocol):
    """The upper platform's signalling: answers REGISTER/MESSAGE 200, plays channels (INVITE/ACK/BYE)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.registered = asyncio.get_running_loop().create_future()
        self.pending: dict[str, asyncio.Future[Response]] = {}
        self.cseq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def port(self) -> int:
        return int(self.transport.get_extra_info("sockname")[1])  # type: ignore[union-attr]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            msg = parse_message(data)
        except Exception:
            return
        if isinstance(msg, Response):
            fut = self.pending.get(msg.call_id)
            if fut is not None and not fut.done() and msg.status >= 200:
                fut.set_result(msg)
            return
        headers = [("Expires", "3600")] if msg.method == "REGISTER" else []
        self.transport.sendto(serialize(make_response(msg, 200, to_tag="up1", headers=headers)), addr)  # type: ignore[union-attr]
        if msg.method == "REGISTER" and not self.registered.done():
            self.registered.set_result(None)

    def _request(self, method: str, channel: str, gw: tuple[str, int], call_id: str, cseq: int, *,
                 to_tag: str = "", body: bytes = b"") -> Request:
        headers = [("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch={new_branch()}"),
                   ("From", f"<sip:{UPPER}@{UPPER_DOMAIN}>;tag=up{call_id[-6:]}"),
                   ("To", f"<sip:{channel}@{SERVER_ID[:10]}>" + (f";tag={to_tag}" if to_tag else "")),
                   ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"), ("Max-Forwards", "70"),
                   ("Contact", f"<sip:{UPPER}@127.0.0.1:{self.port}>")]
        if body:
            headers += [("Content-Type", "application/sdp"), ("Subject", f"{channel}:0,{UPPER}:0")]
        headers.append(("Content-Length", str(len(body))))
        return Request(method=method, uri=f"sip:{channel}@{gw[0]}:{gw[1]}", headers=Headers(headers), body=body)

    async def play(self, channel: str, gw: tuple[str, int], sink_port: int, n: int,
                   timeout: float = 30.0) -> tuple[str, str]:
        """INVITE (retried while the channel is not shared yet: 404/480) → ACK; (call-id, to-tag)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        attempt = 0
        while True:
            attempt += 1
            call_id = f"relay-{n}-{attempt}-{os.getpid()}@127.0.0.1"
            ssrc = f"04400{n:05d}"
            body = build_play_offer(channel_id=channel, media_ip="127.0.0.1", media_port=sink_port, ssrc=ssrc,
                                    transport=MediaTransport.UDP, origin_user=UPPER)
            fut: asyncio.Future[Response] = loop.create_future()
            self.pending[call_id] = fut
            self.transport.sendto(serialize(self._request("INVITE", channel, gw, call_id, 1, body=body)), gw)  # type: ignore[union-attr]
            try:
                resp = await asyncio.wait_for(fut, 15)
            finally:
                self.pending.pop(call_id, None)
            to_tag = (resp.headers.get("To") or "").rsplit("tag=", 1)[-1]
            if resp.status == 200:
                self.transport.sendto(serialize(self._request("ACK", channel, gw, call_id, 1, to_tag=to_tag)), gw)  # type: ignore[union-attr]
                return call_id, to_tag
            if loop.time() > end:
                raise RuntimeError(f"INVITE {channel}: {resp.status}")
            await asyncio.sleep(0.5)

    def bye(self, channel: str, gw: tuple[str, int], call_id: str, to_tag: str) -> None:
        self.transport.sendto(serialize(self._request("BYE", channel, gw, call_id, 2, to_tag=to_tag)), gw)  # type: ignore[union-attr]


class Sink(asyncio.DatagramProtocol):
    """The upper's media port for one stream: counts RTP datagrams and bytes."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets += 1
        self.bytes += len(data)


def pad_devsim_pattern(bitrate: int) -> None:
    """Make devsim's cameras send about `bitrate` bit/s: each access unit of the looped pattern
    gets an H.264 filler NAL (decoders skip it), as bench_media pads its vector."""
    from devsim import media

    original = media.load_pattern

    def padded(codec: str = "h264") -> list[tuple[bool, bytes]]:
        aus = original(codec)
        natural = sum(len(au) for _k, au in aus) * 8 * FPS / len(aus)
        filler = _filler(max(0, int((bitrate - natural) / 8 / FPS)))
        return [(key, au + filler) for key, au in aus]

    media.load_pattern = padded  # type: ignore[assignment]


def _gw_cpu(pid: int) -> float:
    return _proc_cpu(pid)[0]


async def _window(pid: int, seconds: float) -> float:
    """Gateway CPU seconds per second over a window."""
    c0, t0 = _gw_cpu(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (_gw_cpu(pid) - c0) / (time.monotonic() - t0)


async def _until_no_streams(url: str, token: str, timeout: float = 10.0) -> bool:
    """Wait for the ingests of the previous phase to close (GET /api/v1/streams empty)."""
    import aiohttp
    end = time.monotonic() + timeout
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        while time.monotonic() < end:
            async with http.get(f"{url}/api/v1/streams") as resp:
                body = await resp.json() if resp.status == 200 else None
            streams = body.get("streams", body) if isinstance(body, dict) else body
            if resp.status == 200 and not streams:
                return True
            await asyncio.sleep(0.25)
    return False


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    n = args.streams
    data_dir = tempfile.mkdtemp(prefix="gbgate-bench-relay-")
    _t, upper = await loop.create_datagram_endpoint(Upper, local_addr=("127.0.0.1", 0))
    config = Path(data_dir) / "cascade.toml"
    config.write_text(f'[[cascade]]\nid = "{UPPER}"\ndomain = "{UPPER_DOMAIN}"\nhost = "127.0.0.1"\n'
                      f'port = {upper.port}\nkeepalive_interval = 60\n', encoding="utf-8")
    env = {**os.environ, "BENCH_CAMERAS": str(n), "GBGATE_CONFIG": str(config), "GBGATE_MEDIA__LINGER": "1",
           "GBGATE_MEDIA__PORT_MIN": "42000", "GBGATE_MEDIA__PORT_MAX": "42999"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "load_tests.bench_media", "--child", data_dir, "--transport", "udp",
        stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    swarm = None
    out: dict[str, Any] = {"streams": n, "window_s": args.seconds, "bitrate": args.bitrate}
    if args.bitrate:
        pad_devsim_pattern(args.bitrate)
    try:
        info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        gw = ("127.0.0.1", int(info["sip_port"]))
        await asyncio.wait_for(upper.registered, 30)
        devices = make_devices(n, password=PASSWORD, prefix="3402000000132", start=1)
        assert [d.device_id for d in devices] == [cam_id(i) for i in range(n)]
        channels = [sim_messages.channel_id(d.device_id, 0) for d in devices]
        swarm = DeviceSwarm(server_host="127.0.0.1", server_port=gw[1], devices=devices)
        await swarm.start()
        reg = await asyncio.wait_for(swarm.register_all(), 30)
        assert reg["registered"] == n, reg
        await asyncio.sleep(2.0)  # catalogs in, the cascade's channel list refreshed
        out["idle_ms_per_s"] = 1000 * await _window(proc.pid, 2.0)

        # ---- phase 1: one HTTP-FLV reader per stream
        total = args.warmup + args.seconds + 1.0
        spec = [{"url": f"{info['url']}/live/{c}.flv?token={info['token']}", "delay": 0.0, "seconds": total}
                for c in channels]
        viewers = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "load_tests.bench_media", "--viewers-child",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        reading = loop.create_task(viewers.communicate(json.dumps(spec).encode()))
        await asyncio.sleep(args.warmup)
        flv = await _window(proc.pid, args.seconds)
        results = json.loads((await reading)[0])
        ok = [r for r in results if r.get("status") == 200 and r.get("frames")]
        out["flv"] = {"ms_per_stream_s": 1000 * flv / n, "gateway_cpu_s_per_s": flv, "consumers_ok": len(ok),
                      "mbit_s_per_stream": sum(r["bytes"] * 8 / r["seconds"] for r in ok) / max(1, len(ok)) / 1e6}
        out["ingests_closed_between_phases"] = await _until_no_streams(info["url"], info["token"])

        # ---- phase 2: one upper-platform relay per stream
        sinks: list[Sink] = []
        socks = []
        for _ in channels:
            tr, sink = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
            sinks.append(sink)
            socks.append(tr)
        dialogs = await asyncio.gather(*(upper.play(c, gw, socks[i].get_extra_info("sockname")[1], i)
                                         for i, c in enumerate(channels)))
        await asyncio.sleep(args.warmup)
        b0 = sum(s.bytes for s in sinks)
        t0 = time.monotonic()
        relay = await _window(proc.pid, args.seconds)
        rate = (sum(s.bytes for s in sinks) - b0) * 8 / (time.monotonic() - t0) / n / 1e6
        for c, (call_id, tag) in zip(channels, dialogs, strict=True):
            upper.bye(c, gw, call_id, tag)
        out["relay"] = {"ms_per_stream_s": 1000 * relay / n, "gateway_cpu_s_per_s": relay,
                        "consumers_ok": sum(1 for s in sinks if s.packets), "mbit_s_per_stream": rate}
        await asyncio.sleep(0.5)
        for tr in socks:
            tr.close()
    finally:
        if swarm is not None:
            await swarm.stop()
        proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10.0, help="steady window per phase")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--bitrate", type=int, default=2_000_000,
                   help="pad the cameras' H.264 to about this many bit/s (0: devsim's pattern as is, ~0.3 Mbit/s)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    out = asyncio.run(bench(args))
    n = args.streams
    rate = f"padded to {args.bitrate / 1e6:g} Mbit/s" if args.bitrate else "unpadded"
    print(f"{n} devsim streams (640x360 H.264 25 fps {rate}, PS/RTP/UDP in), one consumer each, "
          f"{args.seconds:.0f} s steady window per kind; run {time.monotonic() - t0:.0f} s")
    print(f"gateway idle with {n} cameras registered: {out['idle_ms_per_s']:.1f} ms CPU/s")
    print(f"{'consumer':<28}{'ms CPU per stream-second':>26}{'(above idle)':>14}{'gateway CPU s/s':>17}"
          f"{'Mbit/s out per stream':>23}{'ok':>6}")
    for kind, label in (("flv", "HTTP-FLV reader"), ("relay", "upper platform (PS/RTP/UDP)")):
        r = out[kind]
        r["ms_per_stream_s_above_idle"] = (r["gateway_cpu_s_per_s"] * 1000 - out["idle_ms_per_s"]) / n
        print(f"{label:<28}{r['ms_per_stream_s']:>26.2f}{r['ms_per_stream_s_above_idle']:>14.2f}"
              f"{r['gateway_cpu_s_per_s']:>17.3f}{r['mbit_s_per_stream']:>23.2f}{r['consumers_ok']:>4}/{n}")
    print("BENCH_JSON " + json.dumps({"bench": "cascade_relay", **out}))
    return 0 if out["flv"]["consumers_ok"] == n and out["relay"]["consumers_ok"] == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
