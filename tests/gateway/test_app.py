"""The composition root: planes report their own status on /healthz, and a failed start unwinds."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import native
from gateway.app import Gateway
from gateway.app.cascade import AdmittedChannels, ChangeFeed, ChangeTap, Debounce
from gateway.app.sip_sendbatch import SendBatch
from gateway.app.status import ComponentStatus
from gateway.gb.items import CatalogItem
from gateway.health.rules import NoVideoRule
from gateway.health.timeline import State
from tests.interop.conftest import gateway_settings

COMPONENTS = ("database", "sip", "health_journal", "media", "scheduler")


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_settings(tmp_path))
    await g.start()
    yield g
    await g.stop()


async def _healthz(gw: Gateway) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{gw.http_url}/healthz") as resp:
        return resp.status, await resp.json()


async def test_healthz_reports_every_plane_ok(gw: Gateway) -> None:
    status, body = await _healthz(gw)
    assert status == 200 and body["status"] == "ok"
    assert body["components"] == dict.fromkeys(COMPONENTS, "ok")
    assert gw.http_port != 0  # the bound port, not the configured 0
    # which hot-path modules this process runs compiled (gateway/native.py), for operators
    assert body["native"] == native.summary().as_json() and body["native"]["of"] == len(native.MODULES)


async def test_one_process_answers_udp_through_sendmmsg(gw: Gateway) -> None:
    """In one process, as in a SIP worker, a loop pass's UDP answers leave in one sendmmsg
    (gateway/app/sip_sendbatch.py): an OPTIONS is answered, through the batch."""
    assert gw.endpoint is not None and gw.endpoint.udp_port
    batch = gw.endpoint.udp_sendto.__self__  # type: ignore[union-attr]
    assert isinstance(batch, SendBatch) and batch.batched
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua:
        ua.bind(("127.0.0.1", 0))
        ua.setblocking(False)
        port = ua.getsockname()[1]
        ua.sendto((f"OPTIONS sip:34020000002000000001@127.0.0.1 SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-opt1\r\n"
                   f"From: <sip:34020000001110000001@127.0.0.1>;tag=a1\r\n"
                   f"To: <sip:34020000002000000001@127.0.0.1>\r\nCall-ID: opt-1\r\nCSeq: 1 OPTIONS\r\n"
                   f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", gw.endpoint.udp_port))
        answer = await asyncio.wait_for(loop.sock_recv(ua, 4096), 5)
    assert answer.startswith(b"SIP/2.0 200 ") and b"Call-ID: opt-1" in answer
    assert batch.sent_batches >= 1


async def test_a_stopped_component_shows_not_ok(gw: Gateway) -> None:
    assert gw.services is not None and gw.media is not None
    await gw.services.reports.scheduler.stop()
    status, body = await _healthz(gw)
    assert status == 503 and body["status"] == "degraded"
    assert body["components"]["scheduler"] == "stopped"
    assert body["components"]["database"] == "ok"
    await gw.media.hub.stop()
    _, body = await _healthz(gw)
    assert body["components"]["media"] == "stopped"


async def test_a_failed_start_unwinds_the_planes_already_started(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        g = Gateway(gateway_settings(tmp_path, GBGATE_HTTP__HOST="127.0.0.1",
                                     GBGATE_HTTP__PORT=str(taken.getsockname()[1])))
        with pytest.raises(OSError):
            await g.start()
    finally:
        taken.close()
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not names & {"device-writer", "picture-probe", "ledger-scheduler"}
    assert g.endpoint is None  # nothing half-started is left on the node
    await g.stop()  # harmless after a failed start


def test_component_status_is_read_when_asked() -> None:
    running = {"db": True}
    board = ComponentStatus({"db": lambda: "ok" if running["db"] else "stopped"})
    assert dict(board) == {"db": "ok"}
    running["db"] = False
    assert dict(board) == {"db": "stopped"}


class _Health:
    def __init__(self, state: State) -> None:
        self.states = {"channel:1": state}
        self.calls: list[tuple[str, str, str, float]] = []

    def state_of(self, subject: str) -> State | None:
        return self.states.get(subject)

    def set_state(self, subject: str, state: str, cause: str, ts: float, evidence: Any = None) -> None:
        self.calls.append((subject, str(state), cause, ts))


@pytest.mark.parametrize(("before", "ok", "after"), [
    (State.online, False, "no_video"),
    (State.no_video, True, "online"),
    (State.online, True, None),           # video as expected: nothing to record
    (State.offline, False, None),         # no signalling: offline already says it
])
def test_no_video_rule(before: State, ok: bool, after: str | None) -> None:
    health = _Health(before)
    NoVideoRule(health, lambda: 42.0)("1", ok, "cause", {})  # type: ignore[arg-type]
    assert health.calls == ([] if after is None else [("channel:1", after, "cause", 42.0)])


def test_the_cascade_change_debounce_waits_for_quiet_but_not_forever() -> None:
    d = Debounce(delay=1.0, max_delay=5.0)
    assert d.next_timer() is None and not d.due(0.0)
    d.poke(10.0)
    d.poke(10.5)
    assert d.next_timer() == 11.5 and not d.due(11.4) and d.due(11.5)
    assert d.next_timer() is None  # reset by the refresh it allowed
    for t in range(20, 30):  # a device flapping every second: reported after max_delay anyway
        d.poke(float(t) * 0.9)
    assert d.next_timer() == 23.0 and d.due(23.0)


async def test_the_change_tap_pokes_the_feed_for_device_and_channel_changes_only() -> None:
    class Ledger:
        def set_state(self, subject: str, state: str, cause: str, ts: float,
                      evidence: Mapping[str, Any] | None = None) -> Awaitable[None] | None:
            return None if state == "same" else asyncio.sleep(0)

    refreshed = asyncio.Event()

    async def refresh() -> None:
        refreshed.set()

    feed = ChangeFeed(delay=0.01, max_delay=0.05)
    tap = ChangeTap(Ledger(), feed)
    first = tap.set_state("device:1", "offline", "x", 0.0)  # nobody listens yet: ignored
    assert first is not None and feed.pokes == 0
    await first
    feed.refresh = refresh
    for subject, state in (("cascade:9", "online"), ("device:1", "same"), ("channel:2", "offline"),
                           ("device:1", "online")):
        pending = tap.set_state(subject, state, "x", 0.0)
        if pending is not None:
            await pending
    assert feed.pokes == 2
    await asyncio.wait_for(refreshed.wait(), 2)
    assert feed.refreshes == 1
    await feed.close()


async def test_admitted_channels_carry_the_whitelist_site_and_the_contract_vendor(tmp_path: Path) -> None:
    from gateway.store.contract import ChannelContract, Vendor
    from gateway.store.devices import make_catalog_job
    from gateway.store.inventory import StoreInventory
    from tests.interop.conftest import whitelist

    g = Gateway(gateway_settings(tmp_path))
    await g.start()
    try:
        assert g.services is not None and g.adapter is not None
        cam, ch1, ch2 = "34020000001320000001", "34020000001310000001", "34020000001310000002"
        await whitelist(g, cam, "pw", site="east-gate")
        g.services.repo.update_device(cam, name="cam")
        items = [CatalogItem(device_id=c, name=c[-1], status="ON") for c in (ch1, ch2)]
        await g.services.repo.submit(make_catalog_job(cam, items, [], [], {ch1, ch2}))
        async with g.services.repo._sessions() as session, session.begin():
            session.add(Vendor(id="kehai", name="Kehai"))
            await session.flush()
            session.add(ChannelContract(channel_id=ch1, device_id=cam, vendor_id="kehai"))
        directory = AdmittedChannels(StoreInventory(g.services.repo), g.adapter.policy, g.adapter.presence)
        listed = {c.item.device_id: (c.device_id, c.site, c.vendor, c.item.status)
                  for c in await directory.admitted_channels()}
        assert listed == {ch1: (cam, "east-gate", "kehai", "OFF"), ch2: (cam, "east-gate", "", "OFF")}
    finally:
        await g.stop()


async def test_pulled_sources_are_shared_with_uppers_when_their_entry_is_approved(tmp_path: Path) -> None:
    """RTSP/RTMP/file channels are channels of their own: an upper sees them (name, site, ON while the
    ledger says online), but only while the channel's whitelist entry is approved and the source enabled."""
    from gateway.health.timeline import State
    from gateway.store.inventory import StoreInventory
    from gateway.store.sources import SourceRecord
    from tests.interop.conftest import whitelist

    g = Gateway(gateway_settings(tmp_path))
    await g.start()
    try:
        assert g.services is not None and g.adapter is not None
        live, off, unlisted, disabled = (f"3402000000131000090{i}" for i in range(4))
        for ch in (live, off, disabled):
            await whitelist(g, ch, "pw", site="north-gate")
        sources = [SourceRecord(channel_id=live, url="rtsp://10.0.0.1/a", name="gate cam"),
                   SourceRecord(channel_id=off, url="rtsp://10.0.0.2/a", site="car park"),
                   SourceRecord(channel_id=unlisted, url="rtsp://10.0.0.3/a"),
                   SourceRecord(channel_id=disabled, url="rtsp://10.0.0.4/a", enabled=False)]

        async def pulled() -> list[SourceRecord]:
            return sources

        states = {f"channel:{live}": State.online, f"channel:{off}": State.offline}
        directory = AdmittedChannels(StoreInventory(g.services.repo), g.adapter.policy, g.adapter.presence,
                                     pulled=pulled, state_of=states.get)
        listed = {c.item.device_id: (c.device_id, c.item.name, c.site, c.item.status)
                  for c in await directory.admitted_channels()}
        assert listed == {live: (live, "gate cam", "north-gate", "ON"), off: (off, off, "car park", "OFF")}
    finally:
        await g.stop()


async def test_a_catalog_write_pokes_the_feed_once_committed_and_a_poke_mid_refresh_is_not_lost() -> None:
    from gateway.app.cascade import NotifyingInventory

    loop = asyncio.get_running_loop()
    committed: asyncio.Future[None] = loop.create_future()

    class Repo:
        def submit(self, job: object) -> asyncio.Future[None]:
            return committed

    calls = 0
    gate = asyncio.Event()

    async def refresh() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            feed.poke()  # a change while we list: looked at again afterwards
            await gate.wait()

    feed = ChangeFeed(delay=0.01, max_delay=0.05)
    feed.refresh = refresh
    inventory = NotifyingInventory(Repo(), feed)  # type: ignore[arg-type]
    written = asyncio.ensure_future(inventory.apply_catalog("34020000001320000001", [], [], [], set()))
    await asyncio.sleep(0.05)
    assert feed.pokes == 0  # not before the rows are in
    committed.set_result(None)
    await written
    assert feed.pokes == 1
    for _ in range(100):
        if calls == 1:
            break
        await asyncio.sleep(0.01)
    gate.set()
    for _ in range(100):
        if calls == 2:
            break
        await asyncio.sleep(0.01)
    assert calls == 2 and feed.refreshes == 2
    await feed.close()
