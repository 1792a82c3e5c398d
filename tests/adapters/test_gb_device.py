"""The device adapter end to end over real UDP sockets: admission, bad input, methods, metrics."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.app import Gateway
from gateway.gb import manscdp
from gateway.sip import digest
from gateway.sip.message import Request, Response, parse_message, serialize
from tests.interop.conftest import gateway_settings, whitelist

DEV = "34020000001320000201"
PW = "Gb12345678"


class UdpPhone:
    """A minimal device: one UDP socket, requests built by hand."""

    def __init__(self, gw: Gateway, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.addr = self.sock.getsockname()
        self.server = ("127.0.0.1", gw.sip_port)
        self.cseq = 0
        self.inbox: list[Request] = []

    def close(self) -> None:
        self.sock.close()

    def build(self, method: str, *, device_id: str = DEV, call_id: str = "call-1", body: bytes = b"",
              headers: list[tuple[str, str]] | None = None, branch: str | None = None) -> bytes:
        self.cseq += 1
        lines = [
            f"{method} sip:34020000002000000001@3402000000 SIP/2.0",
            f"Via: SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};rport;branch={branch or f'z9hG4bK{self.cseq}x{id(self)}'}",
            f"From: <sip:{device_id}@3402000000>;tag=t{self.cseq}",
            f"To: <sip:{device_id}@3402000000>",
            f"Call-ID: {call_id}",
            f"CSeq: {self.cseq} {method}",
            "Max-Forwards: 70",
            f"Contact: <sip:{device_id}@{self.addr[0]}:{self.addr[1]}>",
            *(f"{k}: {v}" for k, v in headers or []),
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, data: bytes, timeout: float = 3.0) -> Response:
        loop = asyncio.get_running_loop()
        self.sock.sendto(data, self.server)  # loopback UDP never blocks; uvloop has no sock_sendto
        end = loop.time() + timeout
        while True:
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError("no response")
            raw = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), left)
            msg = parse_message(raw)
            if isinstance(msg, Response):
                return msg
            self.inbox.append(msg)  # a query from the gateway; answer 200 so it does not retransmit
            from gateway.sip.message import make_response

            self.sock.sendto(serialize(make_response(msg, 200, to_tag="dev")), self.server)

    async def send_raw(self, data: bytes, timeout: float = 3.0) -> bytes:
        loop = asyncio.get_running_loop()
        self.sock.sendto(data, self.server)  # loopback UDP never blocks; uvloop has no sock_sendto
        return await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout)

    async def register(self, *, password: str = PW, device_id: str = DEV, expires: int = 3600,
                       call_id: str = "call-1") -> Response:
        first = await self.send(self.build("REGISTER", device_id=device_id, call_id=call_id,
                                           headers=[("Expires", str(expires))]))
        if first.status != 401:
            return first
        auth = digest.authorization(
            first.headers.get("WWW-Authenticate") or "", method="REGISTER",
            uri="sip:34020000002000000001@3402000000", username=device_id, password=password,
        )
        return await self.send(self.build("REGISTER", device_id=device_id, call_id=call_id,
                                          headers=[("Expires", str(expires)), ("Authorization", auth)]))

    async def message(self, body: bytes, *, device_id: str = DEV) -> Response:
        return await self.send(self.build("MESSAGE", device_id=device_id, call_id=f"m{self.cseq}", body=body,
                                          headers=[("Content-Type", "Application/MANSCDP+xml")]))


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_settings(tmp_path, GBGATE_WHITELIST__MAX_FAILURES="3", GBGATE_SIP__QUERY_TIMEOUT="0.5"))
    await g.start()
    yield g
    await g.stop()


@pytest.fixture
def phone(gw: Gateway) -> UdpPhone:  # type: ignore[misc]
    p = UdpPhone(gw)
    yield p
    p.close()


async def test_register_keepalive_unregister(gw: Gateway, phone: UdpPhone) -> None:
    await whitelist(gw, DEV, PW)
    ok = await phone.register()
    assert ok.status == 200
    assert ok.headers.get("Expires") == "3600" and ok.headers.get("Date")
    assert ok.to.tag  # every answer carries a To tag
    ka = await phone.message(manscdp.build_keepalive(DEV, 1))
    assert ka.status == 200
    assert gw.adapter.presence.get(DEV).last_keepalive is not None  # type: ignore[union-attr]
    bye = await phone.register(expires=0)
    assert bye.status == 200
    assert DEV not in gw.adapter.presence  # type: ignore[union-attr]
    assert (await phone.message(manscdp.build_keepalive(DEV, 2))).status == 404  # re-register please


async def test_expires_is_capped_and_required(gw: Gateway, phone: UdpPhone) -> None:
    await whitelist(gw, DEV, PW)
    ok = await phone.register(expires=999999)
    assert ok.status == 200 and ok.headers.get("Expires") == "3600"
    missing = await phone.send(phone.build("REGISTER"))
    assert (missing.status, missing.reason) == (400, "Missing Expires")


async def test_lockout_then_even_right_password_refused(gw: Gateway, phone: UdpPhone) -> None:
    await whitelist(gw, DEV, PW)
    statuses = [(await phone.register(password="bad", call_id=f"c{i}")).status for i in range(3)]
    assert statuses == [403, 403, 403]  # one answer to unproven callers; the third failure locks
    assert gw.adapter.stats["refused:bad_credentials"] == 3  # type: ignore[union-attr]
    assert (await phone.register(call_id="c9")).status == 403
    assert gw.adapter.stats["refused:LOCKED_ID"] >= 1  # type: ignore[union-attr]


async def test_binding_mismatch_is_refused(gw: Gateway, phone: UdpPhone) -> None:
    await whitelist(gw, DEV, PW)
    assert (await phone.register()).status == 200
    other = UdpPhone(gw, host="127.0.0.2")
    try:
        resp = await other.message(manscdp.build_keepalive(DEV, 5))
    finally:
        other.close()
    assert (resp.status, resp.reason) == (404, "Device Not Registered")  # as if not registered at all
    assert gw.adapter.stats["refused:binding_mismatch"] == 1  # type: ignore[union-attr]


async def test_revoke_drops_device_at_once(gw: Gateway, phone: UdpPhone) -> None:
    from whitelist.model import EntryStatus

    await whitelist(gw, DEV, PW)
    assert (await phone.register()).status == 200
    await gw.services.admission.store.set_status(DEV, EntryStatus.REVOKED, actor="test")  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while DEV in gw.adapter.presence and loop.time() - t0 < 2:  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
    assert DEV not in gw.adapter.presence  # type: ignore[union-attr]
    assert loop.time() - t0 < 1.0  # within a second, by the audit feed
    assert (await phone.register(call_id="again")).status == 403


async def test_bad_input_gets_clear_errors_and_metrics(gw: Gateway, phone: UdpPhone) -> None:
    await whitelist(gw, DEV, PW)
    assert (await phone.register()).status == 200
    # hostile XML from a registered device: refused without expansion
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>" + DEV.encode() + b"</DeviceID></Notify>")
    resp = await phone.message(bomb)
    assert resp.status == 400 and "Hostile" in resp.reason
    junk = await phone.message(b"<Notify><CmdType>Keepalive</CmdType>")
    assert junk.status == 400
    # methods
    sub = await phone.send(phone.build("SUBSCRIBE"))
    assert sub.status == 405 and "REGISTER" in (sub.headers.get("Allow") or "")
    weird = await phone.send(phone.build("FROBNICATE"))
    assert weird.status == 501
    # malformed SIP with a usable Via: 400 naming the problem
    broken = phone.build("MESSAGE").replace(b"Call-ID: call-1\r\n", b"")
    bad = await phone.send_raw(broken)
    assert bad.startswith(b"SIP/2.0 400 Missing Call-ID\r\n")  # no Call-ID to copy, so not parseable here
    # garbage without a Via: dropped, counted, and the gateway still answers afterwards
    phone.sock.sendto(b"\x00\xffnot sip at all", phone.server)
    assert (await phone.message(manscdp.build_keepalive(DEV, 9))).status == 200
    async with aiohttp.ClientSession() as http, http.get(f"{gw.http_url}/metrics") as m:
        text = await m.text()
    assert "gbgate_devices_registered 1.0" in text and "gbgate_devices_online 1.0" in text
    assert 'gbgate_sip_requests_total{method="REGISTER"} 2.0' in text
    assert 'gbgate_sip_responses_total{status="405"} 1.0' in text
    assert 'gbgate_sip_parse_errors_total{reason="Missing Call-ID"}' in text
    assert "gbgate_refusals_total" in text


async def test_unknown_device_challenged_then_403(gw: Gateway, phone: UdpPhone) -> None:
    resp = await phone.register(device_id="34020000001320000999")
    assert resp.status == 403
    first = await phone.send(phone.build("REGISTER", device_id="34020000001320000998", headers=[("Expires", "60")]))
    assert first.status == 401  # indistinguishable from a known device until credentials are checked


async def test_keepalive_and_challenge_are_answered_statelessly_alarm_is_not(gw: Gateway, phone: UdpPhone) -> None:
    """Keepalives, registrar challenges and answers to our queries keep no transaction for
    Timer J (RFC 3261 §8.2.7): a retransmission is answered again, with the same To tag. An
    alarm is not idempotent: its retransmission is absorbed by the transaction layer."""
    await whitelist(gw, DEV, PW)
    endpoint = gw.endpoint
    assert endpoint is not None
    first = phone.build("REGISTER", headers=[("Expires", "3600")], branch="z9hG4bKreg-stateless")
    a = await phone.send(first)
    b = await phone.send(first)  # the same datagram again: a retransmission
    assert a.status == b.status == 401
    assert a.to.tag == b.to.tag and a.to.tag
    assert a.headers.get("WWW-Authenticate") != b.headers.get("WWW-Authenticate")  # challenged afresh
    assert (await phone.register()).status == 200
    stateless0 = endpoint.transactions.stats["stateless_responses"]
    live0 = len(endpoint.transactions)
    ka = phone.build("MESSAGE", call_id="ka-1", branch="z9hG4bKka-stateless",
                     headers=[("Content-Type", "Application/MANSCDP+xml")],
                     body=manscdp.build_keepalive(DEV, 7))
    r1 = await phone.send(ka)
    r2 = await phone.send(ka)
    assert r1.status == r2.status == 200 and r1.to.tag == r2.to.tag
    assert endpoint.transactions.stats["stateless_responses"] - stateless0 == 2
    assert len(endpoint.transactions) <= live0  # no Timer J entry for either
    absorbed0 = endpoint.transactions.stats["retransmissions_absorbed"]
    alarm = phone.build("MESSAGE", call_id="al-1", branch="z9hG4bKalarm-stateful",
                        headers=[("Content-Type", "Application/MANSCDP+xml")],
                        body=b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>'
                             b"\r\n<SN>8</SN>\r\n<DeviceID>" + DEV.encode() + b"</DeviceID>\r\n<AlarmPriority>1"
                             b"</AlarmPriority>\r\n<AlarmMethod>5</AlarmMethod>\r\n<AlarmTime>2026-11-27T10:00:00"
                             b"</AlarmTime>\r\n</Notify>\r\n")
    assert (await phone.send(alarm)).status == 200
    assert (await phone.send(alarm)).status == 200
    assert endpoint.transactions.stats["retransmissions_absorbed"] - absorbed0 == 1


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_gb_date_is_beijing_time_to_the_millisecond(ts: float) -> None:
    """The Date of every REGISTER 200 is formatted once a second, then only the milliseconds."""
    from datetime import datetime, timedelta, timezone

    from adapters.gb_device import gb_date

    dt = datetime.fromtimestamp(ts, timezone(timedelta(hours=8)))
    assert gb_date(ts) == dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


async def test_device_control_reaches_the_device(gw: Gateway, phone: UdpPhone) -> None:
    """What the cascade forwards an upper's PTZ through: Control/DeviceControl to the owner, its status back."""
    from gateway.sip.message import make_response

    await whitelist(gw, DEV, PW)
    assert (await phone.register()).status == 200
    loop = asyncio.get_running_loop()

    async def answer_everything() -> None:
        while True:
            msg = parse_message(await loop.sock_recv(phone.sock, 65536))
            if isinstance(msg, Request):
                phone.inbox.append(msg)
                phone.sock.sendto(serialize(make_response(msg, 200, to_tag="dev")), phone.server)

    task = asyncio.create_task(answer_everything())
    try:
        assert gw.adapter is not None
        assert await gw.adapter.device_control(DEV, {"PTZCmd": "A50F010800FA00B7"}) == 200
    finally:
        task.cancel()
    (ctl,) = [m for m in phone.inbox if b"<CmdType>DeviceControl</CmdType>" in m.body]
    assert b"<PTZCmd>A50F010800FA00B7</PTZCmd>" in ctl.body and ctl.to.uri.user == DEV
