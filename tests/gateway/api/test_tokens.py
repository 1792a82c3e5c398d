"""API tokens expire, can be revoked (honoured within 1 s), and stay out of API URLs (issue 10 item 11).

Clocks are injected: `mono` drives the principal cache, `wall` the expiry. A second TokenStore on the
same database plays `gbgate token revoke` run in another process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.api import build_web_app, live
from gateway.api.auth import DEFAULT_TTL, Role, TokenStore
from gateway.api.services import Services

CH = "34020000001310000001"
OTHER_CH = "34020000001310000002"
T0 = datetime(2026, 11, 1, 8, tzinfo=UTC)


class Clocks:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = T0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
async def app(aiohttp_client: Any, services: Services, clocks: Clocks) -> Any:
    services.tokens = TokenStore(services.repo._sessions, clock=lambda: clocks.mono, wall=lambda: clocks.wall)
    return await aiohttp_client(build_web_app(services, [live.routes]))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_expires_after_its_lifetime(app: Any, services: Services, clocks: Clocks) -> None:
    """Today tokens never expire: the same token works forever."""
    token = await services.tokens.create(Role.OPS, "ops")
    assert (await app.get("/api/v1/whoami", headers=bearer(token))).status == 200
    clocks.advance(DEFAULT_TTL.total_seconds() - 1)
    assert (await app.get("/api/v1/whoami", headers=bearer(token))).status == 200
    clocks.advance(1)
    resp = await app.get("/api/v1/whoami", headers=bearer(token))
    assert resp.status == 401


async def test_revocation_by_another_process_is_honoured_within_one_second(
        app: Any, services: Services, clocks: Clocks) -> None:
    token, info = await services.tokens.create_with_id(Role.SECURITY, "sec")
    assert (await app.get("/api/v1/whoami", headers=bearer(token))).status == 200      # now cached
    cli = TokenStore(services.repo._sessions, clock=lambda: clocks.mono, wall=lambda: clocks.wall)
    assert (await cli.revoke(info.id)) is not None
    clocks.advance(1.0)
    assert (await app.get("/api/v1/whoami", headers=bearer(token))).status == 401
    listed = {i.id: i.state(clocks.wall) for i in await cli.list_tokens()}
    assert listed[info.id] == "revoked"


async def test_revocation_in_this_process_is_immediate(app: Any, services: Services) -> None:
    token, info = await services.tokens.create_with_id(Role.OPS, "ops")
    assert (await app.get("/api/v1/whoami", headers=bearer(token))).status == 200
    await services.tokens.revoke(info.id)
    assert (await app.get("/api/v1/whoami", headers=bearer(token))).status == 401


async def test_query_token_is_refused_on_api_routes(app: Any, services: Services) -> None:
    """Today ?token= works on every /api route (shell history, proxy logs, Referer)."""
    token = await services.tokens.create(Role.ADMIN, "admin")
    resp = await app.get(f"/api/v1/whitelist?token={token}")
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "token"
    resp = await app.get(f"/api/v1/audit?limit=5&token={token}")
    assert resp.status == 400


async def test_query_token_still_opens_streams(app: Any, services: Services) -> None:
    """contract.md: stream URLs accept ?token= (players cannot set headers)."""
    token = await services.tokens.create(Role.OPS, "ops")
    assert (await app.get(f"/live/{CH}.flv")).status == 401
    resp = await app.get(f"/live/{CH}.flv?token={token}")
    assert resp.status == 503            # authorised; no media plane in this test app


async def test_play_token_opens_only_its_channel_and_only_streams(app: Any, services: Services,
                                                                  clocks: Clocks) -> None:
    token = await services.tokens.create(Role.OPS, "ops")
    resp = await app.post("/api/v1/play-tokens", json={"channel_id": CH, "ttl": 60}, headers=bearer(token))
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    play = body["token"]
    assert play.startswith("gbp_") and body["flv_url"] == f"/live/{CH}.flv?token={play}"
    assert (await app.get(f"/live/{CH}.flv?token={play}")).status == 503
    assert (await app.get(f"/live/{OTHER_CH}.flv?token={play}")).status == 401
    assert (await app.get("/api/v1/whoami", headers=bearer(play))).status == 401     # not an API token
    assert (await app.post("/api/v1/play-tokens", headers=bearer(play))).status == 401
    tampered = play[:-3] + ("AAA" if not play.endswith("AAA") else "BBB")
    assert (await app.get(f"/live/{CH}.flv?token={tampered}")).status == 401
    clocks.advance(60)
    assert (await app.get(f"/live/{CH}.flv?token={play}")).status == 401


async def test_play_token_for_a_name_with_separator_is_refused_not_500(app: Any, services: Services) -> None:
    token = await services.tokens.create(Role.OPS, "a\x1fb")
    play = (await (await app.post("/api/v1/play-tokens", headers=bearer(token))).json())["token"]
    assert (await app.get(f"/live/{CH}.flv?token={play}")).status == 401


@pytest.mark.parametrize(("body", "field"), [({"channel_id": "123"}, "channel_id"), ({"ttl": 0}, "ttl"),
                                             ({"ttl": 901}, "ttl"), ({"ttl": "5"}, "ttl")])
async def test_play_token_bad_input_names_field(app: Any, services: Services, body: dict[str, Any],
                                                field: str) -> None:
    token = await services.tokens.create(Role.OPS, "ops")
    resp = await app.post("/api/v1/play-tokens", json=body, headers=bearer(token))
    assert resp.status == 422 and (await resp.json())["error"]["field"] == field
