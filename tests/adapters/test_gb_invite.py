"""InviteManager against an in-memory SIP endpoint playing the device (real RTP on loopback)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.gb_media import InviteFailed, InviteManager, transport_of
from adapters.outbound import LocalIdentity, RequestFactory
from gateway.app import MediaPlane, install_media
from gateway.config import load_settings
from gateway.gb.presence import OfflineCause, Presence
from gateway.gb.sdp import MediaTransport, build_play_answer, parse_offer
from gateway.gb.ssrc import ssrc_to_int
from gateway.media.hub import (
    FLV,
    FRAMES,
    ChannelNotFound,
    DeviceUnavailable,
    NotAdmitted,
    StreamHub,
    StreamTimeout,
    split_key,
    stream_key,
)
from gateway.media.pool import PortPool
from gateway.media_workers.remote import FeedOpener
from gateway.sip.errors import SipTimeout
from gateway.sip.events import Peer
from gateway.sip.message import Request, Response, make_response
from gateway.sip.router import SipRouter
from load_tests.bench_media import PsRtpSender

DEV = "34020000001320000001"
CH = "34020000001310000001"
SIP_ID = "34020000002000000001"


@dataclass
class FakeDevice:
    """Answers INVITE/BYE/CANCEL like a camera and streams PS over the negotiated transport."""

    answer_status: int = 200
    answer_ssrc: str | None = "same"  # "same": echo the offer; None: no y=; else that value
    silent: bool = False
    stream: bool = True
    stop_after: float | None = None
    invites: list[Request] = field(default_factory=list)
    acks: list[Request] = field(default_factory=list)
    byes: list[Request] = field(default_factory=list)
    cancels: list[Request] = field(default_factory=list)
    senders: list[asyncio.Task[Any]] = field(default_factory=list)
    stops: list[asyncio.Event] = field(default_factory=list)
    listen_port: int = 0
    media_ip: str = "127.0.0.1"  # the answer's c=
    setup_active: bool = False  # answer a=setup:active to an active offer too (firmware bug, issue 16.2)
    answer_delay: float = 0.0  # a real camera takes a while to answer

    async def request(self, req: Request, peer: Peer, *, timeout: float | None = None) -> Response:
        if req.method == "BYE":
            self.byes.append(req)
            for s in self.stops:
                s.set()
            return make_response(req, 200)
        if req.method == "CANCEL":
            self.cancels.append(req)
            return make_response(req, 200)
        assert req.method == "INVITE"
        self.invites.append(req)
        if self.silent:
            await asyncio.sleep(timeout or 1)
            raise SipTimeout("no answer")
        if self.answer_status != 200:
            return make_response(req, self.answer_status, to_tag="dev1")
        await asyncio.sleep(self.answer_delay)
        offer = parse_offer(req.body)
        ssrc = offer.ssrc if self.answer_ssrc == "same" else self.answer_ssrc
        port = 15060
        answer_transport = offer.transport
        if offer.transport is MediaTransport.TCP_ACTIVE and self.setup_active:
            answer_transport = MediaTransport.TCP_PASSIVE  # → a=setup:active: "I connect to you"
        elif offer.transport is MediaTransport.TCP_ACTIVE:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            self.listen_port = port
        body = build_play_answer(channel_id=CH, media_ip=self.media_ip, media_port=port, ssrc=ssrc or "0",
                                 transport=answer_transport)
        if ssrc is None:
            body = body.replace(b"y=0\r\n", b"")
        if self.stream:
            stop = asyncio.Event()
            self.stops.append(stop)
            sender = PsRtpSender(ssrc=ssrc_to_int(ssrc) if ssrc else 4242)
            if offer.transport is MediaTransport.UDP:
                coro = sender.run_udp(offer.ip, offer.port, stop=stop, seconds=self.stop_after)
            elif offer.transport is MediaTransport.TCP_PASSIVE or answer_transport is MediaTransport.TCP_PASSIVE:
                coro = sender.run_tcp_connect(offer.ip, offer.port, stop=stop, seconds=self.stop_after)
            else:
                coro = sender.run_tcp_listen("127.0.0.1", port, stop=stop, seconds=self.stop_after)
            self.senders.append(asyncio.create_task(coro))
        return make_response(req, 200, to_tag="dev1", headers=[("Content-Type", "application/sdp")], body=body)

    def send_stateless(self, msg: Request, peer: Peer) -> None:
        assert msg.method == "ACK"
        self.acks.append(msg)

    async def close(self) -> None:
        for s in self.stops:
            s.set()
        await asyncio.gather(*self.senders, return_exceptions=True)


class Policy:
    def __init__(self, allowed: bool = True) -> None:
        self.allowed = allowed

    def decide(self, request: Any, now: Any) -> Any:
        return SimpleNamespace(allowed=self.allowed, reason=SimpleNamespace(value="REVOKED"))


class Repo:
    def __init__(self, mode: str | None = None) -> None:
        self.mode = mode

    async def find_channel(self, channel_id: str) -> Any:
        return SimpleNamespace(device_id=DEV) if channel_id == CH else None

    async def get_device(self, device_id: str) -> Any:
        return SimpleNamespace(stream_mode=self.mode)


class NoCatalog:
    """No catalog in flight: the repo alone decides."""

    def channel_owner(self, channel_id: str) -> None:
        return None

    async def locate_channel(self, channel_id: str, timeout: float | None = None) -> None:
        return None

    def out_of_range_owner(self, channel_id: str) -> None:
        return None


def make(device: FakeDevice, *, mode: str | None = None, timeout: float = 0.6, online: bool = True,
         allowed: bool = True) -> tuple[InviteManager, StreamHub]:
    identity = LocalIdentity(sip_id=SIP_ID, domain="3402000000", host="127.0.0.1", port=5060, user_agent="t")
    presence = Presence(keepalive_interval=60, keepalive_count=3)
    if online:
        presence.register(DEV, transport="udp", host="127.0.0.1", port=5062, conn_id=None, call_id="c",
                          contact="", expires=3600, now=0.0, user_agent="")
    media = SimpleNamespace(host="127.0.0.1", transport="udp", timeout=timeout, linger=0.1, invite_timeout=2.0,
                            rcvbuf=1 << 20, rx_window=0.002, viewer_queue=256)
    mgr = InviteManager(endpoint=device, requests=RequestFactory(identity), presence=presence,
                        policy=Policy(allowed), channels=NoCatalog(), dialogs=SipRouter(),  # type: ignore[arg-type]
                        pool=PortPool(31000, 31099, "3402000000"), media=media, repo=Repo(mode))
    return mgr, StreamHub(mgr, linger=0.1, ready_timeout=2.0)


async def frames(sub: Any, n: int, timeout: float = 3.0) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            batch = await sub.get_batch()
            if not batch:
                break
            out += batch
    return out


@pytest.mark.parametrize("mode", ["udp", "tcp-passive", "tcp-active"])
async def test_invite_ack_stream_bye(mode: str) -> None:
    dev = FakeDevice()
    mgr, hub = make(dev, mode=mode)
    sub = await hub.subscribe(CH, FRAMES)
    got = await frames(sub, 10)
    assert got[0].keyframe and len(got) >= 10
    inv = dev.invites[0]
    assert inv.uri == f"sip:{CH}@127.0.0.1:5062"
    offer = parse_offer(inv.body)
    assert offer.transport == transport_of(mode, "udp") and offer.ip == "127.0.0.1"
    assert inv.headers.get("Subject") == f"{CH}:{offer.ssrc},{SIP_ID}:0"
    assert inv.headers.get("Contact") and inv.headers.get("Content-Type") == "APPLICATION/SDP"
    ack = dev.acks[0]
    assert ack.call_id == inv.call_id and ack.from_.tag == inv.from_.tag and ack.to.tag == "dev1"
    assert ack.cseq == (inv.cseq[0], "ACK")
    snap = hub.snapshot(CH)
    assert snap["rtp"]["received"] > 0 and snap["rtp"]["transport"] == transport_of(mode, "udp").value
    assert snap["trace"][0]["diagnosis"] == "streaming"
    steps = [s["step"] for s in snap["trace"][0]["steps"]]
    for step in ("offer_sent", "answer", "ack_sent", "first_rtp", "first_ps_pack", "first_keyframe"):
        assert step in steps
    sub.close()
    await asyncio.sleep(0.4)  # linger 0.1 → BYE
    assert len(dev.byes) == 1 and dev.byes[0].call_id == inv.call_id and dev.byes[0].to.tag == "dev1"
    assert mgr.pool.in_use == 0
    await dev.close()
    await hub.stop()


async def test_answer_ssrc_wins_and_offer_ssrc_is_dropped() -> None:
    dev = FakeDevice(answer_ssrc="0200009999")
    _mgr, hub = make(dev)
    sub = await hub.subscribe(CH, FRAMES)
    assert len(await frames(sub, 5)) >= 5
    assert hub.snapshot(CH)["rtp"]["ssrc"] == 200009999
    await dev.close()
    await hub.stop()


async def test_no_ssrc_in_answer_locks_to_first_seen() -> None:
    dev = FakeDevice(answer_ssrc=None)
    _mgr, hub = make(dev)
    sub = await hub.subscribe(CH, FRAMES)
    assert len(await frames(sub, 5)) >= 5
    assert hub.snapshot(CH)["rtp"]["ssrc"] == 4242
    await dev.close()
    await hub.stop()


async def test_refusals_unknown_offline_not_admitted() -> None:
    dev = FakeDevice()
    _mgr, hub = make(dev)
    with pytest.raises(ChannelNotFound):
        await hub.subscribe("34020000001310009999", FLV)
    _mgr, hub = make(dev, online=False)
    with pytest.raises(DeviceUnavailable):
        await hub.subscribe(CH, FLV)
    _mgr, hub = make(dev, allowed=False)
    with pytest.raises(NotAdmitted) as info:
        await hub.subscribe(CH, FLV)
    assert "REVOKED" in str(info.value) and dev.invites == []


async def test_device_refuses_invite_trace_says_so() -> None:
    dev = FakeDevice(answer_status=486)
    mgr, hub = make(dev)
    with pytest.raises(InviteFailed) as info:
        await hub.subscribe(CH, FLV)
    trace = info.value.trace[0]
    assert "refused the INVITE (486" in trace["diagnosis"]
    assert mgr.pool.in_use == 0 and dev.acks == []  # non-2xx is ACKed by the transaction layer


async def test_silent_device_times_out_with_trace_and_cancel() -> None:
    dev = FakeDevice(silent=True)
    mgr, hub = make(dev)
    hub.ready_timeout = 0.5
    with pytest.raises(StreamTimeout) as info:
        await hub.subscribe(CH, FLV)
    assert info.value.status == 504
    assert info.value.trace[0]["diagnosis"] == "the device never answered the INVITE"
    await asyncio.sleep(0.1)
    assert len(dev.cancels) == 1 and mgr.pool.in_use == 0


async def test_no_rtp_times_out_with_trace_then_bye() -> None:
    dev = FakeDevice(stream=False)
    mgr, hub = make(dev)
    hub.ready_timeout = 0.5
    with pytest.raises(StreamTimeout) as info:
        await hub.subscribe(CH, FLV)
    assert "no RTP arrived" in info.value.trace[0]["diagnosis"]
    await asyncio.sleep(0.2)
    assert len(dev.byes) == 1 and mgr.pool.in_use == 0


async def test_media_stops_then_reinvite_brings_it_back() -> None:
    dev = FakeDevice(stop_after=0.5)
    mgr, hub = make(dev, timeout=0.4)
    sub = await hub.subscribe(CH, FRAMES)
    first = await frames(sub, 5)
    await asyncio.sleep(1.3)  # sender stops at 0.5 s; watchdog re-INVITEs after 0.4 s idle
    assert len(dev.invites) >= 2 and len(dev.byes) >= 1
    more = await frames(sub, 20)
    assert first and more and not sub.closed
    assert mgr.counters["reinvite:ok"] >= 1 and hub.snapshot(CH)["reinvites"] >= 1
    await dev.close()
    await hub.stop()
    assert mgr.pool.in_use == 0


async def test_device_bye_ends_stream_without_reinvite() -> None:
    dev = FakeDevice()
    # media timeout 1 s: a loaded machine may stall the sender for a few hundred ms, which must not
    # count as media loss (a re-INVITE would leave invites[0] stale); 1.5 s after the BYE is past it
    mgr, hub = make(dev, timeout=1.0)
    sub = await hub.subscribe(CH, FRAMES)
    await frames(sub, 3)
    assert mgr.on_remote_bye(dev.invites[0].call_id) is True
    assert mgr.on_remote_bye("unknown@x") is False
    rest = [f async for f in sub]
    assert sub.reason == "device_bye" and isinstance(rest, list)
    await asyncio.sleep(1.5)
    assert len(dev.invites) == 1 and dev.byes == [] and mgr.pool.in_use == 0
    await dev.close()


async def test_device_gone_ends_stream() -> None:
    dev = FakeDevice()
    mgr, hub = make(dev)
    sub = await hub.subscribe(CH, FRAMES)
    await frames(sub, 3)
    mgr.on_device_gone(DEV)
    _ = [f async for f in sub]
    assert sub.reason == "device_offline"
    await asyncio.sleep(0.1)
    assert mgr.pool.in_use == 0 and hub.get(CH) is None
    await dev.close()


async def test_retransmitted_2xx_is_reacked_and_late_2xx_gets_bye() -> None:
    dev = FakeDevice()
    mgr, hub = make(dev, timeout=5.0)  # no re-INVITE under load: the 2xx must match the first INVITE's dialog
    sub = await hub.subscribe(CH, FRAMES)
    await frames(sub, 2)
    inv = dev.invites[0]
    ok = make_response(inv, 200, to_tag="dev1")
    assert mgr.on_stray_response(ok, Peer("udp", "127.0.0.1", 5062)) is True
    assert len(dev.acks) == 2
    # a 200 for an INVITE we abandoned: ACK + BYE
    mgr._abandoned["late@x"] = (Peer("udp", "127.0.0.1", 5062), "ft", ("127.0.0.1", 5062), 7)
    late = make_response(inv, 200, to_tag="dev9")
    late.headers.set("Call-ID", "late@x")
    assert mgr.on_stray_response(late, Peer("udp", "127.0.0.1", 5062)) is True
    await asyncio.sleep(0.05)
    assert dev.acks[-1].call_id == "late@x" and dev.byes[-1].call_id == "late@x"
    await dev.close()
    await hub.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_install_media_wires_hub_and_metrics(tmp_path: Any, workers: str) -> None:
    settings = load_settings(env={"GBGATE_DATA_DIR": str(tmp_path), "GBGATE_MEDIA__WORKERS": workers})
    adapter = SimpleNamespace(requests=None, presence=Presence(), policy=Policy(),
                              catalog=NoCatalog(), offline_listeners=[])
    added: list[Any] = []
    metrics = SimpleNamespace(add_counters=added.append, add_gauge=lambda *a: added.append(a))
    plane = install_media(adapter=adapter, router=SipRouter(), endpoint=FakeDevice(), settings=settings, repo=Repo(),  # type: ignore[arg-type]
                          metrics=metrics)  # type: ignore[arg-type]
    # the hub opens every channel no other source kind claims through the INVITE manager
    assert isinstance(plane, MediaPlane) and plane.hub.opener is plane.routes and plane.routes is not None
    if workers == "1":
        assert plane.workers is None
        assert plane.routes.opener_for("34020000001320000001") is plane.invites
    else:  # GB channels are fed from the worker that owns them; the INVITE manager still signals
        assert plane.workers is not None and plane.workers.count == 2
        assert isinstance(plane.routes.opener_for("34020000001320000001"), FeedOpener)
    assert adapter.offline_listeners == [plane.invites.on_device_gone]  # devices going offline end their streams
    assert plane.pool.capacity == (settings.media.port_max - settings.media.port_min + 1) // 2
    counters = plane.counters()
    assert counters["rtp:received"] == 0 and "pool:capacity" in counters
    assert len(added) == 4


# -- issue 10.13: who may feed a session -------------------------------------------------------


async def test_answer_c_line_does_not_admit_a_third_party_host() -> None:
    """The answer names c=127.0.0.3 (NAT garbage, or a hostile third party); RTP with the right
    SSRC from 127.0.0.3 must not reach viewers: only the device's signalling host (127.0.0.1) or
    its whitelisted sources count. Today the c= host was added to the allowed sources."""
    dev = FakeDevice(stream=False, media_ip="127.0.0.3")
    mgr, hub = make(dev)
    hub.ready_timeout = 1.0
    attacker: list[asyncio.Task[Any]] = []
    stop = asyncio.Event()

    async def attack() -> None:
        while not dev.invites:
            await asyncio.sleep(0.01)
        offer = parse_offer(dev.invites[0].body)
        sender = PsRtpSender(ssrc=ssrc_to_int(offer.ssrc or "0"))
        await sender.run_udp(offer.ip, offer.port, stop=stop, local=("127.0.0.3", 0))
    attacker.append(asyncio.create_task(attack()))
    with pytest.raises(StreamTimeout) as info:
        await hub.subscribe(CH, FLV)
    stop.set()
    await asyncio.gather(*attacker)
    steps = [s["step"] for s in info.value.trace[0]["steps"]]
    assert "answer_host_ignored" in steps and "first_rtp" not in steps
    assert "unexpected address" in info.value.trace[0]["diagnosis"]
    await asyncio.sleep(0.1)
    assert mgr.pool.in_use == 0


async def test_stray_stream_aimed_at_the_first_port_and_serial_does_not_take_over() -> None:
    """After a restart a lower platform keeps sending its un-BYEd stream to the first port of the
    range with serial 0001, from the device's own host. The pool now starts at random points, so
    the new session is not that one, and the real camera's RTP is what is latched (today the first
    session got port 35400 / SSRC …0001 and locked onto the stray sender)."""
    dev = FakeDevice(answer_delay=0.1)
    mgr, hub = make(dev)
    mgr.pool = PortPool(35400, 35499, "3402000000")  # a range no other test of this file uses
    stop = asyncio.Event()
    stray = PsRtpSender(ssrc=ssrc_to_int("0" + "3402000000"[3:8] + "0001"), fps=250)  # always first
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stray_port = sock.getsockname()[1]
    sock.close()
    task = asyncio.create_task(stray.run_udp("127.0.0.1", 35400, stop=stop, local=("127.0.0.1", stray_port)))
    await asyncio.sleep(0.1)
    sub = await hub.subscribe(CH, FRAMES)
    got = await frames(sub, 10)
    rtp = hub.snapshot(CH)["rtp"]
    assert got and rtp["source"] != f"127.0.0.1:{stray_port}"
    stop.set()
    await task
    await dev.close()
    await hub.stop()


async def test_tcp_active_connects_only_to_the_device_host_not_the_answer_c_line() -> None:
    """The device listens on 127.0.0.1 but its answer says c=127.0.0.3: we connect to the device's
    signalling host (today: to 127.0.0.3, refused, no stream)."""
    dev = FakeDevice(media_ip="127.0.0.3")
    _mgr, hub = make(dev, mode="tcp-active")
    sub = await hub.subscribe(CH, FRAMES)
    assert await frames(sub, 5)
    steps = [s["step"] for s in hub.snapshot(CH)["trace"][0]["steps"]]
    assert "answer_host_ignored" in steps
    tcp = next(s for s in hub.snapshot(CH)["trace"][0]["steps"] if s["step"] == "tcp_connected")
    assert tcp["peer"].startswith("127.0.0.1:")
    await dev.close()
    await hub.stop()


# -- issue 16.2: both sides active ------------------------------------------------------------------


async def test_setup_active_answer_to_an_active_offer_is_accepted(caplog: pytest.LogCaptureFixture) -> None:
    """We offer a=setup:active; the camera answers a=setup:active too and dials our offer port.
    We listen there since before the INVITE, so the stream plays; the trace and an INFO log say why."""
    dev = FakeDevice(setup_active=True)
    mgr, hub = make(dev, mode="tcp-active")
    with caplog.at_level("INFO", logger="adapters.gb_media"):
        sub = await hub.subscribe(CH, FRAMES)
        assert await frames(sub, 5)
    steps = [s["step"] for s in hub.snapshot(CH)["trace"][0]["steps"]]
    assert "setup_conflict" in steps and "first_keyframe" in steps
    assert mgr.counters["setup_conflict"] == 1
    assert any("setup roles: both active" in r.getMessage() and r.levelname == "INFO" for r in caplog.records)
    await dev.close()
    await hub.stop()


async def test_setup_active_answer_without_a_connection_names_the_cause() -> None:
    dev = FakeDevice(setup_active=True, stream=False)
    mgr, hub = make(dev, mode="tcp-active")
    hub.ready_timeout = 0.5
    with pytest.raises(StreamTimeout) as info:
        await hub.subscribe(CH, FLV)
    assert info.value.trace[0]["diagnosis"].startswith("setup roles: both active")
    await asyncio.sleep(0.1)
    assert mgr.pool.in_use == 0


# -- issue 12.2: unregister while streaming ---------------------------------------------------------


async def test_unregister_while_streaming_sends_bye_ends_viewers_and_never_reinvites() -> None:
    dev = FakeDevice()
    mgr, hub = make(dev, timeout=0.3)
    sub = await hub.subscribe(CH, FRAMES)
    await frames(sub, 3)
    mgr.presence.unregister(DEV, 1.0, OfflineCause.UNREGISTERED)
    mgr.on_device_gone(DEV, "unregistered")
    async with asyncio.timeout(1.0):
        while not dev.byes:
            await asyncio.sleep(0.01)
    assert dev.byes[0].call_id == dev.invites[0].call_id
    rest = [f async for f in sub]
    assert sub.reason == "device_unregistered" and isinstance(rest, list)
    await asyncio.sleep(0.8)  # > media timeout: still no re-INVITE
    assert len(dev.invites) == 1 and mgr.pool.in_use == 0 and hub.get(CH) is None
    with pytest.raises(DeviceUnavailable):
        await hub.subscribe(CH, FLV)
    assert len(dev.invites) == 1
    await dev.close()


async def test_a_stream_key_naming_the_device_invites_that_device_for_the_channel() -> None:
    dev = FakeDevice()
    mgr, hub = make(dev)
    other = "34020000001310000777"  # an ID the repo gives to nobody (or to another device)
    key = stream_key(other, DEV)
    assert split_key(key) == (other, DEV)
    sub = await hub.subscribe(key, FRAMES)
    assert (await frames(sub, 2))[0].keyframe
    inv = dev.invites[0]
    assert inv.uri == f"sip:{other}@127.0.0.1:5062" and (inv.headers.get("Subject") or "").startswith(f"{other}:")
    assert list(mgr._sessions) == [key]
    sub.close()
    await asyncio.sleep(0.4)  # linger 0.1 → BYE, the session leaves by its key
    assert len(dev.byes) == 1 and mgr._sessions == {}
    await dev.close()
    await hub.stop()
