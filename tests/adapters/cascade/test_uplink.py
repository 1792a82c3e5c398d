"""CascadeUplink with an in-memory endpoint: register/keepalive driven by the core, the upper's
requests through the router's sender table, paced Catalog answers, refusals audited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from adapters.cascade.answers import Channel
from adapters.cascade.registration import StateChanged, UplinkConfig, UplinkState
from adapters.cascade.uplink import CascadeUplink, UplinkOptions
from gateway.gb import builders, manscdp
from gateway.gb.items import CatalogItem
from gateway.sip import digest
from gateway.sip.errors import SipTimeout
from gateway.sip.events import Peer
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.router import SipRouter

UPPER = "44000000002000000001"
US = "44010600002000000001"
PW = "cascade-secret"
UPPER_PEER = Peer("udp", "127.0.0.1", 5070)


class FakeEndpoint:
    """Answers our requests with `script(request)` (None: time out) and keeps what we answered."""

    def __init__(self, script: Callable[[Request], int | Response | None]) -> None:
        self.script = script
        self.sent: list[Request] = []
        self.responses: list[Response] = []

    async def request(self, request: Request, peer: Peer, *, timeout: float | None = None) -> Response:
        self.sent.append(request)
        await asyncio.sleep(0)
        out = self.script(request)
        if out is None:
            await asyncio.sleep(min(timeout or 0.05, 0.05))
            raise SipTimeout("no answer")
        return out if isinstance(out, Response) else make_response(request, out, to_tag="u")

    def respond(self, key: Hashable, response: Response, *, stateless: bool = False) -> None:
        self.responses.append(response)


class Directory:
    def __init__(self, items: Sequence[CatalogItem]) -> None:
        self.items = items

    async def admitted_channels(self) -> Sequence[Channel]:
        return [Channel("44010600001320000001", i) for i in self.items]


class Ledger:
    def __init__(self) -> None:
        self.states: list[tuple[str, str, str]] = []

    def set_state(self, subject: str, state: str, cause: str, ts: float,
                  evidence: Mapping[str, Any] | None = None) -> None:
        self.states.append((subject, state, cause))


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def audit_event(self, action: str, device_id: str, details: Mapping[str, Any], reason: str) -> None:
        self.events.append((action, device_id, reason))


def upper_script(request: Request) -> int | Response:
    """A well-behaved upper: challenge, then check the digest; 200 to every MESSAGE."""
    if request.method != "REGISTER":
        return 200
    auth = request.headers.get("Authorization")
    if auth is None:
        return make_response(request, 401, to_tag="u", headers=[
            ("WWW-Authenticate", digest.challenge("4400000000", "nonce1"))])
    creds = digest.parse_credentials(auth)
    return 200 if digest.verify(creds, "REGISTER", digest.ha1("MD5", US, "4400000000", PW)) else 403


def config(**kw: Any) -> UplinkConfig:
    base: dict[str, Any] = dict(
        upper_id=UPPER, upper_domain="4400000000", upper_host="127.0.0.1", upper_port=5070, transport="udp",
        our_id=US, our_domain="4401060000", contact=f"<sip:{US}@127.0.0.1:5060>", user_agent="gbgate-test",
        password=PW, keepalive_interval=0.05, retry_interval=0.05,
    )
    base.update(kw)
    return UplinkConfig(**base)


def channels(n: int) -> list[CatalogItem]:
    return [CatalogItem(device_id=f"4401060000131000{i:04d}", name=f"cam {i}", status="ON") for i in range(n)]


class Devices:
    def __init__(self) -> None:
        self.controls: list[tuple[str, dict[str, str]]] = []

    async def device_control(self, channel_id: str, fields: dict[str, str]) -> int:
        self.controls.append((channel_id, fields))
        return 200


def make(script: Callable[[Request], int | Response | None] = upper_script, items: int = 3,
         control: Devices | None = None, **opts: Any) -> tuple[CascadeUplink, FakeEndpoint, Ledger, Audit, SipRouter]:
    endpoint, ledger, audit, router = FakeEndpoint(script), Ledger(), Audit(), SipRouter()
    router.bind(endpoint)
    uplink = CascadeUplink(config=config(), options=UplinkOptions(**opts), endpoint=endpoint,
                           directory=Directory(channels(items)), health=ledger, audit=audit, clock=lambda: 1e9,
                           control=control)
    uplink.install(router)
    return uplink, endpoint, ledger, audit, router


def from_upper(root: str, cmd: str, sn: int = 11, device_id: str = US, extra: str = "") -> Request:
    body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<{root}>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n'
            f"<DeviceID>{device_id}</DeviceID>\r\n{extra}</{root}>\r\n").encode()
    head = (f"MESSAGE sip:{US}@4401060000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKq{sn}\r\n"
            f"From: <sip:{UPPER}@4400000000>;tag=up\r\nTo: <sip:{US}@4401060000>\r\nCall-ID: q{sn}\r\n"
            f"CSeq: 1 MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n")
    msg = parse_message(head.encode() + body)
    assert isinstance(msg, Request)
    return msg


async def wait_for(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_registers_with_digest_goes_online_and_keeps_alive() -> None:
    uplink, endpoint, ledger, _, _ = make()
    await uplink.start()
    try:
        await wait_for(lambda: sum(r.method == "MESSAGE" for r in endpoint.sent) >= 2)
        assert [r.method for r in endpoint.sent[:2]] == ["REGISTER", "REGISTER"]
        assert uplink.state is UplinkState.ONLINE
        assert ledger.states == [(f"cascade:{UPPER}", "online", "registered")]
        ka = manscdp.parse(next(r for r in endpoint.sent if r.method == "MESSAGE").body)
        assert (ka.cmd_type, ka.device_id) == ("Keepalive", US)
        assert uplink.shares("44010600001310000000")  # looked up when it went online
    finally:
        await uplink.stop()
    assert endpoint.sent[-1].method == "REGISTER" and endpoint.sent[-1].headers.get("Expires") == "0"
    assert ledger.states[-1] == (f"cascade:{UPPER}", "offline", "stopped")


async def test_keepalive_failures_are_recorded_offline_in_the_ledger() -> None:
    uplink, _, ledger, _, _ = make(lambda r: upper_script(r) if r.method == "REGISTER" else None)
    await uplink.start()
    try:
        await wait_for(lambda: ("offline" in [s for _, s, _ in ledger.states]))
        assert ledger.states[:2] == [(f"cascade:{UPPER}", "online", "registered"),
                                     (f"cascade:{UPPER}", "offline", "keepalive_timeout")]
        await wait_for(lambda: ledger.states[-1][1] == "online")  # re-registered after the back-off
    finally:
        await uplink.stop()


async def test_catalog_query_is_answered_200_then_one_page_per_item() -> None:
    uplink, endpoint, _, _, router = make(items=3, platform_item=False)
    router.on_request(from_upper("Query", "Catalog", sn=77), UPPER_PEER, "k")
    assert [r.status for r in endpoint.responses] == [200]
    await wait_for(lambda: uplink.stats["catalog:answered"] == 1)
    pages = [manscdp.catalog_response(manscdp.parse(r.body)) for r in endpoint.sent]
    assert [(p.sn, p.device_id, p.sum_num, len(p.items)) for p in pages] == [(77, US, 3, 1)] * 3
    assert all(r.to.uri.user == UPPER and r.from_.uri.user == US for r in endpoint.sent)
    assert uplink.shares(pages[0].items[0].device_id) and not uplink.shares("44010600001310009999")
    await uplink.stop()


async def test_catalog_stops_on_an_error_response_and_paces_when_unanswered() -> None:
    answers = iter([200, 500, 200, 200])
    uplink, endpoint, _, _, router = make(lambda r: next(answers), items=4, platform_item=False)
    router.on_request(from_upper("Query", "Catalog"), UPPER_PEER, "k")
    await wait_for(lambda: uplink.stats["catalog:answered"] == 1)
    assert len(endpoint.sent) == 2 and uplink.stats["catalog:stopped_on_error"] == 1

    uplink2, endpoint2, _, _, router2 = make(lambda r: None, items=3, catalog_wait=0.02, catalog_spacing=0.01,
                                          platform_item=False)
    router2.on_request(from_upper("Query", "Catalog"), UPPER_PEER, "k")
    await wait_for(lambda: uplink2.stats["catalog:answered"] == 1)
    assert len(endpoint2.sent) == 3 and uplink2.stats["catalog:paced"] == 1
    await uplink.stop()
    await uplink2.stop()


async def test_device_info_and_status_about_our_platform() -> None:
    uplink, endpoint, _, _, router = make(items=2, name="gw-1")
    router.on_request(from_upper("Query", "DeviceInfo", sn=5), UPPER_PEER, "k1")
    router.on_request(from_upper("Query", "DeviceStatus", sn=6), UPPER_PEER, "k2")
    await wait_for(lambda: len(endpoint.sent) == 2)
    bodies = {m.cmd_type: m for m in (manscdp.parse(r.body) for r in endpoint.sent)}
    info = manscdp.device_info(bodies["DeviceInfo"])
    assert (info.sn, info.device_id, info.name, info.channel_count) == (5, US, "gw-1", 2)
    assert bodies["DeviceStatus"].sn == 6 and bodies["DeviceStatus"].get("Online") == "ONLINE"
    await uplink.stop()


async def test_control_is_refused_counted_and_audited() -> None:
    uplink, endpoint, _, audit, router = make()
    reboot = from_upper("Control", "DeviceControl", device_id="44010600001310000001",
                        extra="<TeleBoot>Boot</TeleBoot>\r\n")
    router.on_request(reboot, UPPER_PEER, "k")
    await wait_for(lambda: bool(audit.events))
    assert [r.status for r in endpoint.responses] == [403] and endpoint.sent == []
    assert audit.events == [("cascade_control_refused", UPPER, "control_refused:DeviceControl")]
    assert uplink.stats["refused:control_refused:DeviceControl"] == 1
    await uplink.stop()


async def test_stop_lets_an_audit_write_in_flight_finish() -> None:
    """A refusal audited just before shutdown is written, not cancelled with the other tasks."""

    class SlowAudit(Audit):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def audit_event(self, action: str, device_id: str, details: Mapping[str, Any], reason: str) -> None:
            await self.release.wait()
            await super().audit_event(action, device_id, details, reason)

    uplink, _, _, _, router = make()
    uplink.audit = audit = SlowAudit()
    router.on_request(from_upper("Query", "Catalog"), Peer("udp", "192.0.2.66", 5060), "k")
    stopping = asyncio.create_task(uplink.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # still writing the audit record
    audit.release.set()
    await asyncio.wait_for(stopping, 5)
    assert [e[0] for e in audit.events] == ["cascade_spoofed_upper"]


async def test_a_request_naming_the_upper_from_another_address_is_refused() -> None:
    uplink, endpoint, _, audit, router = make()
    router.on_request(from_upper("Query", "Catalog"), Peer("udp", "192.0.2.66", 5060), "k")
    await wait_for(lambda: bool(audit.events))
    assert [r.status for r in endpoint.responses] == [403] and endpoint.sent == []
    assert audit.events[0][0] == "cascade_spoofed_upper" and uplink.stats["refused:not_from_upper"] == 1
    await uplink.stop()


async def test_devices_keep_their_messages() -> None:
    """The sender table takes only the upper's ID: a camera's MESSAGE still reaches the device adapter."""
    uplink, endpoint, _, _, router = make()
    seen: list[str] = []
    router.add_method("MESSAGE", lambda r, p, k: seen.append(r.from_.uri.user or ""))
    camera = parse_message(serialize_keepalive())
    assert isinstance(camera, Request)
    router.on_request(camera, Peer("udp", "192.0.2.5", 5060), "k")
    assert seen == ["34020000001320000001"] and endpoint.responses == []
    await uplink.stop()


def serialize_keepalive() -> bytes:
    body = builders.build_keepalive("34020000001320000001", 1)
    return (f"MESSAGE sip:{US}@4401060000 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKc\r\n"
            f"From: <sip:34020000001320000001@3402000000>;tag=c\r\nTo: <sip:{US}@4401060000>\r\nCall-ID: c\r\n"
            f"CSeq: 1 MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


async def test_ptz_for_a_shared_channel_is_forwarded_when_the_upper_may() -> None:
    devices = Devices()
    uplink, endpoint, _, audit, router = make(control=devices, ptz=True, items=2)
    await uplink.shared_items()
    shared = "44010600001310000001"
    router.on_request(from_upper("Control", "DeviceControl", device_id=shared,
                                 extra="<PTZCmd>A50F010800FA00B7</PTZCmd>\r\n"), UPPER_PEER, "k1")
    router.on_request(from_upper("Control", "DeviceControl", device_id="44010600001310000099",
                                 extra="<PTZCmd>A50F010800FA00B7</PTZCmd>\r\n"), UPPER_PEER, "k2")
    await wait_for(lambda: bool(devices.controls))
    assert devices.controls == [(shared, {"PTZCmd": "A50F010800FA00B7"})]
    assert [r.status for r in endpoint.responses] == [200, 404] and audit.events == []
    assert uplink.stats["ptz:forwarded"] == 1
    await uplink.stop()


async def test_a_subscribed_upper_hears_channel_changes_in_notifies_until_it_goes_offline() -> None:
    from tests.adapters.cascade.test_subscription import subscribe

    uplink, endpoint, _, _, router = make(items=2)
    await uplink.start()
    try:
        await wait_for(lambda: uplink.state is UplinkState.ONLINE and uplink.shares("44010600001310000001"))
        request, _ = subscribe(3600)
        router.on_request(request, UPPER_PEER, "s")
        ok = endpoint.responses[-1]
        assert ok.status == 200 and ok.headers.get("Expires") == "3600" and b"<Result>OK</Result>" in ok.body
        assert uplink.stats["subscribe:subscribed"] == 1
        dev = "44010600001320000001"
        now = [Channel(dev, CatalogItem(device_id="44010600001310000000", name="cam 0", status="OFF")),
               Channel(dev, CatalogItem(device_id="44010600001310000007", name="new", status="ON"))]
        changes = uplink.channels_changed(now)
        assert [(c.device_id, c.event) for c in changes] == [
            ("44010600001310000000", "OFF"), ("44010600001310000001", "DEL"), ("44010600001310000007", "ADD")]
        await wait_for(lambda: uplink.stats["notify:answered:200"] == 1)
        (notify,) = [r for r in endpoint.sent if r.method == "NOTIFY"]
        assert notify.call_id == "sub1" and notify.headers.get("Event") == "Catalog;id=4821"
        assert notify.body.count(b"<Event>") == 3 and b"<SumNum>3</SumNum>" in notify.body
        assert not uplink.shares("44010600001310000001") and uplink.shares("44010600001310000007")
        assert uplink.channels_changed(now) == []  # nothing new: no NOTIFY
        uplink._state_changed(StateChanged(UplinkState.OFFLINE, "keepalive_timeout"))
        assert len(uplink.subscriptions) == 0 and uplink.stats["subscribe:dropped_offline"] == 1
    finally:
        await uplink.stop()


async def test_a_catalog_answer_starts_with_our_platform_item_and_only_channels_are_playable() -> None:
    uplink, endpoint, _, _, router = make(items=2, name="gw-1")
    router.on_request(from_upper("Query", "Catalog", sn=5), UPPER_PEER, "k")
    await wait_for(lambda: uplink.stats["catalog:answered"] == 1)
    pages = [manscdp.catalog_response(manscdp.parse(r.body)) for r in endpoint.sent]
    assert [p.sum_num for p in pages] == [3] * 3
    root = pages[0].items[0]
    assert (root.device_id, root.name, root.parent_id) == (US, "gw-1", None)
    assert [p.items[0].parent_id for p in pages[1:]] == [US, US]
    assert not uplink.shares(US) and uplink.shares(pages[1].items[0].device_id)
    await uplink.stop()
