"""The pull-source plane (RTSP/RTMP/file, issue 14 #3) and the one place sources are changed.

`SourceAdmin` is used by the API (through `services.extra["sources"]`) and by `gbgate source …`
alike: validate the channel ID (GB grammar) and the URL, refuse a channel ID a GB device already
uses, ask the pull admission (whitelist.pull: the host must be whitelisted for the channel), store
the row (password sealed), audit with redacted URLs, and tell the running `PullSources`.
`sources_plane` wires `PullSources` into the media plane's RoutedOpener and keeps its book in
step with the table (changes made by the CLI reach a running node within RELOAD_INTERVAL_S).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.rtsp import PullSettings, PullSources
from gateway.app.store import StorePlane, node_secret
from gateway.config import Settings
from gateway.gb.errors import InvalidId
from gateway.gb.ids import validate_id
from gateway.store.sealed import Sealer
from gateway.store.sources import PullMode, SourceError, SourceRecord, SourceRepository
from whitelist.errors import ValidationError
from whitelist.pull import parse_source_url

if TYPE_CHECKING:
    from gateway.app.media import MediaPlane


def pull_settings(settings: Settings) -> PullSettings:
    m = settings.media
    return PullSettings(timeout=m.pull_timeout, backoff_max=m.pull_backoff_max, file_root=m.file_source_root,
                        hold_timeout=m.invite_timeout)


@dataclass(slots=True)
class SourceAdmin:
    repo: SourceRepository
    pulls: PullSources
    auditor: Any          # whitelist.store.WhitelistStore (append_audit)
    devices: Any = None   # gateway.store.devices.DeviceRepository (find_channel), to refuse clashes

    async def list(self) -> list[SourceRecord]:
        return await self.repo.list()

    async def get(self, channel_id: str) -> SourceRecord | None:
        return await self.repo.get(channel_id)

    async def _audit(self, action: str, target: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
                     actor: str, reason: str = "") -> None:
        await self.auditor.append_audit(actor=actor, action=action, target=target, before=before, after=after,
                                        reason=reason)

    async def add(self, channel_id: str, url: str, *, actor: str, mode: str = PullMode.ON_DEMAND.value,
                  name: str = "", site: str = "", enabled: bool = True) -> SourceRecord:
        try:
            channel_id = validate_id(channel_id)
        except InvalidId as exc:
            raise SourceError(422, "invalid_value", str(exc), "channel_id") from None
        try:
            pull_mode = PullMode(mode)
        except ValueError:
            raise SourceError(422, "invalid_value", "mode must be on_demand or always_on", "mode") from None
        if len(name) > 200 or len(site) > 64:
            raise SourceError(422, "invalid_value", "name ≤ 200 and site ≤ 64 characters", "name")
        try:
            src = parse_source_url(url)
        except ValidationError as exc:
            raise SourceError(422, "invalid_value", exc.message, "url") from None
        if self.devices is not None and (row := await self.devices.find_channel(channel_id)) is not None:
            raise SourceError(409, "conflict", f"{channel_id} is already a channel of GB device {row.device_id}",
                              "channel_id")
        shown = src.redacted()
        decision = await self.pulls.admit(channel_id, src.bare)
        if not decision.allowed:
            await self._audit("source_refused", channel_id, None, {"url": shown, "reason": decision.reason.value},
                              actor, decision.detail)
            raise SourceError(403, "not_admitted", f"{decision.reason.value}: {decision.detail}", "url")
        password = src.password
        if not password and src.username:
            # an edit that leaves the password out keeps it — only for the very same URL and user, so a
            # changed host never receives the camera's password
            current = await self.repo.get(channel_id)
            if current is not None and (current.url, current.username) == (src.bare, src.username):
                password = current.password
        rec = SourceRecord(channel_id=channel_id, url=src.bare, username=src.username, password=password,
                           mode=pull_mode, name=name, site=site, enabled=enabled)
        before, after = await self.repo.put(rec)
        await self._audit("source_add" if before is None else "source_update", channel_id,
                          before.public_dict() if before else None, after.public_dict(), actor)
        self.pulls.put(after)
        return after

    async def remove(self, channel_id: str, *, actor: str) -> SourceRecord:
        before = await self.repo.delete(channel_id)
        if before is None:
            raise SourceError(404, "not_found", f"no pull source {channel_id}", "channel_id")
        await self._audit("source_remove", channel_id, before.public_dict(), None, actor)
        self.pulls.remove(channel_id)
        return before


def source_admin(settings: Settings, sessions: Any, policy: Any, auditor: Any, *, health: Any = None,
                 devices: Any = None, clock: Callable[[], float] | None = None) -> SourceAdmin:
    """A SourceAdmin and its PullSources (loading from the table), for a node or one CLI command."""
    repo = SourceRepository(sessions, Sealer(node_secret(Path(settings.data_dir))))
    kwargs: dict[str, Any] = {"wall_clock": clock} if clock is not None else {}
    pulls = PullSources(policy=policy, health=health, auditor=auditor, settings=pull_settings(settings),
                        loader=repo.list, **kwargs)
    return SourceAdmin(repo, pulls, auditor, devices)


@asynccontextmanager
async def sources_plane(settings: Settings, store: StorePlane, media: MediaPlane, health: Any,
                        clock: Callable[[], float], admission: Any = None) -> AsyncIterator[SourceAdmin]:
    """Pull sources opened through the hub (RoutedOpener), always-on ones held, the book reloaded;
    a channel the whitelist drops (`admission.on_drop`) has its pulled stream ended at once."""
    admin = source_admin(settings, store.sessions, store.policy, store.whitelist, health=health,
                         devices=store.repo, clock=clock)
    pulls = admin.pulls
    pulls.hub = media.hub
    if media.routes is not None:
        media.routes.add(pulls.owns, pulls)
    if admission is not None:
        admission.on_drop.append(pulls.on_dropped)
    await pulls.start()
    try:
        yield admin
    finally:
        await pulls.stop()
