"""One upper platform, the asyncio shell around `UplinkSession` (gb28181.md §7).

It sends what the sans-IO core asks through the node's `SipEndpoint` client transactions, arms
one loop timer at `next_timer()`, and reports online/offline to the health ledger as subject
`cascade:<upper id>`. Requests from the upper reach it through the `SipRouter` sender table
(its From user is the upper's ID) — and are refused unless they come from the upper's address.
MESSAGE bodies are decided by `answers.decide`; a Catalog is answered 200 at once, then in
Response/Catalog MESSAGEs, each sent when the previous one got its 200 (after the first page
that is not answered within `catalog_wait`, at `catalog_spacing` without waiting; an error
response stops it), as WVP does (§7.3). INVITE/BYE go to the `relay` when one is wired.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from adapters.base import HealthSink
from adapters.cascade import answers
from adapters.cascade.registration import (
    RequestKind,
    SendRequest,
    StateChanged,
    UplinkConfig,
    UplinkSession,
    UplinkState,
    manscdp_request,
)
from adapters.cascade.subscription import Subscriptions
from gateway.gb import manscdp
from gateway.gb.errors import GbError, ManscdpError
from gateway.gb.items import CatalogItem
from gateway.health.metrics import MANSCDP_CMD_TYPES, bounded
from gateway.sip.errors import SipError
from gateway.sip.events import Peer
from gateway.sip.message import Request, Response, make_response, new_tag
from gateway.sip.router import SipRouter
from gateway.tasks import TaskSet

log = logging.getLogger("gateway.cascade")

BEIJING = timezone(timedelta(hours=8))


class Endpoint(Protocol):
    """The parts of `SipEndpoint` an uplink uses."""

    async def request(self, request: Request, peer: Peer, *, timeout: float | None = None) -> Response: ...

    def respond(self, key: Hashable, response: Response, *, stateless: bool = False) -> None: ...


class ChannelDirectory(Protocol):
    """The channels we may share: admitted (exposed, of an approved device), normalized metadata,
    each with its device and the site/vendor labels a selection matches."""

    async def admitted_channels(self) -> Sequence[answers.Channel]: ...


class SecurityAudit(Protocol):
    """The whitelist's audit trail (whitelist.admission.Admission.audit_event)."""

    async def audit_event(self, action: str, device_id: str, details: Mapping[str, Any], reason: str) -> None: ...


class DeviceControl(Protocol):
    """Forwards a control down to the device owning a channel (GbDeviceAdapter.device_control)."""

    async def device_control(self, channel_id: str, fields: dict[str, str]) -> int: ...


class InviteHandler(Protocol):
    """Serves the upper's INVITEs (relay.py); the uplink routes them there."""

    def on_invite(self, request: Request, peer: Peer, key: Hashable, shared: Callable[[str], bool], *,
                  source: Callable[[str], str] | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class UplinkOptions:
    """Per-upper pacing and our self-description (from `[[cascade]]` and `sip.*`)."""

    channels: tuple[str, ...] = ()  # shared channel IDs (ours or exposed) ∪ sites ∪ vendors; all empty = all
    sites: tuple[str, ...] = ()  # whitelist entry sites whose devices' channels are shared
    vendors: tuple[str, ...] = ()  # channel-contract vendors whose channels are shared
    catalog_per_message: int = 1
    catalog_wait: float = 2.0  # wait this long for a page's 200 before falling back to spacing
    catalog_spacing: float = 0.1
    name: str = "gbgate"
    firmware: str = ""
    ptz: bool = False  # forward the upper's PTZ commands for shared channels down to the devices
    notify_per_message: int = 50  # Notify/Catalog items per NOTIFY
    platform_item: bool = True  # our own item (type 200) first in every Catalog answer, the tree's root

    @property
    def selection(self) -> answers.Selection:
        return answers.Selection(frozenset(self.channels), frozenset(self.sites), frozenset(self.vendors))


class CascadeUplink:
    """gbgate as a lower platform towards one upper: registration, keepalive, answers."""

    def __init__(self, *, config: UplinkConfig, options: UplinkOptions, endpoint: Endpoint,
                 directory: ChannelDirectory, health: HealthSink | None = None, audit: SecurityAudit | None = None,
                 clock: Callable[[], float], relay: InviteHandler | None = None,
                 control: DeviceControl | None = None) -> None:
        self.config = config
        self.options = options
        self.endpoint = endpoint
        self.directory = directory
        self.health = health
        self.audit = audit
        self.clock = clock  # wall clock, for the ledger and DeviceStatus
        self.relay = relay
        self.control = control
        self.session = UplinkSession(config)
        self.peer = Peer(config.transport, config.upper_host, config.upper_port)
        self.stats: Counter[str] = Counter()
        self._addresses: set[str] = {config.upper_host}
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks = TaskSet(f"cascade-{config.upper_id}", logger=log)
        # audit records: finished at stop, not cancelled (a store write cut short loses the record)
        self._writes = TaskSet(f"cascade-{config.upper_id}-audit", logger=log)
        self._router: SipRouter | None = None
        self._view: dict[str, CatalogItem] = {}  # exposed ID → item, as the upper was last told
        self._shared = answers.Shared([], {})  # the last share: origins and stream keys
        self.subscriptions = Subscriptions(config)

    @property
    def subject(self) -> str:
        return f"cascade:{self.config.upper_id}"

    @property
    def state(self) -> UplinkState:
        return self.session.state

    # ------------------------------------------------------------------ lifecycle
    def install(self, router: SipRouter) -> None:
        methods = ("MESSAGE", "SUBSCRIBE", "INVITE") if self.relay is not None else ("MESSAGE", "SUBSCRIBE")
        router.add_sender(self.config.upper_id, methods, self.on_request)
        self._router = router

    async def start(self) -> None:
        """Resolve the upper's host (so its requests can be checked by address), then register."""
        try:
            infos = await self._loop.getaddrinfo(self.config.upper_host, self.config.upper_port,
                                                 type=socket.SOCK_DGRAM)
            self._addresses |= {str(info[4][0]) for info in infos}
            first = str(infos[0][4][0])
            self.peer = Peer(self.config.transport, first, self.config.upper_port)
        except OSError as exc:
            log.warning("cascade %s: cannot resolve %s: %s", self.config.upper_id, self.config.upper_host, exc)
        self._run(self.session.start(self._loop.time()))

    async def stop(self) -> None:
        """Unregister (best effort, 2 s), cancel the timer and every task but the audit writes
        (those finish), leave the router."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._router is not None:
            self._router.remove_sender(self.config.upper_id)
            self._router = None
        actions = self.session.stop(self._loop.time())
        self.subscriptions.clear()
        await self._tasks.close()
        for action in actions:
            if isinstance(action, SendRequest):
                try:
                    await self.endpoint.request(action.request, self.peer, timeout=2.0)
                except (SipError, OSError):
                    pass
            else:
                self._state_changed(action)
        await self._tasks.join()  # the ledger write of "offline, stopped"
        await self._writes.join()

    def status(self) -> dict[str, Any]:
        s = self.session
        self.subscriptions.expire(self._loop.time())
        return {"upper": self.config.upper_id, "state": s.state.value, "cause": s.last_cause,
                "expires": s.expires, "keepalive_misses": s.keepalive_misses, "shared": len(self._view),
                "subscriptions": len(self.subscriptions), **self._play_counts(),
                "remote": f"{self.peer.host}:{self.peer.port}/{self.peer.transport}"}

    def _play_counts(self) -> dict[str, int]:
        """This upper's INVITEs served / refused and seconds streamed (the relay's counters)."""
        stats = getattr(self.relay, "stats", None)
        if not isinstance(stats, Counter):
            return {}
        refused = sum(v for k, v in stats.items() if k.startswith("invite:refused:"))
        return {"invites_ok": stats["invite:ok"], "invites_refused": refused,
                "stream_seconds": stats["stream_seconds"]}

    # ------------------------------------------------------------------ the core's actions
    def _run(self, actions: list[SendRequest | StateChanged]) -> None:
        for action in actions:
            if isinstance(action, SendRequest):
                self._tasks.spawn(self._send(action), name=action.kind.value)
            else:
                self._state_changed(action)
        self._rearm()

    async def _send(self, action: SendRequest) -> None:
        timeout = self.config.keepalive_interval if action.kind is RequestKind.KEEPALIVE else None
        self.stats[f"sent:{action.kind.value}"] += 1
        response: Response | None
        try:
            response = await self.endpoint.request(action.request, self.peer, timeout=timeout)
            self.stats[f"answered:{action.kind.value}:{response.status}"] += 1
        except (SipError, OSError) as exc:
            self.stats[f"timeout:{action.kind.value}"] += 1
            log.debug("cascade %s: %s got no answer: %s", self.config.upper_id, action.kind.value, exc)
            response = None
        self._run(self.session.on_response(action.seq, response, self._loop.time()))

    def _state_changed(self, change: StateChanged) -> None:
        self.stats[f"state:{change.state.value}"] += 1
        log.info("cascade %s: %s (%s)", self.config.upper_id, change.state.value, change.cause)
        if change.state is UplinkState.ONLINE:
            self._tasks.spawn(self.shared_items(), name="shared")  # what an INVITE may ask for
        elif self.subscriptions.clear():
            self.stats["subscribe:dropped_offline"] += 1  # the upper subscribes again once we are back
        if self.health is not None:
            evidence = {"upper": self.config.upper_id, "remote": f"{self.peer.host}:{self.peer.port}"}
            pending = self.health.set_state(self.subject, change.state.value, change.cause, self.clock(), evidence)
            if pending is not None:
                self._tasks.spawn(_await(pending), name="ledger")

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.session.next_timer()
        if at is not None:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._run(self.session.handle_timer(self._loop.time()))

    # ------------------------------------------------------------------ requests from the upper
    def on_request(self, request: Request, peer: Peer, key: Hashable) -> None:
        if peer.host not in self._addresses:
            # the From header names the upper, the source address does not: somebody else speaking for it
            self.stats["refused:not_from_upper"] += 1
            self._answer(key, request, 403, peer)
            self._security("cascade_spoofed_upper", peer, f"{request.method} from {peer.host}:{peer.port}")
            return
        if request.method == "INVITE" and self.relay is not None:
            self.relay.on_invite(request, peer, key, self.shares, source=self.source_of)
        elif request.method == "SUBSCRIBE":
            self._on_subscribe(request, peer, key)
        elif request.method == "MESSAGE":
            self._on_message(request, peer, key)
        else:
            self._answer(key, request, 405, peer)

    def shares(self, channel_id: str) -> bool:
        """The channel (by the ID the upper sees) is one we offer this upper: admitted and selected
        when we last looked (at registration, at every Catalog answer and channel change)."""
        return channel_id in self._view and not answers.is_node(channel_id)

    def source_of(self, exposed_id: str) -> str:
        """The hub's stream key behind an exposed ID: its channel ID, or for a channel ID two of our
        devices expose, that device's channel (idmap, hub.stream_key)."""
        return self._shared.stream_key(exposed_id)

    def _parse(self, request: Request, peer: Peer, key: Hashable) -> manscdp.Manscdp | None:
        """The request's MANSCDP body; None (answered 400 with the reason, counted) when refused."""
        try:
            return manscdp.parse(request.body, charset_hint=None)
        except ManscdpError as exc:
            self.stats[f"refused:bad_manscdp:{exc.reason}"] += 1
            self._answer(key, request, 400, peer, reason=exc.reason)
            return None

    def _on_subscribe(self, request: Request, peer: Peer, key: Hashable) -> None:
        msg = None
        if request.body.strip():
            msg = self._parse(request, peer, key)
            if msg is None:
                return
        answer = self.subscriptions.on_subscribe(request, msg, self._loop.time())
        self.stats[f"subscribe:{answer.verdict.value}"] += 1
        if answer.status >= 300:
            self.stats[f"refused:{answer.reason}"] += 1
            self._answer(key, request, answer.status, peer)
            return
        self.stats[f"responses:{answer.status}"] += 1
        self.endpoint.respond(key, make_response(request, answer.status, to_tag=answer.to_tag,
                                                 headers=list(answer.headers), body=answer.body,
                                                 received=(peer.host, peer.port)))

    def channels_changed(self, channels: Sequence[answers.Channel]) -> list[CatalogItem]:
        """The admitted channels now: update what this upper is offered, and NOTIFY each of its
        Catalog subscriptions of the difference (batched, `notify_per_message` items a NOTIFY).
        Returns the changes."""
        before = self._view
        changes = answers.catalog_changes(before, self._adopt(channels))
        if changes and self.state is UplinkState.ONLINE:
            requests = self.subscriptions.notifies(changes, self._loop.time(), self.options.notify_per_message)
            for request in requests:
                self._tasks.spawn(self._notify(request), name="notify")
        return changes

    async def _notify(self, request: Request) -> None:
        self.stats["notify:sent"] += 1
        try:
            response = await self.endpoint.request(request, self.peer)
        except (SipError, OSError):
            self.stats["notify:timeout"] += 1
            return
        self.stats[f"notify:answered:{response.status}"] += 1
        if response.status == 481:  # the upper forgot the subscription
            self.subscriptions.dialogs.pop(request.call_id, None)

    def _on_message(self, request: Request, peer: Peer, key: Hashable) -> None:
        if "manscdp" not in (request.content_type or ""):
            self._answer(key, request, 415, peer)
            return
        msg = self._parse(request, peer, key)
        if msg is None:
            return
        decision = answers.decide(msg, self.config.our_id, allow_ptz=self.options.ptz and self.control is not None)
        self.stats[f"manscdp:{msg.root.value}:{bounded(msg.cmd_type, MANSCDP_CMD_TYPES)}"] += 1
        if decision.answer is answers.Answer.REFUSE:
            self.stats[f"refused:{decision.reason[:60]}"] += 1
            self._answer(key, request, decision.status, peer)
            if decision.security:
                self._security(f"cascade_{decision.reason.split(':')[0]}", peer, decision.reason)
            return
        if decision.answer is answers.Answer.PTZ and not self.shares(msg.device_id):
            self.stats["refused:ptz_unshared"] += 1
            self._answer(key, request, 404, peer)
            return
        self._answer(key, request, 200, peer)
        if decision.answer is answers.Answer.PTZ:
            self._tasks.spawn(self._forward_ptz(msg.device_id, decision.ptz_cmd), name="ptz")
        elif decision.answer is answers.Answer.CATALOG:
            self._tasks.spawn(self.send_catalog(msg.sn), name=f"catalog-{msg.sn}")
        elif decision.answer is answers.Answer.DEVICE_INFO:
            self._tasks.spawn(self._device_info(msg.sn), name="device-info")
        elif decision.answer is answers.Answer.DEVICE_STATUS:
            body = answers.device_status(self.config.our_id, msg.sn, device_time=_gb_time(self.clock()),
                                         charset=self.config.charset)
            self._tasks.spawn(self._message(body), name="device-status")

    def _answer(self, key: Hashable, request: Request, status: int, peer: Peer, *, reason: str | None = None) -> None:
        self.stats[f"responses:{status}"] += 1
        self.endpoint.respond(key, make_response(request, status, reason, to_tag=new_tag(),
                                                 received=(peer.host, peer.port)))

    def _security(self, action: str, peer: Peer, reason: str) -> None:
        self.stats[f"alarms:{action}"] += 1
        log.warning("cascade %s: refused %s from %s: %s", self.config.upper_id, action, peer.host, reason)
        if self.audit is not None:
            self._writes.spawn(self.audit.audit_event(action, self.config.upper_id, {"source": peer.host}, reason),
                               name="audit")

    # ------------------------------------------------------------------ answers out
    async def shared_items(self) -> list[CatalogItem]:
        return list(self._adopt(await self.directory.admitted_channels()).values())

    def _adopt(self, channels: Sequence[answers.Channel]) -> dict[str, CatalogItem]:
        shared = answers.share(channels, self.config.our_id, self.options.selection)
        self._view, self._shared = shared.view(), shared
        return self._view

    async def send_catalog(self, sn: int) -> int:
        """Response/Catalog pages for the upper's query `sn`; returns the pages the upper accepted."""
        items = await self.shared_items()
        if self.options.platform_item:
            items.insert(0, answers.platform_item(self.config.our_id, self.options.name))
        pages = answers.catalog_pages(self.config.our_id, sn, items, self.options.catalog_per_message,
                                      self.config.charset)
        paced = False  # after one unanswered page: fixed spacing instead of waiting for each 200
        failed = False
        pending: list[asyncio.Task[Response | None]] = []
        accepted = 0

        def done(task: asyncio.Task[Response | None]) -> None:
            nonlocal failed
            if not task.cancelled() and task.exception() is None:
                response = task.result()
                if response is not None and response.status >= 300:
                    failed = True

        for body in pages:
            if failed:
                self.stats["catalog:stopped_on_error"] += 1
                break
            task = self._tasks.spawn(self._message(body), name=f"catalog-page-{sn}")
            task.add_done_callback(done)
            pending.append(task)
            if paced:
                await asyncio.sleep(self.options.catalog_spacing)
                continue
            finished, _ = await asyncio.wait({task}, timeout=self.options.catalog_wait)
            if not finished or task.result() is None:
                paced = True
                self.stats["catalog:paced"] += 1
        results = await asyncio.gather(*pending, return_exceptions=True)
        accepted = sum(1 for r in results if isinstance(r, Response) and r.status < 300)
        self.stats["catalog:answered"] += 1
        self.stats["catalog:pages"] += accepted
        return accepted

    async def _device_info(self, sn: int) -> None:
        items = await self.shared_items()
        channels = sum(not answers.is_node(i.device_id) for i in items)
        body = answers.device_info(self.config.our_id, sn, name=self.options.name, channels=channels,
                                   firmware=self.options.firmware, charset=self.config.charset)
        await self._message(body)

    async def _forward_ptz(self, channel_id: str, ptz_cmd: str) -> None:
        assert self.control is not None
        try:
            status = await self.control.device_control(channel_id, {"PTZCmd": ptz_cmd})
        except GbError as exc:
            self.stats["ptz:failed"] += 1
            log.info("cascade %s: PTZ for %s not delivered: %s", self.config.upper_id, channel_id, exc)
            return
        self.stats[f"ptz:{'forwarded' if status < 300 else 'refused_by_device'}"] += 1

    async def _message(self, body: bytes) -> Response | None:
        try:
            response = await self.endpoint.request(manscdp_request(self.config, body), self.peer)
        except (SipError, OSError):
            self.stats["message_timeouts"] += 1
            return None
        self.stats[f"message_answers:{response.status}"] += 1
        return response


def _gb_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, BEIJING).strftime("%Y-%m-%dT%H:%M:%S")


async def _await(aw: Any) -> None:
    await aw
