"""A lower platform end to end (issue 14 #2): the station system registers with a platform ID (type
200) through devsim and answers the Catalog query with 3 org nodes and 300 cameras in pages of 4
items. The gateway keeps the org nodes apart, exposes the first 244 (max_channels) and says the rest
are hidden, serves the tree over HTTP, follows ON/OFF notifications, and, when the platform goes,
records one device event and its channels offline with cause platform_offline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from devsim import messages as sim_sip
from devsim.swarm import DeviceSwarm, SimDevice
from gateway.api.auth import Role
from gateway.app import Gateway
from gateway.gb import builders
from gateway.gb.items import CatalogItem
from tests.interop.conftest import gateway_settings, whitelist

PLAT, PW = "34020000002000000101", "Station-pass-1"
BG = "34020000002150000001"
VO = ["34020000002160000001", "34020000002160000002"]
CHANNELS = [f"3402000000131{n:07d}" for n in range(1, 301)]


def platform_catalog() -> list[CatalogItem]:
    nodes = [CatalogItem(device_id=BG, name="客运车站", parent_id=PLAT),
             *(CatalogItem(device_id=v, name=f"站台{i + 1}", parent_id=BG, business_group_id=BG)
               for i, v in enumerate(VO))]
    cams = [CatalogItem(device_id=c, name=f"摄像机{i}", parent_id=VO[i % 2], business_group_id=BG,
                        status="ON", manufacturer="Hik", model="DS-2CD")
            for i, c in enumerate(CHANNELS)]
    return [*nodes[:1], *cams[:150], *nodes[1:], *cams[150:]]  # org nodes anywhere in the pages


async def _until(cond: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.05)


async def test_station_platform_of_300_cameras(tmp_path: Path) -> None:
    gw = Gateway(gateway_settings(tmp_path))
    await gw.start()
    swarm = None
    try:
        assert gw.adapter is not None and gw.services is not None
        calls: list[tuple[str, str, str]] = []
        health = gw.adapter.health
        real = health.set_state

        def spy(subject: str, state: str, cause: str, ts: float, evidence: Any = None) -> Any:
            calls.append((subject, state, cause))
            return real(subject, state, cause, ts, evidence)

        health.set_state = spy  # type: ignore[method-assign]
        await whitelist(gw, PLAT, PW, max_channels=244)
        swarm = DeviceSwarm(server_host="127.0.0.1", server_port=gw.sip_port, media=False,
                            devices=[SimDevice(PLAT, PW, platform_catalog(), model="SIM-PLATFORM")])
        await swarm.start()
        assert (await asyncio.wait_for(swarm.register_all(), 10))["registered"] == 1
        catalog = gw.adapter.catalog
        await _until(lambda: len(catalog.channels_of(PLAT)) == 244)
        repo = gw.services.repo
        await _until(lambda: gw.adapter.stats["catalog:complete"] >= 1)
        await asyncio.sleep(0.3)
        await repo.flush()

        # max_channels counts playable channels only: the first 244 by ID exposed, 56 kept hidden
        rows = await repo.list_channels(PLAT, include_hidden=True)
        assert len(rows) == 300 and {r.channel_id for r in rows} == set(CHANNELS)
        assert sorted(r.channel_id for r in rows if r.exposed) == CHANNELS[:244]
        assert (await repo.channel_counts())[PLAT] == 244
        assert {n.node_id: n.kind for n in await repo.list_nodes(PLAT)} == {
            BG: "business_group", VO[0]: "virtual_org", VO[1]: "virtual_org"}
        events = {e.kind: e.detail for e in await repo.events(PLAT)}
        assert events["channel_limit_exceeded"] == {
            "channels": 300, "exposed": 244, "hidden": 56, "max_channels": 244}
        assert await repo.find_channel(BG) is None  # an org node is never a playable channel

        token = await gw.services.tokens.create(Role.OPS, "t")
        async with (aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http,
                    http.get(f"{gw.http_url}/api/v1/devices/{PLAT}/tree") as resp):
            assert resp.status == 200
            body = await resp.json()
        assert (body["nodes"], body["channels"]) == (3, 300)
        [bg] = body["tree"]["children"]
        assert bg["id"] == BG and [v["id"] for v in bg["children"]] == VO
        assert [len(v["children"]) for v in bg["children"]] == [150, 150]
        assert sum(c["exposed"] for v in bg["children"] for c in v["children"]) == 244

        # the platform's catalog is known: the gateway subscribes to its changes (SUBSCRIBE Catalog)
        await _until(lambda: gw.adapter.stats["subscribe:active"] >= 1, 10)
        sub = gw.adapter.subscriptions.get(PLAT)
        assert sub is not None and sub.to_tag and sub.expires_at is not None

        # per-channel presence from a Catalog NOTIFY of the platform
        st = swarm.by_id[PLAT]
        body_off = builders.build_catalog_notify(PLAT, 5, [CatalogItem(device_id=CHANNELS[0], event="OFF")])
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        branch = sim_sip.new_branch()
        data = sim_sip.message_request(st.local, PLAT, body_off, tag=st.tag, call_id=sim_sip.new_call_id("127.0.0.1"),
                                       cseq=40, branch=branch)
        swarm.request(st, data, branch, lambda status, _r: done.set_result(status))
        assert await asyncio.wait_for(done, 5) == 200
        await _until(lambda: (f"channel:{CHANNELS[0]}", "offline", "notify_off") in calls)
        assert catalog.channels_of(PLAT)[CHANNELS[0]] is False
        await asyncio.sleep(0.1)
        await repo.flush()
        [row] = [r for r in await repo.list_channels(PLAT) if r.channel_id == CHANNELS[0]]
        assert (row.status, row.extra["status"]) == ("OFF", "OFF")

        # the platform leaves: one device event, its 244 channels offline because of it
        calls.clear()
        assert (await asyncio.wait_for(swarm.unregister_all(), 10))["unregistered"] == 1
        await _until(lambda: sum(1 for c in calls if c[0].startswith("channel:")) >= 243)
        device_calls = [c for c in calls if c[0].startswith("device:")]
        assert device_calls == [(f"device:{PLAT}", "offline", "unregistered")]
        channel_calls = [c for c in calls if c[0].startswith("channel:")]
        # the channel already offline by its NOTIFY records no new state; the rest say why
        assert len(channel_calls) == 244 and {c[2] for c in channel_calls} == {"platform_offline"}
        assert health.state_of(f"channel:{CHANNELS[1]}").value == "offline"  # type: ignore[union-attr]
        assert gw.adapter.subscriptions.get(PLAT) is None  # the dialog died with the platform
    finally:
        if swarm is not None:
            await swarm.stop()
        await gw.stop()
