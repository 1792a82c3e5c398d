"""Attackers at the SIP-device boundary (issue 10 #3-#7, #9, #15), over real UDP against a real
in-process Gateway. Each test plays the attacker first and would pass the attack on the old code."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.gb import builders
from gateway.gb.items import CatalogItem
from gateway.sip import digest
from gateway.sip.message import Request, Response, make_response, parse_message, serialize
from tests.adapters.test_gb_device import UdpPhone
from tests.interop.conftest import gateway_settings, whitelist

A, PW_A = "34020000001320000301", "Cam-A-pass"
B, PW_B = "34020000001320000302", "Cam-B-pass"
A_CH, B_CH = "34020000001310000301", "34020000001310000302"
URI = "sip:34020000002000000001@3402000000"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_settings(tmp_path, GBGATE_WHITELIST__MAX_FAILURES="3", GBGATE_SIP__QUERY_TIMEOUT="1",
                                 GBGATE_SIP__QUERY_ON_REGISTER="false"))
    await g.start()
    yield g
    await g.stop()


@pytest.fixture
async def phones(gw: Gateway) -> AsyncIterator[tuple[UdpPhone, UdpPhone]]:
    await whitelist(gw, A, PW_A)
    await whitelist(gw, B, PW_B)
    a, b = UdpPhone(gw), UdpPhone(gw)
    assert (await a.register(device_id=A, password=PW_A, call_id="reg-a")).status == 200
    assert (await b.register(device_id=B, password=PW_B, call_id="reg-b")).status == 200
    yield a, b
    a.close()
    b.close()


async def next_request(phone: UdpPhone, timeout: float = 3.0) -> Request:
    """The next request the gateway sends this phone, answered 200."""
    loop = asyncio.get_running_loop()
    while True:
        raw = await asyncio.wait_for(loop.sock_recv(phone.sock, 65536), timeout)
        msg = parse_message(raw)
        if isinstance(msg, Request):
            phone.sock.sendto(serialize(make_response(msg, 200, to_tag="dev")), phone.server)
            return msg


async def answer_catalog(gw: Gateway, phone: UdpPhone, device_id: str, items: list[CatalogItem]) -> None:
    """Run a catalog sync of `device_id`, answering the gateway's query with `items`."""
    assert gw.adapter is not None
    sync = asyncio.create_task(gw.adapter.sync_catalog(device_id))
    query = await next_request(phone)
    sn = int(query.body.split(b"<SN>")[1].split(b"</SN>")[0])
    body = builders.build_catalog_response(device_id, sn, len(items), items)
    assert (await phone.message(body, device_id=device_id)).status == 200
    await asyncio.wait_for(sync, 5)


async def channel_rows(gw: Gateway, device_id: str) -> list[str]:
    assert gw.services is not None
    await gw.services.repo.flush()
    return [c.channel_id for c in await gw.services.repo.list_channels(device_id, include_hidden=True)]


# ------------------------------------------------------------------ item 3: DeviceID and ownership
async def test_catalog_in_another_devices_name_is_refused(gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    """Camera A sends a Catalog Response whose DeviceID is B: refused, B's channels stay B's."""
    a, b = phones
    await answer_catalog(gw, b, B, [CatalogItem(device_id=B_CH, name="B's camera", status="ON")])
    forged = builders.build_catalog_response(B, 77, 1, [CatalogItem(device_id=A_CH, name="hijack", status="ON")])
    resp = await a.message(forged, device_id=A)
    assert resp.status == 403
    assert await channel_rows(gw, B) == [B_CH]
    assert gw.adapter.stats["alarms:alarm_foreign_device_id"] == 1  # type: ignore[union-attr]


async def test_keepalive_in_another_devices_name_is_refused(gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    a, _ = phones
    resp = await a.message(builders.build_keepalive(B, 5), device_id=A)
    assert resp.status == 403
    assert gw.adapter.presence.get(B).last_keepalive is None  # type: ignore[union-attr]


async def test_unsolicited_catalog_sn_is_ignored(gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    a, _ = phones
    pushed = builders.build_catalog_response(A, 4242, 1, [CatalogItem(device_id=A_CH, name="pushed", status="ON")])
    assert (await a.message(pushed, device_id=A)).status == 200
    await asyncio.sleep(0.3)
    assert await channel_rows(gw, A) == []
    assert gw.adapter.stats["refused:unsolicited_catalog"] == 1  # type: ignore[union-attr]


async def test_channel_owned_by_another_device_is_refused_and_alarmed(
        gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    """A lists B's channel (and B's own ID) as its own: both refused, /live/<B_CH> still reaches B."""
    a, b = phones
    await answer_catalog(gw, b, B, [CatalogItem(device_id=B_CH, name="B's camera", status="ON")])
    await answer_catalog(gw, a, A, [CatalogItem(device_id=A_CH, name="mine", status="ON"),
                                     CatalogItem(device_id=B_CH, name="stolen", status="ON"),
                                     CatalogItem(device_id=B, name="B itself", status="ON")])
    adapter = gw.adapter
    assert adapter is not None and gw.media is not None
    assert await channel_rows(gw, A) == [A_CH]
    assert adapter.channel_owner(B_CH) == B
    device_id, _ = await gw.media.invites.resolve(B_CH)
    assert device_id == B
    assert adapter.stats["refused:channel_owned"] == 2
    assert gw.services is not None
    await asyncio.sleep(1.1)  # the adapter's timer writes repeated alarms' counts
    await gw.services.repo.flush()
    alarms = [x for x in await gw.services.repo.alarms() if x.kind == "alarm_channel_conflict"]
    assert len(alarms) == 1 and alarms[0].device_id == A  # the two claims share one alarm (same source)
    assert alarms[0].detail["count"] == 2


async def test_a_pending_claim_on_a_channel_id_does_not_block_its_owner(
        gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    """Someone registers with B's (not yet catalogued) channel ID: it becomes `pending`, which must
    not let it refuse B's channel later, nor take over a channel B already owns."""
    _, b = phones
    squatter = UdpPhone(gw, host="127.0.0.3")
    try:
        assert (await squatter.register(device_id=B_CH, password="guess", call_id="sq")).status == 403
        await asyncio.sleep(0.3)  # the pending entry is written and synced into the policy
        await gw.services.admission.sync()  # type: ignore[union-attr]
        assert gw.adapter.policy.get(B_CH) is not None  # type: ignore[union-attr]
    finally:
        squatter.close()
    await answer_catalog(gw, b, B, [CatalogItem(device_id=B_CH, name="B's camera", status="ON")])
    assert await channel_rows(gw, B) == [B_CH]
    assert gw.adapter.stats["refused:channel_owned"] == 0  # type: ignore[union-attr]


# ------------------------------------------------------------------ item 4: events on own channels only
async def test_vlost_for_another_devices_channel_changes_nothing(
        gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    a, b = phones
    await answer_catalog(gw, b, B, [CatalogItem(device_id=B_CH, name="B's camera", status="ON")])
    await answer_catalog(gw, a, A, [CatalogItem(device_id=A_CH, name="mine", status="ON")])
    health = gw.services.health  # type: ignore[union-attr]
    assert health.state_of(f"channel:{B_CH}").value == "online"
    notify = builders.build_catalog_notify(A, 9, [CatalogItem(device_id=B_CH, event="VLOST"),
                                                  CatalogItem(device_id=A_CH, event="VLOST")])
    assert (await a.message(notify, device_id=A)).status == 200
    await asyncio.sleep(0.2)
    assert health.state_of(f"channel:{B_CH}").value == "online"  # not A's to mark
    assert health.state_of(f"channel:{A_CH}").value == "no_video"  # its own: yes
    assert gw.adapter.stats["refused:foreign_channel_event"] == 1  # type: ignore[union-attr]


# ------------------------------------------------------------------ item 5: binding moves only on REGISTER
async def test_unauthenticated_message_from_another_port_does_not_move_the_binding(
        gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    a, _ = phones
    neighbour = UdpPhone(gw)  # same address (a NAT site), another port
    try:
        resp = await neighbour.message(builders.build_keepalive(A, 3), device_id=A)
    finally:
        neighbour.close()
    assert (resp.status, resp.reason) == (404, "Device Not Registered")
    rec = gw.adapter.presence.get(A)  # type: ignore[union-attr]
    assert (rec.host, rec.port) == a.addr  # the next INVITE still goes to the camera
    # the camera itself, re-registering (authenticated) from a new port, does move it
    moved = UdpPhone(gw)
    try:
        assert (await moved.register(device_id=A, password=PW_A, call_id="reg-a")).status == 200
        assert gw.adapter.presence.get(A).port == moved.addr[1]  # type: ignore[union-attr]
    finally:
        moved.close()


# ------------------------------------------------------------------ item 6: digest replay
async def _captured_register(phone: UdpPhone, device_id: str, password: str, expires: int = 3600) -> str:
    first = await phone.send(phone.build("REGISTER", device_id=device_id, call_id="cap",
                                         headers=[("Expires", str(expires))]))
    auth = digest.authorization(first.headers.get("WWW-Authenticate") or "", method="REGISTER", uri=URI,
                                username=device_id, password=password)
    ok = await phone.send(phone.build("REGISTER", device_id=device_id, call_id="cap",
                                      headers=[("Expires", str(expires)), ("Authorization", auth)]))
    assert ok.status == 200
    return auth


async def test_replayed_authorization_gets_401(gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    """A captured REGISTER Authorization, replayed from another port (also with Expires: 0) and
    from the same port in a new transaction: 401 every time, the camera stays online."""
    a, _ = phones
    auth = await _captured_register(a, A, PW_A)
    attacker = UdpPhone(gw)
    try:
        for expires in ("3600", "0"):
            r = await attacker.send(attacker.build("REGISTER", device_id=A, call_id="cap",
                                                   headers=[("Expires", expires), ("Authorization", auth)]))
            assert r.status == 401, expires
    finally:
        attacker.close()
    again = await a.send(a.build("REGISTER", device_id=A, call_id="cap",
                                 headers=[("Expires", "0"), ("Authorization", auth)]))
    assert again.status == 401  # same source, same (nonce, nc): a replay
    rec = gw.adapter.presence.get(A)  # type: ignore[union-attr]
    assert rec is not None and rec.online and rec.port == a.addr[1]
    assert gw.adapter.stats["auth:replay"] == 1  # type: ignore[union-attr]
    assert gw.adapter.stats["auth:nonce_invalid"] == 2  # type: ignore[union-attr]


async def test_next_nc_on_the_same_nonce_is_accepted(gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    """RFC 7616 nonce reuse with a higher nc stays legal (devices refresh without a new challenge)."""
    a, _ = phones
    first = await a.send(a.build("REGISTER", device_id=A, call_id="nc", headers=[("Expires", "3600")]))
    www = first.headers.get("WWW-Authenticate") or ""
    for nc in (1, 2):
        auth = digest.authorization(www, method="REGISTER", uri=URI, username=A, password=PW_A, nc=nc)
        ok = await a.send(a.build("REGISTER", device_id=A, call_id="nc",
                                  headers=[("Expires", "3600"), ("Authorization", auth)]))
        assert ok.status == 200, nc


# ------------------------------------------------------------------ item 7: alarm flood
async def test_flood_of_bad_messages_makes_one_alarm_with_a_count(
        gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    assert gw.services is not None
    store = gw.services.admission.store
    audit0 = len(await store.audit_records())
    neighbour = UdpPhone(gw, host="127.0.0.2")
    try:
        for i in range(100):
            assert (await neighbour.message(builders.build_keepalive(A, i), device_id=A)).status == 404
    finally:
        neighbour.close()
    await asyncio.sleep(1.1)  # the adapter's timer writes the count (every 0.5 s)
    await gw.services.repo.flush()
    alarms = [x for x in await gw.services.repo.alarms() if x.kind == "alarm_binding_mismatch"]
    assert len(alarms) == 1 and alarms[0].detail["count"] == 100
    records = await store.audit_records()
    assert len(records) - audit0 == 1 and records[-1].action == "alarm_binding_mismatch"


# ------------------------------------------------------------------ item 9: uniform answers
async def test_unproven_callers_get_one_answer(gw: Gateway, phones: tuple[UdpPhone, UdpPhone]) -> None:
    """Unknown ID, approved ID with a wrong password, approved ID from a wrong source: the same
    status and reason; the stats keep the real reasons."""
    fenced = "34020000001320000303"
    await whitelist(gw, fenced, "Fenced-pass", allowed_sources=(ipaddress.ip_network("10.9.9.9/32"),))
    probe = UdpPhone(gw)
    try:
        answers: list[Response] = [
            await probe.register(device_id="34020000001320000399", password="guess", call_id="u"),
            await probe.register(device_id=B, password="wrong", call_id="w"),
            await probe.register(device_id=fenced, password="Fenced-pass", call_id="s"),
        ]
    finally:
        probe.close()
    assert {(r.status, r.reason) for r in answers} == {(403, "Forbidden")}
    assert not any(r.headers.get("WWW-Authenticate") for r in answers)
    stats = gw.adapter.stats  # type: ignore[union-attr]
    assert stats["refused:UNKNOWN_DEVICE"] == 1
    assert stats["refused:bad_credentials"] == 1
    assert stats["refused:SOURCE_NOT_ALLOWED"] == 1


# ------------------------------------------------------------------ item 15: NAT lockout
async def test_one_bad_camera_does_not_lock_out_its_nat_site(gw: Gateway, tmp_path: Path) -> None:
    """max_failures 3: X's three wrong passwords lock X only; Y behind the same address registers.
    Then wrong passwords for three different IDs lock the address, but not for Y, whose live
    binding is that address; a fresh ID from there is refused."""
    ids = [f"3402000000132000040{i}" for i in range(6)]
    for dev in ids:
        await whitelist(gw, dev, "Right-pass")
    x, y, z, w, fresh = ids[:5]
    site = UdpPhone(gw)
    try:
        for i in range(3):
            assert (await site.register(device_id=x, password="bad", call_id=f"x{i}")).status == 403
        assert (await site.register(device_id=y, password="Right-pass", call_id="y")).status == 200
        for dev in (z, w, ids[5]):
            assert (await site.register(device_id=dev, password="bad", call_id=f"b{dev}")).status == 403
        assert (await site.register(device_id=y, password="Right-pass", call_id="y")).status == 200
        assert (await site.register(device_id=fresh, password="Right-pass", call_id="f")).status == 403
    finally:
        site.close()
    stats = gw.adapter.stats  # type: ignore[union-attr]
    # x's 3rd failure locked x; w's failure (third ID: x, z, w) locked the address; ids[5] and
    # fresh were then refused by the source lock, y was not
    assert stats["refused:LOCKED_SOURCE"] == 2 and stats["refused:LOCKED_ID"] == 0
    assert stats["alarms:alarm_lockout"] == 2
