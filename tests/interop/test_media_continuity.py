"""One HTTP-FLV viewer across every kind of source change, with real peers (issue 12.1).

sipp is the camera (REGISTER, answers each INVITE, BYE); a Python PS/RTP sender plays its
encoder. While one viewer reads /live/{id}.flv the source: wraps its 32-bit RTP/PES clock,
reboots onto a new source port with a clock far behind, switches SSRC, and finally goes silent
so that the gateway re-INVITEs and a new sender (new port, SSRC and clock) answers. The FLV the
viewer got must have monotonic video and audio timestamps with no step above two frame intervals,
ffprobe must read it, and the test prints the measured switch step and loss → video-back time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from pathlib import Path

import aiohttp
import pytest

from gateway.gb.ssrc import ssrc_to_int
from load_tests.bench_media import PsRtpSender
from tests.interop.test_media_sipp import established_leg, ffprobe, rig, start_camera, stop_camera

CAM = "34020000001320000201"
FRAME_MS = 40  # the sender's 25 fps


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FlvReader:
    """Reads an HTTP-FLV response, keeping (arrival time, tag type, timestamp, body head)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.tags: list[tuple[float, int, int, bytes]] = []
        self._pos = 13

    def feed(self, chunk: bytes, now: float) -> None:
        self.data += chunk
        d = self.data
        while self._pos + 11 <= len(d):
            size = int.from_bytes(d[self._pos + 1:self._pos + 4], "big")
            end = self._pos + 15 + size
            if end > len(d):
                break
            ts = int.from_bytes(d[self._pos + 4:self._pos + 7], "big") | (d[self._pos + 7] << 24)
            self.tags.append((now, d[self._pos], ts, bytes(d[self._pos + 11:self._pos + 13])))
            self._pos = end

    def coded_video(self) -> list[tuple[float, int]]:
        return [(t, ts) for t, kind, ts, head in self.tags if kind == 9 and head[1:2] == b"\x01"]

    def audio(self) -> list[int]:
        return [ts for _t, kind, ts, _h in self.tags if kind == 8]


@pytest.mark.parametrize("workers", ["1", "2"])  # single process, and media workers (issue 15)
async def test_viewer_timeline_survives_wrap_reboot_ssrc_switch_and_reinvite(tmp_path: Path, workers: str) -> None:
    loop = asyncio.get_running_loop()
    async with rig(tmp_path, "udp", GBGATE_MEDIA__TIMEOUT="5", GBGATE_MEDIA__LOSS_TIMEOUT="1.5",
                   GBGATE_MEDIA__WORKERS=workers) as r:
        await start_camera(r, tmp_path, "udp", 15060)
        reader = FlvReader()
        done = asyncio.Event()

        async def watch() -> None:
            async with aiohttp.ClientSession() as http, \
                    http.get(f"{r.url}/live/{CAM}.flv?token={r.token}") as resp:
                assert resp.status == 200
                finished = asyncio.ensure_future(done.wait())
                while not done.is_set():
                    # the next chunk, or the end of the scenario: no chunk may ever come after it
                    chunk = asyncio.ensure_future(resp.content.readany())
                    await asyncio.wait({chunk, finished}, return_when=asyncio.FIRST_COMPLETED)
                    if not chunk.done():
                        chunk.cancel()
                        break
                    if not chunk.result():
                        break
                    reader.feed(chunk.result(), loop.time())
                reader.feed(resp.content.read_nowait(), loop.time())  # what had arrived by then
        viewer = asyncio.create_task(watch())
        leg = await established_leg(r)
        ssrc = ssrc_to_int(leg.answer.ssrc)

        async def play(sender: PsRtpSender, local: tuple[str, int], seconds: float, port: int | None = None) -> None:
            await sender.run_udp("127.0.0.1", port or leg.lease.port, seconds=seconds, local=local)

        # 1. the camera's clock wraps at 2**32 one second in (PES PTS copies the RTP timestamp)
        first_port = _udp_port()
        await play(PsRtpSender(ssrc=ssrc, audio=True, start_ts=(1 << 32) - 25 * 3600), ("127.0.0.1", first_port), 2.0)
        # 2. it reboots: new source port, clock far behind, same SSRC (the session is re-latched)
        await asyncio.sleep(0.7)
        moved_port = _udp_port()
        await play(PsRtpSender(ssrc=ssrc, audio=True, start_ts=1000), ("127.0.0.1", moved_port), 1.5)
        # 3. it switches SSRC on the same address, clock elsewhere again
        await asyncio.sleep(0.7)
        await play(PsRtpSender(ssrc=ssrc + 7, audio=True, start_ts=50_000_000), ("127.0.0.1", moved_port), 1.5)
        # 4. media stops: the gateway re-INVITEs after media.loss_timeout, a new sender answers
        lost_at = loop.time()
        leg2 = await established_leg(r, not_call=leg.call_id, timeout=10)
        second = PsRtpSender(ssrc=ssrc_to_int(leg2.answer.ssrc), audio=True, start_ts=7_777_777)
        await second.run_udp("127.0.0.1", leg2.lease.port, seconds=1.5)
        done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(viewer, 3)
        (tmp_path / "continuity.flv").write_bytes(bytes(reader.data))

        video = reader.coded_video()
        ts = [t for _a, t in video]
        steps = [b - a for a, b in itertools.pairwise(ts)]
        assert len(ts) > 120, f"too few frames: {len(ts)}"
        assert all(s > 0 for s in steps), "video timestamps went backwards or repeated"
        audio = reader.audio()
        assert audio and all(b >= a for a, b in itertools.pairwise(audio)), "audio timestamps went backwards"
        assert max(steps) <= 2 * FRAME_MS, f"a step of {max(steps)} ms"
        hub = r.plane.hub.counters
        if r.plane.workers is not None:  # the stream's hub is in its worker
            hub = (await r.plane.workers.owner(CAM).link.call({"op": "snapshot"}))["counters"]
        assert hub["source_changes:new_port"] >= 1 and hub["source_changes:ssrc_switch"] >= 1
        assert r.plane.invites.counters["reinvite:ok"] >= 1
        back = next(a for a, _t in video if a > lost_at + 0.2)
        # the steps at the four changes, and how long the viewer saw nothing after the loss
        print(f"\nswitch steps (ms): max {max(steps)}, distinct {sorted(set(steps))}; "
              f"loss → video back at the viewer: {back - lost_at:.2f} s "
              f"(media.loss_timeout 1.5 s, media.timeout 5 s)")
        assert back - lost_at < 5.0  # sooner than media.timeout alone would allow
        probe = await ffprobe(str(tmp_path / "continuity.flv"), "-count_frames")
        v = next(s for s in probe["streams"] if s["codec_type"] == "video")
        assert v["codec_name"] == "h264" and int(v["nb_read_frames"]) >= len(ts) - 5
        await stop_camera(r)
