"""Issue 14 #2: a lower platform's Catalog NOTIFY ADD/DEL/UPDATE is applied to what the gateway
holds, without querying the whole catalog again; org-node changes still re-query. The platform is
the device simulator (devsim) speaking SIP over UDP to a real gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from devsim import messages as sim_sip
from devsim.swarm import DeviceSwarm, SimDevice
from gateway.app import Gateway
from gateway.gb import builders
from gateway.gb.items import CatalogItem
from tests.interop.conftest import gateway_settings, whitelist
from tests.interop.test_lower_platform import _until

PLAT, PW = "34020000002000000151", "Station-pass-2"
VO = "34020000002160000151"
CH = [f"3402000000131{n:07d}" for n in range(151, 162)]  # CH[10] is the one added later
OUT = "34020000001319999999"  # outside the entry's ranges


async def _notify(swarm: DeviceSwarm, items: list[CatalogItem], sn: int) -> int:
    st = swarm.by_id[PLAT]
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    branch = sim_sip.new_branch()
    body = builders.build_catalog_notify(PLAT, sn, items)
    data = sim_sip.message_request(st.local, PLAT, body, tag=st.tag, call_id=sim_sip.new_call_id("127.0.0.1"),
                                   cseq=40 + sn, branch=branch)
    swarm.request(st, data, branch, lambda status, _r: done.set_result(status))
    return await asyncio.wait_for(done, 5)


async def test_notify_add_del_update_applied_without_a_requery(tmp_path: Path) -> None:
    """Hand: the platform lists CH[0..9] under VO. One NOTIFY: ADD CH[10] (新增, ON), DEL CH[1],
    UPDATE CH[2] (name 改名), ADD OUT. After it: channels CH[0], CH[2..10] (10), CH[1] gone from
    the store and offline `removed_from_catalog`, CH[2] renamed, CH[10] online; OUT not stored and
    one channel_out_of_range event; ONE catalog_changed event (added 1, updated 1, removed 1);
    still exactly one complete catalog query. Then an ADD of an org node re-queries (2)."""
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
        await whitelist(gw, PLAT, PW, channel_ranges=f"{CH[0]}-{CH[10]}")
        items = [CatalogItem(device_id=VO, name="站台", parent_id=PLAT),
                 *(CatalogItem(device_id=c, name=f"cam{i}", parent_id=VO, status="ON") for i, c in enumerate(CH[:10]))]
        swarm = DeviceSwarm(server_host="127.0.0.1", server_port=gw.sip_port, media=False,
                            devices=[SimDevice(PLAT, PW, items, model="SIM-PLATFORM")])
        await swarm.start()
        assert (await asyncio.wait_for(swarm.register_all(), 10))["registered"] == 1
        catalog, stats, repo = gw.adapter.catalog, gw.adapter.stats, gw.services.repo
        await _until(lambda: stats["catalog:complete"] >= 1 and len(catalog.channels_of(PLAT)) == 10)
        await asyncio.sleep(0.3)
        calls.clear()

        changes = [CatalogItem(device_id=CH[10], name="新增", parent_id=VO, status="ON", event="ADD"),
                   CatalogItem(device_id=CH[1], event="DEL"),
                   CatalogItem(device_id=CH[2], name="改名", parent_id=VO, status="ON", event="UPDATE"),
                   CatalogItem(device_id=OUT, name="越界", parent_id=VO, status="ON", event="ADD")]
        assert await _notify(swarm, changes, 7) == 200
        await _until(lambda: stats["catalog:notify_applied"] == 1)
        assert sorted(catalog.channels_of(PLAT)) == [CH[0], *CH[2:11]]
        await asyncio.sleep(0.1)
        await repo.flush()
        rows = {r.channel_id: r for r in await repo.list_channels(PLAT, include_hidden=True)}
        assert sorted(rows) == [CH[0], *CH[2:11]]
        assert (rows[CH[2]].name, rows[CH[10]].name, rows[CH[10]].status) == ("改名", "新增", "ON")
        events = await repo.events(PLAT)
        changed = [e.detail for e in events if e.kind == "catalog_changed" and e.detail.get("notify")]
        assert changed == [{"added": 1, "updated": 1, "removed": 1, "complete": False, "notify": True}]
        [oor] = [e.detail for e in events if e.kind == "channel_out_of_range"]
        assert (oor["count"], oor["sample"]) == (1, [OUT])
        assert (f"channel:{CH[1]}", "offline", "removed_from_catalog") in calls
        assert (f"channel:{CH[10]}", "online", "catalog") in calls
        assert stats["catalog:complete"] == 1  # no re-query of the whole catalog

        # an org node changes: the tree is learned whole again
        assert await _notify(swarm, [CatalogItem(device_id="34020000002160000152", name="新站台",
                                                 parent_id=PLAT, event="ADD")], 8) == 200
        await _until(lambda: stats["catalog:complete"] == 2)
        assert stats["catalog:notify_applied"] == 1
    finally:
        if swarm is not None:
            await swarm.stop()
        await gw.stop()


async def test_notify_del_under_max_channels_requeries_and_unknown_del_is_ignored(tmp_path: Path) -> None:
    """max_channels 3 over CH[0..4]: CH[0..2] exposed, CH[3], CH[4] hidden. A DEL of CH[9] (never
    listed) changes nothing and queries nothing. A DEL of CH[0] would expose CH[3], whose status
    only a full query gives: the catalog is queried again (complete 1 → 2), nothing applied."""
    gw = Gateway(gateway_settings(tmp_path))
    await gw.start()
    swarm = None
    try:
        assert gw.adapter is not None and gw.services is not None
        await whitelist(gw, PLAT, PW, max_channels=3)
        items = [CatalogItem(device_id=c, name=f"cam{i}", status="ON") for i, c in enumerate(CH[:5])]
        swarm = DeviceSwarm(server_host="127.0.0.1", server_port=gw.sip_port, media=False,
                            devices=[SimDevice(PLAT, PW, items, model="SIM-PLATFORM")])
        await swarm.start()
        assert (await asyncio.wait_for(swarm.register_all(), 10))["registered"] == 1
        catalog, stats = gw.adapter.catalog, gw.adapter.stats
        await _until(lambda: stats["catalog:complete"] >= 1 and len(catalog.channels_of(PLAT)) == 3)
        assert await _notify(swarm, [CatalogItem(device_id=CH[9], event="DEL")], 9) == 200
        await asyncio.sleep(0.3)
        assert (stats["catalog:complete"], stats["catalog:notify_applied"]) == (1, 0)
        assert sorted(catalog.channels_of(PLAT)) == CH[:3]
        assert await _notify(swarm, [CatalogItem(device_id=CH[0], event="DEL")], 10) == 200
        await _until(lambda: stats["catalog:complete"] == 2)
        assert stats["catalog:notify_applied"] == 0
    finally:
        if swarm is not None:
            await swarm.stop()
        await gw.stop()
