from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.api import build_web_app
from gateway.api.services import Services
from gateway.api.webrtc import WebrtcState, setup_webrtc
from gateway.config import load_settings
from tests.gateway.outputs.fakehub import FakeHub, FakeTokens


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    h = FakeHub()
    yield h
    await h.stop()


def make_app(hub: Any) -> tuple[web.Application, WebrtcState]:
    svc = Services(settings=load_settings(env={}), repo=None, tokens=FakeTokens(), streams=hub)
    app = build_web_app(svc)
    return app, setup_webrtc(app)


@pytest.fixture
async def api(aiohttp_client: Any, hub: FakeHub) -> Any:
    app, state = make_app(hub)
    client = await aiohttp_client(app)
    client.state = state
    return client
