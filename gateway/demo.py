"""`gbgate demo`: the gateway on loopback plus a simulated social-resource site.

Eight simulated GB/T 28181 cameras (one H.265) are whitelisted, register with digest auth,
keep alive, answer catalog queries and stream a generated test pattern on demand. The demo
prints the console URL, an admin token and one play URL per protocol, then a status line
whenever the number of online cameras changes, until Ctrl-C (or --duration).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

from gateway.app import Gateway
from gateway.config import Settings

DEMO_SITE = "demo-site"
DEMO_LINK = "demo-link"


def demo_ids(domain: str, count: int) -> list[tuple[str, str]]:
    """(device ID, channel ID) pairs: IPC type 132 devices, each with one 131 channel."""
    out = []
    for i in range(1, count + 1):
        out.append((f"{domain}132{i:07d}", f"{domain}131{i:07d}"))
    return out


async def _prepare(gw: Gateway, settings: Settings, count: int, password: str) -> list[tuple[str, str]]:
    """Whitelist the demo cameras (approved, with credentials), audited as the demo operator."""
    from whitelist.model import Credential, Entry, EntryStatus

    assert gw.services is not None
    store = gw.services.admission.store
    ids = demo_ids(settings.sip.domain, count)
    for n, (device_id, _channel) in enumerate(ids, 1):
        entry = Entry(
            device_id=device_id,
            status=EntryStatus.APPROVED,
            credential=Credential.from_password(device_id, settings.sip.domain, password),
            name=f"演示摄像机 {n}",
            site=DEMO_SITE,
            link=DEMO_LINK,
            owner="演示站点",
            max_channels=4,
        )
        current = await store.get(device_id)
        if current is None or current.credential is None or current.credential.ha1_md5 != entry.credential.ha1_md5:
            await store.save_entry(entry, actor="demo", action="add", reason="demo camera")
    await gw.services.admission.sync()
    return ids


async def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.api.auth import Role
    from load_tests.simulator import DeviceSwarm, SimDevice

    count = max(1, int(args.cameras))
    gw = Gateway(settings)
    await gw.start()
    swarm = None
    try:
        assert gw.services is not None
        password = secrets.token_hex(8)
        ids = await _prepare(gw, settings, count, password)
        if not args.no_history:
            try:
                from gateway.reports.demo_history import seed_history

                await seed_history(gw.services, ids)
            except ImportError:
                pass
        token = await gw.services.tokens.create(Role.ADMIN, "demo")
        devices = [
            SimDevice(
                device_id=device_id,
                password=password,
                channels=[(channel_id, f"演示通道 {n}")],
                manufacturer="gbgate-sim",
                model="SIM-IPC",
                firmware="1.0",
                codec="h265" if n == count and count > 1 else "h264",
            )
            for n, (device_id, channel_id) in enumerate(ids, 1)
        ]
        swarm = DeviceSwarm(
            server_host=settings.sip.host,
            server_port=gw.sip_port,
            server_id=settings.sip.id,
            domain=settings.sip.domain,
            devices=devices,
            keepalive_interval=min(settings.sip.keepalive_interval, 20.0),
        )
        await swarm.start()
        first = ids[0][1]
        url = gw.http_url
        print("gbgate demo is running", flush=True)
        print(f"  console:   {url}/?token={token}")
        print(f"  API token: {token}  (role admin)")
        print(f"  SIP:       {settings.sip.host}:{gw.sip_port} (UDP/TCP), realm {settings.sip.domain}")
        print(f"  HTTP-FLV:  {url}/live/{first}.flv?token={token}")
        print(f"  WS-FLV:    {url.replace('http', 'ws', 1)}/live/{first}.flv?token={token}")
        print(f"  WebRTC:    POST {url}/live/{first}/whep?token={token}")
        print(f"  snapshot:  {url}/live/{first}/snapshot.jpg?token={token}")
        print(f"  try:       ffplay '{url}/live/{first}.flv?token={token}'")
        print("             gbgate devices list   (with the same --config / GBGATE_* settings)", flush=True)
        watcher = asyncio.create_task(_watch(gw, count, args.duration))
        await swarm.register_all()
        keepalives = asyncio.create_task(swarm.run_keepalives())
        await watcher
        keepalives.cancel()
        await asyncio.gather(keepalives, return_exceptions=True)
        await swarm.unregister_all()
    finally:
        if swarm is not None:
            await swarm.stop()
        await gw.stop()
    return 0


async def _watch(gw: Gateway, count: int, duration: float) -> None:
    from gateway.cli import _until_signal

    stop = asyncio.create_task(_until_signal(duration))
    last: tuple[int, int] | None = None
    assert gw.adapter is not None and gw.services is not None
    presence, repo = gw.adapter.presence, gw.services.repo
    while not stop.done():
        online = presence.online_count()
        channels = sum((await repo.channel_counts()).values())
        if (online, channels) != last:
            print(f"{online} of {count} online, {channels} channels in the catalog", flush=True)
            last = (online, channels)
        await asyncio.wait({stop}, timeout=0.5)
    print("stopping demo", file=sys.stderr, flush=True)

