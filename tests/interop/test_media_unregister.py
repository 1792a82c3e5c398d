"""A streaming sipp camera sends REGISTER Expires: 0 (issue 12.2): BYE within 1 s, the viewer's
HTTP-FLV response ends cleanly, no re-INVITE while it stays unregistered (its encoder keeps
sending), and a new play request is refused."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.gb.ssrc import ssrc_to_int
from load_tests.bench_media import PsRtpSender
from tests.interop.test_media_sipp import (
    end_camera_wait,
    established_leg,
    rig,
    sipp_messages,
    start_camera,
    stop_camera,
    tag_counts,
    video_tags,
)

CAM = "34020000001320000201"


def sipp_times(log: str) -> tuple[datetime, datetime]:
    """(when the camera sent its authenticated REGISTER Expires: 0, when it received our BYE),
    from the timestamps sipp's -trace_msg puts on every message."""
    sent = bye = None
    for stamp, body in re.findall(r"-{20,} (\S+ \S+)\n(.*?)(?=\n-{20,} |\Z)", log, re.S):
        at = datetime.fromisoformat(stamp)
        if sent is None and "message sent" in body and "CSeq: 4 REGISTER" in body:
            sent = at
        if bye is None and "message received" in body and "\nBYE sip:" in body:
            bye = at
    assert sent is not None and bye is not None
    return sent, bye


@pytest.mark.parametrize("workers", ["1", "2"])  # single process, and media workers (issue 15)
async def test_unregister_while_streaming_byes_ends_viewer_and_never_reinvites(tmp_path: Path, workers: str) -> None:
    loop = asyncio.get_running_loop()
    async with rig(tmp_path, "udp", GBGATE_MEDIA__LOSS_TIMEOUT="0.5", GBGATE_MEDIA__WORKERS=workers) as r:
        await start_camera(r, tmp_path, "udp", 15060, scenario="camera_media_unregister.xml")
        registered_at = loop.time()
        got = bytearray()
        ended: list[float] = []

        async def watch() -> None:
            async with aiohttp.ClientSession() as http, \
                    http.get(f"{r.url}/live/{CAM}.flv?token={r.token}") as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_any():
                    got.extend(chunk)
            ended.append(loop.time())  # the response ended (chunked terminator), not cut
        viewer = asyncio.create_task(watch())
        leg = await established_leg(r)
        stop = asyncio.Event()
        sender = asyncio.create_task(PsRtpSender(ssrc=ssrc_to_int(leg.answer.ssrc), audio=True).run_udp(
            "127.0.0.1", leg.lease.port, stop=stop))
        presence = r.gw.adapter.presence  # type: ignore[union-attr]
        invites = r.plane.invites
        # once it clearly streams (over 10 video tags asserted below) the camera unregisters, told so
        # by an INFO; else its scenario does 4 s after registering (the INFO only goes well before that)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(registered_at + 3.0):
                while tag_counts(got)[0] < 20:
                    await asyncio.sleep(0.02)
            end_camera_wait(r)
        async with asyncio.timeout(10):
            while (rec := presence.get(CAM)) is not None and rec.online:
                await asyncio.sleep(0.01)
        unregistered_at = loop.time()
        async with asyncio.timeout(1.0):
            while invites.counters["bye:sent"] == 0:
                await asyncio.sleep(0.01)
        bye_after = loop.time() - unregistered_at
        await asyncio.wait_for(viewer, 2)
        assert ended and ended[0] - unregistered_at < 1.0
        assert len(video_tags(bytes(got))) > 10  # it was streaming
        await asyncio.sleep(2.0)  # the encoder keeps sending; > loss_timeout: still no re-INVITE
        async with aiohttp.ClientSession() as http, \
                http.get(f"{r.url}/live/{CAM}.flv?token={r.token}") as resp:
            # an IPC addressed by its own ID is unknown once unregistered (404); a stored one is offline (409)
            assert resp.status in (404, 409)
            assert (await resp.json())["error"]["code"] in ("channel_not_found", "device_unavailable")
        stop.set()
        await sender
        print(f"\nBYE {bye_after * 1000:.0f} ms after the gateway took the unregister; viewer ended "
              f"{(ended[0] - unregistered_at) * 1000:.0f} ms after it")
        assert invites.counters["invite:sent"] == 1 and invites.counters["reinvite:attempt"] == 0
        async with asyncio.timeout(5):
            while "SIP/2.0 200 OK" not in sipp_messages(r).split("BYE sip:", 1)[-1]:
                await asyncio.sleep(0.1)
        msgs = sipp_messages(r)
        assert msgs.count("INVITE sip:") == 1 and "BYE sip:" in msgs
        sent, bye = sipp_times(msgs)
        print(f"camera: REGISTER Expires: 0 sent → BYE received {(bye - sent).total_seconds() * 1000:.1f} ms")
        assert 0 <= (bye - sent).total_seconds() < 1.0
        assert invites.counters["bye:200"] == 1  # sipp answered our BYE
        assert r.plane.pool.in_use == 0
        if r.plane.workers is not None:
            assert not any(w.pool.in_use for w in r.plane.workers.workers)
        with contextlib.suppress(Exception):
            await stop_camera(r)
