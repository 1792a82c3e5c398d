"""Cascade with a real peer: sipp is the upper platform (gb28181.md §7).

gbgate registers to it as a lower platform (401 challenge → our digest, checked by sipp's
verifyauth → 200), sends keepalives, and answers its Query/Catalog with one Response/Catalog
MESSAGE per admitted channel (the upper's SN, our ID, SumNum). Then sipp plays a channel of a
simulated camera (devsim): INVITE → 200 with y= echoed → ACK → PS over RTP, read by ffprobe →
BYE, after which the hub subscription is gone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.cascade.registration import UplinkState
from adapters.cascade.relay import StreamRelay
from devsim.devices import make_devices
from devsim.swarm import DeviceSwarm
from gateway.app import Gateway
from gateway.gb.items import CatalogItem
from gateway.gb.ssrc import ssrc_to_int
from gateway.media.rtp import parse_rtp
from gateway.store.devices import make_catalog_job
from tests.interop.conftest import free_port, gateway_settings, require_tool, whitelist

pytestmark = [pytest.mark.interop, pytest.mark.requires("sipp")]

SIPP = Path(__file__).resolve().parent / "sipp"
UPPER = "44000000002000000001"
US = "34020000002000000001"  # sip.id (the default)
CAM = "34020000001320000301"
CHANNELS = ("34020000001310000301", "34020000001310000302")
PASSWORD = "cascade-secret"


@dataclass
class Upper:
    proc: asyncio.subprocess.Process
    trace: Path

    async def finish(self, timeout: float = 25.0) -> tuple[int, str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        messages = "".join(p.read_text(errors="replace") for p in self.trace.glob("*_messages.log"))
        errors = "".join(p.read_text(errors="replace") for p in self.trace.glob("*_errors.log"))
        return self.proc.returncode or 0, messages + "\n" + errors + out.decode(errors="replace") + \
            err.decode(errors="replace")


@contextlib.asynccontextmanager
async def upper_and_gateway(tmp_path: Path, scenario: str = "cascade_upper.xml", password: str = PASSWORD,
                            keys: dict[str, str] | None = None,
                            transport: str = "udp") -> AsyncIterator[tuple[Upper, Gateway]]:
    sipp = require_tool("sipp")
    port = free_port()
    trace = tmp_path / "sipp"
    trace.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sipp, "-sf", str(SIPP / scenario), "-i", "127.0.0.1", "-p", str(port),
        "-t", "u1" if transport == "udp" else "t1", "-nostdin",
        "-trace_msg", "-trace_err", "-timeout", "30s",
        *[arg for k, v in (keys or {}).items() for arg in ("-key", k, v)],
        cwd=trace, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(0.3)  # sipp binds its port
    config = tmp_path / "cascade.toml"
    config.write_text(
        f'[[cascade]]\nid = "{UPPER}"\ndomain = "4400000000"\nhost = "127.0.0.1"\nport = {port}\n'
        f'transport = "{transport}"\npassword = "{password}"\nkeepalive_interval = 1\nretry_interval = 1\n',
        encoding="utf-8")
    gw = Gateway(gateway_settings(tmp_path, GBGATE_CONFIG=str(config), GBGATE_MEDIA__LINGER="0.5",
                                  GBGATE_MEDIA__PORT_MIN="34600", GBGATE_MEDIA__PORT_MAX="34699"))
    await gw.start()
    try:
        yield Upper(proc, trace), gw
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await gw.stop()


async def share_channels(gw: Gateway) -> None:
    """An admitted camera with two exposed channels in the store, as a catalog sync leaves them."""
    assert gw.services is not None
    await whitelist(gw, CAM, "camera-pass")
    items = [CatalogItem(device_id=c, name=f"gate {c[-1]}", manufacturer="Vendor", civil_code="340200",
                         parent_id=CAM, status="ON", longitude=113.3, latitude=23.1) for c in CHANNELS]
    gw.services.repo.update_device(CAM, name="gate camera")  # the device row first (channels refer to it)
    await gw.services.repo.submit(make_catalog_job(CAM, items, [], [], set(CHANNELS)))


def requests(trace: str, method: str) -> list[str]:
    """The request messages sipp received (from its -trace_msg log), bodies included."""
    blocks = re.split(r"-{10,} [^\n]*\n(?:(?:UDP|TCP) message received[^\n]*\n)?", trace)
    return [b for b in blocks if b.lstrip().startswith(f"{method} sip:")]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_register_with_digest_keepalive_and_paced_catalog_answer(tmp_path: Path, transport: str) -> None:
    async with upper_and_gateway(tmp_path, transport=transport) as (upper, gw):
        await share_channels(gw)
        rc, trace = await upper.finish()
        assert gw.cascade is not None
        (uplink,) = gw.cascade.uplinks
        assert rc == 0, trace[-3000:]
        assert uplink.state is UplinkState.ONLINE
        registers = requests(trace, "REGISTER")
        assert len(registers) >= 2 and "Authorization: Digest" in registers[1]
        assert f'username="{US}"' in registers[1] and "qop=auth" in registers[1]
        messages = requests(trace, "MESSAGE")
        assert any("<CmdType>Keepalive</CmdType>" in m and f"<DeviceID>{US}</DeviceID>" in m for m in messages)
        pages = [m for m in messages if "<Response>" in m and "<CmdType>Catalog</CmdType>" in m]
        assert len(pages) == 3, trace[-3000:]  # our platform item (the tree's root), then each channel
        for page in pages:
            assert "<SN>4711</SN>" in page and f"<DeviceID>{US}</DeviceID>" in page
            assert "<SumNum>3</SumNum>" in page and '<DeviceList Num="1">' in page
            assert 'encoding="GB2312"' in page
        assert f"<Item>\n<DeviceID>{US}</DeviceID>" in pages[0] and "<ParentID>" not in pages[0]
        assert all(f"<ParentID>{US}</ParentID>" in page for page in pages[1:])
        assert {c for c in CHANNELS if any(f"<DeviceID>{c}</DeviceID>" in p for p in pages)} == set(CHANNELS)
        assert uplink.stats["catalog:pages"] == 3
        assert gw.services is not None and gw.services.health is not None  # the ledger has the link up
        state = gw.services.health.state_of(f"cascade:{UPPER}")
        assert state is not None and state.value == "online"
        text = gw.services.metrics.render().decode()
        assert "gbgate_cascade_uplinks_online 1.0" in text


async def test_a_wrong_password_is_refused_by_the_upper_and_the_uplink_stays_offline(tmp_path: Path) -> None:
    async with upper_and_gateway(tmp_path, password="not-the-password") as (upper, gw):
        rc, trace = await upper.finish()
        assert rc != 0  # verifyauth failed: sipp answered 403 and failed its call
        assert gw.cascade is not None
        (uplink,) = gw.cascade.uplinks
        assert uplink.state is not UplinkState.ONLINE and uplink.session.last_cause.startswith("register")
        assert "SIP/2.0 403 Forbidden" in trace


async def ffprobe_streams(path: Path) -> list[dict[str, object]]:
    exe = require_tool("ffprobe")
    proc = await asyncio.create_subprocess_exec(
        exe, "-v", "error", "-f", "mpeg", "-show_streams", "-of", "json", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode(errors="replace")
    streams: list[dict[str, object]] = json.loads(out)["streams"]
    return streams


class MediaSink:
    """The upper's media port: RTP datagrams (UDP) or RFC 4571 frames on a connection we accept
    (TCP, the upper listens: it offered a=setup:passive)."""

    def __init__(self, tcp: bool) -> None:
        self.tcp = tcp
        self.packets: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.server: asyncio.Server | None = None

    async def run(self) -> None:
        if not self.tcp:
            loop = asyncio.get_running_loop()
            while True:
                self.packets.append(await loop.sock_recv(self.sock, 65536))
        self.sock.listen(1)
        done = asyncio.Event()

        async def read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    self.packets.append(await reader.readexactly(size))
            writer.close()
            done.set()

        self.server = await asyncio.start_server(read, sock=self.sock)
        await done.wait()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.sock.close()


@pytest.mark.requires("sipp", "ffprobe")
@pytest.mark.parametrize("media", ["udp", "tcp"])
async def test_the_upper_plays_a_simulated_camera_and_ffprobe_reads_our_ps(tmp_path: Path, media: str) -> None:
    (camera,) = make_devices(1, password="camera-pass", prefix="3402000000132", start=401)
    channel = camera.channels[0].id
    sink = MediaSink(tcp=media == "tcp")
    keys = {"channel": channel, "rtp_port": str(sink.port),
            "media_proto": "TCP/RTP/AVP" if media == "tcp" else "RTP/AVP"}
    swarm = None
    try:
        async with upper_and_gateway(tmp_path, "cascade_upper_play.xml", keys=keys) as (upper, gw):
            await whitelist(gw, camera.device_id, "camera-pass")
            swarm = DeviceSwarm(server_host="127.0.0.1", server_port=gw.sip_port, devices=[camera])
            await swarm.start()
            await swarm.register_all()
            packets = sink.packets
            receiver = asyncio.create_task(sink.run())
            try:
                rc, trace = await upper.finish(timeout=40)
            finally:
                receiver.cancel()
            assert rc == 0, trace[-4000:]
            assert gw.cascade is not None and gw.media is not None
            (uplink,) = gw.cascade.uplinks
            relay = uplink.relay
            assert relay is not None
            blocks = re.split(r"-{10,}[^\n]*\n", trace)
            ok = [b for b in blocks if "SIP/2.0 200 OK" in b and "CSeq: 30 INVITE" in b]
            assert ok and "y=0440000001" in ok[0] and "a=sendonly" in ok[0]
            assert relay.stats["invite:ok"] == 1 and relay.stats["ended:upper_bye"] == 1
            rtps = [parse_rtp(p) for p in packets]
            assert len(rtps) > 20 and {p.ssrc for p in rtps} == {ssrc_to_int("0440000001")}
            assert {p.payload_type for p in rtps} == {96}
            ps = tmp_path / "relayed.ps"
            ps.write_bytes(b"".join(bytes(p.payload) for p in sorted(rtps, key=lambda p: p.sequence)))
            streams = await ffprobe_streams(ps)
            assert [s["codec_name"] for s in streams if s["codec_type"] == "video"] == ["h264"]
            async with asyncio.timeout(5):  # the BYE released our subscription: the ingest lingers, then closes
                while gw.media.hub.get(channel) is not None:
                    await asyncio.sleep(0.05)
            assert not relay.sessions
            assert gw.services is not None and gw.services.health is not None  # the play is in the ledger
            played = gw.services.health.state_of(f"cascade:{UPPER}/{channel}")
            assert played is not None and played.value == "offline"  # online from the ACK to the BYE
            assert uplink.status()["invites_ok"] == 1
            text = gw.services.metrics.render().decode()
            assert 'gbgate_cascade_invites_total{outcome="ok"} 1.0' in text
            assert "gbgate_cascade_stream_seconds_total" in text
    finally:
        if swarm is not None:
            await swarm.stop()
        sink.close()


async def test_the_upper_subscribes_and_hears_off_when_a_camera_unregisters(tmp_path: Path) -> None:
    (camera,) = make_devices(1, password="camera-pass", prefix="3402000000132", start=501)
    swarm = None
    try:
        async with upper_and_gateway(tmp_path, "cascade_upper_subscribe.xml") as (upper, gw):
            await whitelist(gw, camera.device_id, "camera-pass")
            swarm = DeviceSwarm(server_host="127.0.0.1", server_port=gw.sip_port, devices=[camera])
            await swarm.start()
            await swarm.register_all()
            assert gw.cascade is not None
            (uplink,) = gw.cascade.uplinks
            channels = {c.id for c in camera.channels}
            for _ in range(300):  # the catalog is in, the upper has subscribed and sees it
                if len(uplink.subscriptions) and all(uplink.shares(c) for c in channels):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"not subscribed/shared: {uplink.status()} {dict(uplink.stats)}")
            await swarm.unregister_all()
            rc, trace = await upper.finish()
            assert rc == 0, trace[-4000:]
            ok = [b for b in re.split(r"-{10,}[^\n]*\n", trace) if "SIP/2.0 200 OK" in b and "SUBSCRIBE" in b]
            assert ok and "Expires: 3600" in ok[0] and "<Result>OK</Result>" in ok[0]
            notifies = requests(trace, "NOTIFY")
            off = [n for n in notifies if "<Event>OFF</Event>" in n]
            assert off, trace[-4000:]
            assert "Event: Catalog;id=4821" in off[-1] and "Subscription-State: active" in off[-1]
            assert "<CmdType>Catalog</CmdType>" in off[-1] and f"<DeviceID>{US}</DeviceID>" in off[-1]
            assert {c for c in channels if f"<DeviceID>{c}</DeviceID>" in off[-1]} == channels  # one batch
            assert uplink.stats["subscribe:subscribed"] == 1 and uplink.stats["notify:answered:200"] >= 1
    finally:
        if swarm is not None:
            await swarm.stop()


async def test_a_stopping_gateway_hangs_up_the_uppers_play_before_it_unregisters(tmp_path: Path) -> None:
    (camera,) = make_devices(1, password="camera-pass", prefix="3402000000132", start=601)
    channel = camera.channels[0].id
    sink = MediaSink(tcp=False)
    keys = {"channel": channel, "rtp_port": str(sink.port), "media_proto": "RTP/AVP"}
    swarm = None
    try:
        async with upper_and_gateway(tmp_path, "cascade_upper_play_shutdown.xml", keys=keys) as (upper, gw):
            await whitelist(gw, camera.device_id, "camera-pass")
            swarm = DeviceSwarm(server_host="127.0.0.1", server_port=gw.sip_port, devices=[camera])
            await swarm.start()
            await swarm.register_all()
            receiver = asyncio.create_task(sink.run())
            try:
                for _ in range(400):  # the upper is watching
                    if len(sink.packets) > 20:
                        break
                    await asyncio.sleep(0.05)
                assert len(sink.packets) > 20
                assert gw.cascade is not None and gw.services is not None and gw.services.health is not None
                (uplink,) = gw.cascade.uplinks
                relay = uplink.relay
                assert isinstance(relay, StreamRelay)
                subject = f"cascade:{UPPER}/{channel}"
                state = gw.services.health.state_of(subject)
                assert state is not None and state.value == "online"
                health = gw.services.health
                await gw.stop()  # BYE to the upper, then unregister
                rc, trace = await upper.finish(timeout=20)
            finally:
                receiver.cancel()
            assert rc == 0, trace[-4000:]
            (bye,) = requests(trace, "BYE")
            assert "CSeq: 31 BYE" in bye and f"sip:{UPPER}@" in bye.splitlines()[1]
            unregister = [r for r in requests(trace, "REGISTER") if "Expires: 0" in r]
            assert unregister and trace.index(bye) < trace.index(unregister[-1])  # hang up, then leave
            assert relay.stats["bye:sent"] == 1 and relay.stats["ended:shutdown"] == 1
            state = health.state_of(subject)
            assert state is not None and state.value == "offline"
    finally:
        if swarm is not None:
            await swarm.stop()
        sink.close()
