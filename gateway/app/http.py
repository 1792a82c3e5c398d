"""The HTTP plane: API, live streams, WHEP and the console on one aiohttp runner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from gateway.api import build_web_app, live, webrtc
from gateway.api.services import Services
from gateway.health.metrics import Metrics


@dataclass(slots=True)
class HttpPlane:
    runner: web.AppRunner
    port: int  # the bound port (the configured one, or the one picked for port 0)


@asynccontextmanager
async def http_plane(services: Services, metrics: Metrics) -> AsyncIterator[HttpPlane]:
    """Serve on http.host:http.port; on exit the runner's cleanup closes peer connections too."""
    s = services.settings
    app = build_web_app(services, [live.routes])
    whep = webrtc.setup_webrtc(app)  # WHEP + snapshot routes, peer connections closed at shutdown
    metrics.add_gauge("gbgate_webrtc_sessions", "Open WHEP sessions", lambda: len(whep.sessions.sessions))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, s.http.host, s.http.port).start()
        addresses = runner.addresses  # the sockets' own names: the real port when 0 was asked for
        yield HttpPlane(runner, int(addresses[0][1]) if addresses else s.http.port)
    finally:
        await runner.cleanup()
