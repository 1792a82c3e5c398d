"""`gbgate demo`: the gateway on loopback plus a simulated social-resource site (devsim).

Eight simulated GB/T 28181 cameras (one H.265) are whitelisted, register with digest auth,
keep alive, answer catalog queries and stream a generated test pattern on demand. The demo
prints the console URL, an admin token and one play URL per protocol, then a status line
whenever the number of online cameras changes, until `until()` returns (the CLI passes
"Ctrl-C or --duration").
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Awaitable, Callable

from devsim.swarm import DeviceSwarm
from gateway.app import Gateway
from gateway.config import Settings
from gateway.demo.site import sim_devices, whitelist_cameras
from gateway.tasks import TaskSet


async def run_demo(
    settings: Settings, *, cameras: int = 8, history: bool = True, until: Callable[[], Awaitable[None]]
) -> int:
    from gateway.api.auth import Role

    count = max(1, int(cameras))
    gw = Gateway(settings)
    await gw.start()
    swarm = None
    background = TaskSet("demo")  # the keepalive loop, cancelled however the demo ends
    try:
        assert gw.services is not None
        password = secrets.token_hex(8)
        ids = await whitelist_cameras(gw.services.admission, settings.sip.domain, count, password)
        if history:
            try:
                from gateway.reports.demo_history import seed_history

                await seed_history(gw.services, ids)
            except ImportError:
                pass
        token = await gw.services.tokens.create(Role.ADMIN, "demo")
        swarm = DeviceSwarm(
            server_host=settings.sip.host,
            server_port=gw.sip_port,
            server_id=settings.sip.id,
            domain=settings.sip.domain,
            devices=sim_devices(ids, password),
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
        watcher = asyncio.create_task(watch_online(gw, count, until))
        await swarm.register_all()
        background.spawn(swarm.run_keepalives(), name="keepalives")
        await watcher
        await background.close()
        await swarm.unregister_all()
    finally:
        await background.close()
        if swarm is not None:
            await swarm.stop()
        await gw.stop()
    return 0


async def watch_online(gw: Gateway, count: int, until: Callable[[], Awaitable[None]]) -> None:
    """Print a status line whenever online cameras or catalog channels change, until `until()` returns."""
    stop = asyncio.ensure_future(until())
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
