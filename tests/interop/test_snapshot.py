"""snapshot.jpg end to end: a sipp camera answers the INVITE the snapshot request causes, a sender
streams PS over RTP, and the JPEG we return is read by ffprobe and OpenCV at the camera's size."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest

from tests.interop.conftest import require_tool
from tests.interop.test_webrtc_chromium import camera_rig

pytestmark = [pytest.mark.interop, pytest.mark.requires("sipp", "ffprobe")]


async def test_snapshot_from_sipp_camera(tmp_path: Path) -> None:
    from tests.interop.test_media_sipp import CAM

    require_tool("sipp")
    ffprobe = require_tool("ffprobe")
    # the sipp camera never answers DeviceInfo or Catalog: its post-login sync ends on these timeouts,
    # and until it does the unknown channel's 404 below waits for it (up to 5 s)
    async with camera_rig(tmp_path, GBGATE_SIP__QUERY_TIMEOUT="1", GBGATE_SIP__CATALOG_FIRST_TIMEOUT="1") as \
            (r, base, state, _), aiohttp.ClientSession() as http:
        url = f"{base}/live/{CAM}/snapshot.jpg?token={r.token}"
        async with http.get(url) as resp:  # opens the stream: INVITE, RTP, first keyframe
            assert resp.status == 200, await resp.text()
            assert resp.content_type == "image/jpeg"
            first = await resp.read()
        img = cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (240, 320, 3)
        assert float(img.std()) > 5.0  # a picture, not a flat grey decode failure
        (tmp_path / "snap.jpg").write_bytes(first)
        proc = await asyncio.create_subprocess_exec(
            ffprobe, "-v", "error", "-show_streams", "-of", "json", str(tmp_path / "snap.jpg"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        stream = json.loads(out)["streams"][0]
        assert stream["codec_name"] == "mjpeg" and (stream["width"], stream["height"]) == (320, 240)

        # the stream is still lingering: the next snapshot comes from the GOP cache, at once
        t0 = time.monotonic()
        async with http.get(url) as resp:
            assert resp.status == 200
            await resp.read()
        assert time.monotonic() - t0 < 1.0
        assert state.snapshots.hits + state.snapshots.misses == 2

        async with http.get(f"{base}/live/34020000001310009999/snapshot.jpg?token={r.token}") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "channel_not_found"
        async with http.get(f"{base}/live/{CAM}/snapshot.jpg") as resp:
            assert resp.status == 401
