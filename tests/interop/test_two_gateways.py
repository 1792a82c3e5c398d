"""Two gbgate instances cascaded (issue 14): a simulated camera (devsim, PS over RTP) registers to
the LOWER gateway; the lower registers to the UPPER as a lower platform (a `[[cascade]]` entry,
digest against the upper's whitelist entry for the lower's type-200 ID); the upper syncs the
lower's catalog and lists the camera's channel under the platform; an HTTP-FLV viewer on the
upper gets h264 (ffprobe reads it) — INVITE upper → lower → camera, PS back through both."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from adapters.cascade.registration import UplinkState
from adapters.cascade.relay import StreamRelay
from devsim.devices import make_devices
from devsim.swarm import DeviceSwarm
from gateway.api.auth import Role
from gateway.app import Gateway
from tests.interop.conftest import gateway_settings, require_tool, whitelist

pytestmark = [pytest.mark.interop, pytest.mark.requires("ffprobe")]

UPPER_ID, UPPER_DOMAIN = "44000000002000000001", "4400000000"
LOWER_ID, LOWER_DOMAIN = "34020000002000000001", "3402000000"  # the lower keeps the default sip.id
LOWER_PASSWORD = "lower-to-upper-1"
CAM_PASSWORD = "camera-pass"


async def until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def two_gateways(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Gateway]]:
    (tmp_path / "upper").mkdir()
    (tmp_path / "lower").mkdir()
    upper = Gateway(gateway_settings(
        tmp_path / "upper", GBGATE_SIP__ID=UPPER_ID, GBGATE_SIP__DOMAIN=UPPER_DOMAIN,
        GBGATE_MEDIA__PORT_MIN="34800", GBGATE_MEDIA__PORT_MAX="34899", GBGATE_MEDIA__LINGER="0.5"))
    await upper.start()
    lower: Gateway | None = None
    try:
        await whitelist(upper, LOWER_ID, LOWER_PASSWORD, max_channels=16)
        config = tmp_path / "lower" / "cascade.toml"
        config.write_text(
            f'[[cascade]]\nid = "{UPPER_ID}"\ndomain = "{UPPER_DOMAIN}"\nhost = "127.0.0.1"\n'
            f'port = {upper.sip_port}\ntransport = "udp"\npassword = "{LOWER_PASSWORD}"\n'
            'keepalive_interval = 1\nretry_interval = 1\n', encoding="utf-8")
        lower = Gateway(gateway_settings(
            tmp_path / "lower", GBGATE_CONFIG=str(config), GBGATE_SIP__ID=LOWER_ID,
            GBGATE_SIP__DOMAIN=LOWER_DOMAIN, GBGATE_MEDIA__PORT_MIN="34900", GBGATE_MEDIA__PORT_MAX="34999",
            GBGATE_MEDIA__LINGER="0.5"))
        await lower.start()
        yield upper, lower
    finally:
        if lower is not None:
            await lower.stop()
        await upper.stop()


async def ffprobe_flv(path: Path) -> list[dict[str, object]]:
    exe = require_tool("ffprobe")
    proc = await asyncio.create_subprocess_exec(
        exe, "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode(errors="replace")
    streams: list[dict[str, object]] = json.loads(out)["streams"]
    return streams


async def capture(url: str, seconds: float, *, frames: int | None = None) -> bytes:
    """The viewer's bytes for `seconds` from its first bytes, or until it holds `frames` video frames."""
    from tests.interop.test_media_sipp import tag_counts

    data = bytearray()
    async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "video/x-flv"
        loop = asyncio.get_running_loop()
        end: float | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds + 15):
                async for chunk in resp.content.iter_any():
                    data += chunk
                    end = end or loop.time() + seconds  # count from the first bytes (the play's setup is slow)
                    if loop.time() > end or (frames is not None and tag_counts(data)[0] >= frames):
                        break
    return bytes(data)


async def test_the_upper_gateway_plays_a_camera_of_the_lower_gateway_over_http_flv(tmp_path: Path) -> None:
    require_tool("ffprobe")
    (camera,) = make_devices(1, password=CAM_PASSWORD, prefix="3402000000132", start=701)
    channel = camera.channels[0].id
    swarm = None
    async with two_gateways(tmp_path) as (upper, lower):
        try:
            # the lower registers to the upper with digest, as a lower platform
            assert lower.cascade is not None
            (uplink,) = lower.cascade.uplinks
            await until(lambda: uplink.state is UplinkState.ONLINE, "the lower's registration to the upper")
            assert upper.adapter is not None
            await until(lambda: (r := upper.adapter.presence.get(LOWER_ID)) is not None and r.online,
                        "the upper to see the lower online")

            # the camera registers to the lower
            await whitelist(lower, camera.device_id, CAM_PASSWORD)
            swarm = DeviceSwarm(server_host="127.0.0.1", server_port=lower.sip_port, devices=[camera])
            await swarm.start()
            assert (await asyncio.wait_for(swarm.register_all(), 10))["registered"] == 1
            assert lower.adapter is not None
            await until(lambda: channel in lower.adapter.catalog.channels_of(camera.device_id),
                        "the lower's catalog of the camera")
            await until(lambda: uplink.shares(channel), "the uplink to share the camera's channel")

            # the upper syncs the lower's catalog: the camera's channel is a channel of the platform
            catalog = upper.adapter.catalog
            await until(lambda: channel in catalog.channels_of(LOWER_ID), "the upper's catalog of the lower",
                        timeout=30)
            assert upper.services is not None
            await until(lambda: upper.adapter.stats["catalog:complete"] >= 1, "a complete catalog at the upper")
            await upper.services.repo.flush()
            rows = await upper.services.repo.list_channels(LOWER_ID)
            assert [r.channel_id for r in rows] == [channel]  # the lower's own root item is not a channel
            assert await upper.services.repo.find_channel(LOWER_ID) is None

            # an HTTP-FLV viewer on the upper: INVITE upper → lower → camera, PS back through both
            token = await upper.services.tokens.create(Role.PLATFORM, "two-gateways")
            # ffprobe counts every frame the viewer got here: 30 leave a margin over the 10 asserted
            data = await capture(f"{upper.http_url}/live/{channel}.flv?token={token}", 3.0, frames=30)
            flv = tmp_path / "upper.flv"
            flv.write_bytes(data)
            streams = await ffprobe_flv(flv)
            video = [s for s in streams if s["codec_type"] == "video"]
            assert [s["codec_name"] for s in video] == ["h264"], streams
            assert int(str(video[0]["nb_read_frames"])) > 10
            relay = uplink.relay
            assert isinstance(relay, StreamRelay)
            assert relay.stats["invite:ok"] == 1 and relay.stats.get("invite:failed", 0) == 0
            assert lower.services is not None and lower.services.health is not None
            played = lower.services.health.state_of(f"cascade:{UPPER_ID}/{channel}")
            assert played is not None and played.value == "online"

            # the viewer left: the upper's ingest lingers then BYEs the lower, whose relay ends the play
            await until(lambda: relay.stats["ended:upper_bye"] == 1, "the upper's BYE to the lower", timeout=15)
            await until(lambda: not relay.sessions, "the lower's relay session to close")
            assert lower.media is not None
            await until(lambda: lower.media.hub.get(channel) is None, "the lower's ingest of the camera to close")
        finally:
            if swarm is not None:
                await swarm.stop()
