"""A lower platform (type 200) over real UDP: the gateway's SUBSCRIBE Catalog on the wire, and a
NOTIFY (as a SIP NOTIFY, in the dialog) turning a channel off in the ledger and the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.gb import builders
from gateway.gb.items import CatalogItem
from tests.adapters.test_gb_device import UdpPhone
from tests.adapters.test_gb_device_attacks import answer_catalog, next_request
from tests.interop.conftest import gateway_settings, whitelist

PLAT, PW = "34020000002000000301", "Plat-pass-1"
CH = ["34020000001310000311", "34020000001310000312"]
VO = "34020000002160000301"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_settings(tmp_path, GBGATE_SIP__QUERY_TIMEOUT="1", GBGATE_SIP__QUERY_ON_REGISTER="false"))
    await g.start()
    yield g
    await g.stop()


async def test_subscribe_catalog_and_notify_in_the_dialog(gw: Gateway) -> None:
    assert gw.adapter is not None and gw.services is not None
    await whitelist(gw, PLAT, PW)
    phone = UdpPhone(gw)
    try:
        assert (await phone.register(device_id=PLAT, password=PW)).status == 200
        items = [CatalogItem(device_id=VO, name="站台"),
                 *(CatalogItem(device_id=c, name=c[-2:], parent_id=VO, status="ON") for c in CH)]
        await answer_catalog(gw, phone, PLAT, items)
        gw.adapter._catalog_synced(PLAT)  # what the post-login sync does for a platform
        sub = await next_request(phone)  # answered 200 without Expires: the asked time is granted
        assert sub.method == "SUBSCRIBE" and sub.uri.startswith(f"sip:{PLAT}@")
        assert (sub.headers.get("Event") or "").startswith("Catalog;id=")
        assert sub.headers.get("Expires") == "3600" and sub.headers.get("Contact")
        assert b"<CmdType>Catalog</CmdType>" in sub.body and f"<DeviceID>{PLAT}</DeviceID>".encode() in sub.body
        for _ in range(40):
            if gw.adapter.stats["subscribe:active"]:
                break
            await asyncio.sleep(0.05)
        state = gw.adapter.subscriptions.get(PLAT)
        assert state is not None and state.state.value == "active" and state.to_tag == "dev"

        # the platform's NOTIFY in that dialog: channel 1 goes OFF
        body = builders.build_catalog_notify(PLAT, 7, [CatalogItem(device_id=CH[0], event="OFF")])
        notify = phone.build("NOTIFY", device_id=PLAT, call_id=sub.call_id, body=body,
                             headers=[("Event", sub.headers.get("Event") or ""),
                                      ("Subscription-State", "active;expires=3599"),
                                      ("Content-Type", "Application/MANSCDP+xml")])
        assert (await phone.send(notify)).status == 200
        health = gw.services.health
        for _ in range(40):
            if health.state_of(f"channel:{CH[0]}").value == "offline":  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.05)
        assert health.state_of(f"channel:{CH[0]}").value == "offline"  # type: ignore[union-attr]
        assert health.state_of(f"channel:{CH[1]}").value == "online"  # type: ignore[union-attr]
        await asyncio.sleep(0.1)
        await gw.services.repo.flush()
        rows = {r.channel_id: r.status for r in await gw.services.repo.list_channels(PLAT)}
        assert rows == {CH[0]: "OFF", CH[1]: "ON"}
        assert [n.node_id for n in await gw.services.repo.list_nodes(PLAT)] == [VO]
    finally:
        phone.close()


async def test_max_channels_counts_channels_not_org_nodes_and_says_so_once(gw: Gateway) -> None:
    assert gw.adapter is not None and gw.services is not None
    await whitelist(gw, PLAT, PW, max_channels=2)
    phone = UdpPhone(gw)
    try:
        assert (await phone.register(device_id=PLAT, password=PW)).status == 200
        groups = [CatalogItem(device_id=f"3402000000216000030{i}", name=f"g{i}") for i in range(5)]
        three = [CatalogItem(device_id=f"3402000000131000032{i}", status="ON") for i in range(3)]
        await answer_catalog(gw, phone, PLAT, [*groups, *three])
        await answer_catalog(gw, phone, PLAT, [*groups, *three])  # unchanged: no second event
        repo = gw.services.repo
        await repo.flush()
        rows = await repo.list_channels(PLAT, include_hidden=True)
        assert sorted((r.channel_id, r.exposed) for r in rows) == [
            (three[0].device_id, True), (three[1].device_id, True), (three[2].device_id, False)]
        assert len(await repo.list_nodes(PLAT)) == 5
        kinds = [e.kind for e in await repo.events(PLAT)]
        assert kinds.count("channel_limit_exceeded") == 1
        await answer_catalog(gw, phone, PLAT, [*groups, *three[:2]])  # back within the limit
        await repo.flush()
        events = await repo.events(PLAT)
        assert events[0].kind in ("channel_limit_ok", "catalog_changed")
        assert [e.kind for e in events].count("channel_limit_ok") == 1
    finally:
        phone.close()


async def test_channel_ranges_keep_out_other_ids_say_so_once_per_sync_and_refuse_their_play(gw: Gateway) -> None:
    """Entry: ranges …0321-…0322 and the single …0325 (issue 14 #2). The platform lists five
    channels …0321..…0325 plus a group. Hand: stored/exposed = 0321, 0322, 0325 (0323, 0324 not
    stored at all, not merely hidden); one `channel_out_of_range` event per sync with count 2 and
    both IDs as the sample; a play for 0323 is refused (403 not_admitted) naming the platform."""
    from gateway.media.errors import NotAdmitted

    assert gw.adapter is not None and gw.services is not None and gw.media is not None
    ids = [f"3402000000131000032{i}" for i in range(1, 6)]
    await whitelist(gw, PLAT, PW, channel_ranges=f"{ids[0]}-{ids[1]},{ids[4]}")
    phone = UdpPhone(gw)
    try:
        assert (await phone.register(device_id=PLAT, password=PW)).status == 200
        items = [CatalogItem(device_id=VO, name="站台"), *(CatalogItem(device_id=c, status="ON") for c in ids)]
        await answer_catalog(gw, phone, PLAT, items)
        repo = gw.services.repo
        await repo.flush()
        rows = await repo.list_channels(PLAT, include_hidden=True)
        assert sorted((r.channel_id, r.exposed) for r in rows) == [(ids[0], True), (ids[1], True), (ids[4], True)]
        events = [e for e in await repo.events(PLAT) if e.kind == "channel_out_of_range"]
        assert len(events) == 1
        detail = events[0].detail
        assert (detail["count"], detail["sample"], detail["kept"]) == (2, [ids[2], ids[3]], 3)
        assert detail["channel_ranges"] == f"{ids[0]}-{ids[1]},{ids[4]}"
        assert gw.adapter.stats["refused:channel_out_of_range"] == 2
        assert set(gw.adapter.catalog.channels_of(PLAT)) == {ids[0], ids[1], ids[4]}
        with pytest.raises(NotAdmitted) as info:
            await gw.media.invites.resolve(ids[2])
        assert info.value.status == 403 and PLAT in str(info.value)
        device_id, _ = await gw.media.invites.resolve(ids[4])
        assert device_id == PLAT
        await answer_catalog(gw, phone, PLAT, items)  # the next sync: one more event, not two
        await repo.flush()
        assert [e.kind for e in await repo.events(PLAT)].count("channel_out_of_range") == 2
        # the security team narrows the ranges: …0325, already stored, can no longer be played
        await whitelist(gw, PLAT, PW, channel_ranges=f"{ids[0]}-{ids[1]}")
        with pytest.raises(NotAdmitted):
            await gw.media.invites.resolve(ids[4])
        assert (await gw.media.invites.resolve(ids[0]))[0] == PLAT
    finally:
        phone.close()
