"""GB/T 28181 devices (IPC, NVR, lower platforms): the shell around registration, MESSAGE/NOTIFY,
queries and presence → health.

The router hands REGISTER, MESSAGE and NOTIFY here. REGISTER is decided by the sans-IO
`Registrar` (registrar.py, where the admission rules are); this shell only does what the
verdict says: answer, count, alarm, persist the binding, record health. MESSAGE/NOTIFY are
admitted by the whitelist at every request. The signalling binding (address, port, transport)
changes only on an authenticated REGISTER: a MESSAGE from anywhere else is answered like one
from an unregistered device. A MESSAGE body speaks only for the sending device (or, for a
platform, its own channels); catalog pages count only for a query we sent (catalog_sync.py).
Security alarms are de-duplicated per (device, kind, source). Keepalives touch memory only.
Devices going offline are announced to `offline_listeners` (media sessions BYE their dialogs).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any, Protocol

from adapters.base import HealthSink, Inventory
from adapters.gb_device.catalog_sync import CatalogSync
from adapters.gb_device.queries import Queries, QueryFailed, Requester
from adapters.gb_device.registrar import Accept, Challenge, Check, Refuse, Registrar, RegistrarSettings
from adapters.gb_device.scanned import apply_register, plain_register
from adapters.gb_device.subscriptions import CatalogSubscriptions, SubscribeAction
from adapters.outbound import LocalIdentity, RequestFactory
from gateway.gb import builders, manscdp
from gateway.gb.catalog import CatalogResult
from gateway.gb.errors import ManscdpError
from gateway.gb.ids import IdKind, is_valid_id, kind_of
from gateway.gb.keepalive_fast import is_plain_keepalive, quick_keepalive
from gateway.gb.presence import (
    DeviceRecord,
    OfflineCause,
    Presence,
    PresenceState,
    Transition,
    channel_offline_cause,
)
from gateway.health.metrics import MANSCDP_CMD_TYPES, bounded
from gateway.sip import digest, fastpath
from gateway.sip.errors import SipError, SipTimeout
from gateway.sip.events import Peer
from gateway.sip.message import Request, Response, make_response, new_call_id, new_tag, stateless_tag
from gateway.sip.router import SipRouter
from gateway.tasks import TaskSet
from whitelist.alarms import AlarmDeduper
from whitelist.decide import Policy, RequestKind, check_device_info
from whitelist.decide import Request as WlRequest
from whitelist.lockout import FloodGuard, Lockout
from whitelist.model import Credential, Entry

log = logging.getLogger(__name__)
BEIJING = timezone(timedelta(hours=8))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSettings:
    realm: str
    register_expires_max: int = 3600
    register_expires_min: int = 60
    digest_algorithm: str = "MD5"
    query_timeout: float = 5.0
    catalog_idle_timeout: float = 5.0
    catalog_first_timeout: float = 120.0
    sync_concurrency: int = 16
    query_on_register: bool = True
    play_catalog_wait: float = 5.0  # a play request waits this long for an in-flight catalog sync
    catalog_subscribe: bool = True  # SUBSCRIBE Catalog to lower platforms (type 200) after their sync
    catalog_subscribe_expires: int = 3600


_DATE_SECOND: list[Any] = [None, ""]  # (whole second, its formatted prefix): strftime once a second


def gb_date(ts: float) -> str:
    """GB time-sync `Date` value: local (Beijing) time with milliseconds (gb28181.md §3.5)."""
    second = int(ts // 1)
    us = round((ts - second) * 1e6)  # as datetime rounds it
    if us >= 1_000_000:
        second, us = second + 1, 0
    if _DATE_SECOND[0] != second:
        _DATE_SECOND[0] = second
        _DATE_SECOND[1] = datetime.fromtimestamp(second, BEIJING).strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{_DATE_SECOND[1]}{us // 1000:03d}"


class DeviceEndpoint(Requester, Protocol):
    """What the device shell needs from the SIP endpoint."""

    def respond(self, key: Hashable, response: Response, *, stateless: bool = False) -> None: ...

    def respond_raw(self, key: Hashable, data: bytes, status: int) -> None: ...

    def peer_fingerprint(self, peer: Peer) -> str | None: ...


OfflineListener = Callable[[str, str | None], None]


def register_ok_headers(device_id: str, peer: Peer, contact: str, expires: int,
                        now: float) -> tuple[tuple[str, str], ...]:
    """The extra headers of a registrar's 200 to a REGISTER: the binding (RFC 3261 §10.3 step 8)
    and the GB time-sync Date (gb28181.md §3.5), for the parsed and the fast paths alike."""
    return (("Contact", contact or f"<sip:{device_id}@{peer.host}:{peer.port}>"), ("Expires", str(expires)),
            ("Date", gb_date(now)))


def answer_plain_keepalive(s: fastpath.Scan, peer: Peer, rec: DeviceRecord | None, policy: Policy,
                           flood: FloodGuard, stats: Counter[str], now: float) -> fastpath.FastAnswer | None:
    """The checks and the 200 of a plain keepalive, shared by the one-process fast path and the SIP
    workers': bound address, MANSCDP body naming the sender, admitted (the memoized decision), then
    the flood guard (it changes state, so last). None: nothing changed, take the full path."""
    device_id = s.from_user
    if rec is None or rec.host != peer.host or rec.port != peer.port or rec.transport != peer.transport:
        return None
    if not is_plain_keepalive(s.get("Content-Type"), s.body, device_id):
        return None
    if not policy.allowed(device_id, peer.host, peer.transport, RequestKind.MESSAGE, now):
        return None  # memoized per device and source until the whitelist changes
    if not flood.allow(peer.host, now):
        stats["refused:flood"] += 1
        return fastpath.FastAnswer(None)
    data = fastpath.respond(s, 200, (peer.host, peer.port), to_tag=fastpath.stateless_tag(s))
    stats["responses:200"] += 1
    stats["manscdp:Notify:Keepalive"] += 1
    return fastpath.FastAnswer(200, data)


class GbDeviceAdapter:
    """REGISTER/MESSAGE/NOTIFY handlers for devices; also the client that queries them."""

    def __init__(
        self,
        *,
        settings: DeviceSettings,
        identity: LocalIdentity,
        endpoint: DeviceEndpoint,
        policy: Policy,
        lockout: Lockout,
        flood: FloodGuard,
        presence: Presence,
        nonces: digest.NonceIssuer,
        inventory: Inventory,
        health: HealthSink,
        whitelist_actions: Any,
        clock: Callable[[], float] = time.time,
        default_credential: Callable[[str], Credential] | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.requests = RequestFactory(identity)
        self.endpoint = endpoint
        self.policy = policy
        self.lockout = lockout
        self.flood = flood
        self.presence = presence
        self.nonces = nonces
        self.inventory = inventory
        self.health = health
        self.whitelist_actions = whitelist_actions
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self.offline_listeners: list[OfflineListener] = []
        self._tasks = TaskSet("gb-device", logger=log, on_error=self._task_failed)  # queries, syncs, offline work
        # audit and pending records: finished at stop, not cancelled (a store write cut short loses the record)
        self._writes = TaskSet("gb-device-writes", logger=log, on_error=self._task_failed)
        self._timer_task: asyncio.Task[None] | None = None
        self._stopped = False  # stop() ran: logins still waiting for the journal are not answered
        self.replays = digest.ReplayGuard(ttl=nonces.ttl)
        self.alarms = AlarmDeduper()
        self.registrar = Registrar(
            settings=RegistrarSettings(
                realm=settings.realm, register_expires_max=settings.register_expires_max,
                register_expires_min=settings.register_expires_min, digest_algorithm=settings.digest_algorithm),
            policy=policy, lockout=lockout, flood=flood, presence=presence, nonces=nonces, replays=self.replays,
            default_credential=default_credential,
        )
        self.queries = Queries(endpoint=endpoint, requests=self.requests, presence=presence,
                               timeout=settings.query_timeout, first_sn=int(clock()))
        self.catalog = CatalogSync(
            queries=self.queries, presence=presence, policy=policy, inventory=inventory, health=health,
            stats=self.stats, spawn=self.spawn, alarm=self._alarm, refresh_info=self.refresh_device_info,
            clock=clock, idle_timeout=settings.catalog_idle_timeout, first_timeout=settings.catalog_first_timeout,
            query_on_register=settings.query_on_register, play_wait=settings.play_catalog_wait,
            on_synced=self._catalog_synced,
        )
        self._event_ids = itertools.count(int(clock()) % 100000 + 1)
        self.subscriptions = CatalogSubscriptions(self._new_dialog, expires=settings.catalog_subscribe_expires)

    # ------------------------------------------------------------------ lifecycle
    def install(self, router: SipRouter) -> None:
        """Take REGISTER, MESSAGE and NOTIFY, and hear of closed TCP/TLS connections."""
        router.add_method("REGISTER", self.on_register)
        router.add_method("MESSAGE", self.on_message)
        router.add_method("NOTIFY", self.on_notify)
        router.add_fast("REGISTER", self.fast_register)
        router.add_fast("MESSAGE", self.fast_keepalive)
        router.add_connection_listener(self.on_connection_closed)

    async def start(self) -> None:
        await self._restore_bindings()
        self._timer_task = asyncio.create_task(self._tick(), name="gb-device-timers")
        self.catalog.start_workers(self.settings.sync_concurrency)

    async def stop(self) -> None:
        self._stopped = True
        if self._timer_task:
            self._timer_task.cancel()
            await asyncio.gather(self._timer_task, return_exceptions=True)
        await self._tasks.close()
        await self._writes.join()
        for rec in list(self.presence.records()):
            if rec.online:
                self.inventory.update_device(rec.device_id, online=False, last_keepalive=_dt(rec.last_keepalive))

    async def _restore_bindings(self) -> None:
        """Registrations persisted by the previous process (issue 16 #1). An unexpired UDP binding
        is restored as registered-but-not-online, so the device's next keepalive from exactly that
        address is accepted and brings it online. A binding that expired while we were down is
        recorded offline from its expiry. TCP/TLS bindings died with their connections."""
        now = self.clock()
        self.replays.forget_before(now)  # the old process's accepted (nonce, nc) pairs are unknown
        await self.catalog.load()
        try:
            bindings = await self.inventory.bindings()
        except Exception:
            log.exception("cannot load registration bindings; devices must register again")
            return
        expired: list[dict[str, Any]] = []
        for b in bindings:
            device_id = b["device_id"]
            usable = b["transport"] == "udp" and b["realm"] == self.settings.realm
            if b["expires_at"] <= now:
                expired.append(b)
            if b["expires_at"] <= now or not usable:
                self.inventory.delete_binding(device_id)
                continue
            self.presence.restore(
                device_id, transport=b["transport"], host=b["host"], port=b["port"], call_id=b["call_id"],
                contact=b["contact"], expires_at=b["expires_at"], registered_at=b["registered_at"], now=now,
                user_agent=b["user_agent"],
            )
            entry = self.policy.get(device_id)
            self.catalog.set_limit(device_id, entry.max_channels if entry is not None else None,
                                   entry.channel_ranges if entry is not None else ())
            self.stats["bindings:restored"] += 1
        for b in expired:
            device_id, ts = b["device_id"], b["expires_at"]
            evidence = {"device_id": device_id, "expired_while_down": True}
            self.health.set_state(f"device:{device_id}", "offline", OfflineCause.EXPIRED.value, ts, evidence)
            ch_cause = channel_offline_cause(device_id, OfflineCause.EXPIRED.value)
            ch_evidence = {**evidence, "device_cause": OfflineCause.EXPIRED.value}
            for channel_id in self.catalog.stored_channels(device_id):
                self.health.set_state(f"channel:{channel_id}", "offline", ch_cause, ts, ch_evidence)
            self.stats["bindings:expired_while_down"] += 1

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, name=name)

    def spawn_write(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """A store write (audit, pending record): `stop` waits for it instead of cancelling it."""
        return self._writes.spawn(coro, name=name)

    def _task_failed(self, task: asyncio.Task[Any], exc: BaseException) -> None:
        self.stats["task_errors"] += 1

    async def _tick(self) -> None:
        """One timer for all deadlines: presence expiry and catalog assembly timeouts."""
        while True:
            await asyncio.sleep(0.5)
            now = self.clock()
            try:
                for t in self.presence.expire(now):
                    self._apply_transition(t)
                for device_id in self.presence.drain_dropped():
                    self.inventory.delete_binding(device_id)  # ran out while offline
                self.catalog.handle_timer(now)
                for action in self.subscriptions.due(now):
                    self.spawn(self._subscribe(action), name=f"subscribe-{action.device_id}")
                self._flush_alarms(now)
            except Exception:
                log.exception("device timer failed")

    def on_connection_closed(self, peer: Peer) -> None:
        if peer.conn_id is None:
            return
        for t in self.presence.drop_connection(peer.conn_id, self.clock()):
            self._apply_transition(t)

    def _respond(
        self,
        key: Hashable,
        request: Request,
        status: int,
        peer: Peer,
        *,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] | None = None,
        stateless: bool = False,
    ) -> None:
        """`stateless`: no Timer J for this answer (RFC 3261 §8.2.7); only for requests that are
        harmless to process twice — challenges, keepalives, answers to our queries."""
        tag = stateless_tag(request) if stateless else new_tag()
        response = make_response(
            request, status, reason, to_tag=tag, headers=headers or [], received=(peer.host, peer.port)
        )
        self.stats[f"responses:{status}"] += 1
        self.endpoint.respond(key, response, stateless=stateless)

    def _refuse(self, key: Hashable, request: Request, peer: Peer, reason: str, status: int = 403) -> None:
        self.stats[f"refused:{reason}"] += 1
        self._respond(key, request, status, peer, reason="Forbidden" if status == 403 else None)

    # ------------------------------------------------------------------ REGISTER
    def on_register(self, request: Request, peer: Peer, key: Hashable) -> None:
        """Ask the registrar, then do what it decided."""
        now = self.clock()
        fingerprint = self.endpoint.peer_fingerprint(peer) if peer.transport == "tls" else None
        verdict = self.registrar.admit(request, peer, now, cert_fingerprint=fingerprint)
        for name in verdict.counts:
            self.stats[name] += 1
        device_id = request.from_.uri.user or ""
        if isinstance(verdict, Challenge):
            if verdict.alarm is not None:
                self._alarm(device_id, verdict.alarm.kind, peer, verdict.alarm.detail)
            # A registrar's challenge is the textbook stateless answer (RFC 3261 §8.2.7): a
            # registration storm then keeps no transaction per device for 32 s.
            self._respond(key, request, 401, peer, headers=[("WWW-Authenticate", verdict.www_authenticate)],
                          stateless=True)
        elif isinstance(verdict, Refuse):
            self.stats[f"refused:{verdict.reason}"] += 1
            if verdict.pending:
                self._record_pending(device_id, request, peer, now)
            if verdict.status is not None:
                self._respond(key, request, verdict.status, peer, reason=verdict.phrase)
            if verdict.alarm is not None:
                self._alarm(device_id, verdict.alarm.kind, peer, verdict.alarm.detail)
        else:
            self._accepted(verdict, key, request, peer, now)

    def _accepted(self, v: Accept, key: Hashable, request: Request, peer: Peer, now: float) -> None:
        device_id = v.device_id
        if v.expires == 0:
            self._unregister(device_id, now, OfflineCause.UNREGISTERED)
            self._respond(key, request, 200, peer, headers=[("Expires", "0")])
            return
        assert v.record is not None
        ok_headers = register_ok_headers(device_id, peer, v.contact, v.expires, now)
        if not self._login(v.record, v.entry, v.transition, v.new_login, peer, v.contact, v.expires, now):
            self._respond(key, request, 200, peer, headers=ok_headers)  # plain refresh
            return
        try:
            pending = self._health_device(v.transition) if v.transition is not None else None
        except Exception as exc:  # as when it failed inside the login task: logged, counted, no 200
            log.error("gb-device: login of %s failed", device_id, exc_info=exc)
            self.stats["task_errors"] += 1
            return
        self._answer_login(device_id, pending, partial(self._respond, key, request, 200, peer, headers=ok_headers))

    def _answer_login(self, device_id: str, pending: Any, answer: Callable[[], None]) -> None:
        """`answer` the login's REGISTER once `pending` (from `_health_device`: its online event)
        is durable, then query DeviceInfo and Catalog. None (a new Call-ID from a device already
        online: no transition to record): at once."""
        if pending is None:
            self._login_done(device_id, answer)
            return
        if isinstance(pending, asyncio.Future):
            # the common case, the journal's barrier: answer from its callback, no task per login
            pending.add_done_callback(lambda done: self._login_durable(done, device_id, answer))
            return
        self.spawn(self._finish_login(device_id, pending, answer), name=f"login-{device_id}")

    def _login(self, rec: DeviceRecord, entry: Entry | None, transition: Transition | None, new_login: bool,
               peer: Peer, contact: str, expires: int, now: float) -> bool:
        """Persist the binding; for a new login also the device row and event. True: a new login,
        whose 200 waits for its online event to be durable (`_login_persisted`)."""
        device_id = rec.device_id
        self.inventory.save_binding(
            device_id, transport=peer.transport, host=peer.host, port=peer.port, contact=contact[:400],
            call_id=rec.call_id[:200], realm=self.settings.realm, user_agent=rec.user_agent[:200],
            registered_at=rec.registered_at, expires_at=rec.expires_at,
        )
        self.catalog.set_limit(device_id, entry.max_channels if entry is not None else None,
                               entry.channel_ranges if entry is not None else ())
        if transition is None and not new_login:
            return False
        self.inventory.update_device(
            device_id,
            online=True,
            transport=peer.transport,
            remote_host=peer.host,
            remote_port=peer.port,
            contact=contact[:400],
            expires=expires,
            user_agent=rec.user_agent[:200],
            registered_at=_dt(now),
            name=(entry.name if entry is not None and entry.name else ""),
            site_id=(entry.site if entry is not None else None) or None,
            link_id=(entry.link if entry is not None else None) or None,
        )
        self.inventory.add_event(device_id, "registered", now, host=peer.host, transport=peer.transport)
        return True

    async def _login_persisted(self, transition: Transition | None) -> None:
        if transition is not None:
            pending = self._health_device(transition)
            if pending is not None:
                await pending

    async def _finish_login(self, device_id: str, pending: Any, answer: Callable[[], None]) -> None:
        """Wait until the online event is durable (`pending`, from `_health_device`), answer 200,
        then query DeviceInfo and Catalog."""
        await pending
        self._login_done(device_id, answer)

    def _login_durable(self, done: asyncio.Future[Any], device_id: str, answer: Callable[[], None]) -> None:
        """`_finish_login` as a callback of the journal's barrier future, with the same outcomes:
        cancelled — nothing (as a cancelled task); failed — logged and counted as a task error,
        no 200; durable — the 200 and the catalog query. Nothing once the adapter stopped (its
        login tasks would have been cancelled)."""
        if done.cancelled() or self._stopped:
            return
        try:
            exc = done.exception()
            if exc is not None:
                raise exc
            self._login_done(device_id, answer)
        except Exception as exc:
            log.error("gb-device: login of %s failed", device_id, exc_info=exc)
            self.stats["task_errors"] += 1

    def _login_done(self, device_id: str, answer: Callable[[], None]) -> None:
        answer()
        self.catalog.queue(device_id)

    # ------------------------------------------------------------------ SIP workers (gateway/app/sip_workers.py)
    def remote_login(self, device_id: str, peer: Peer, *, call_id: str, contact: str, user_agent: str,
                     expires: int, now: float) -> Coroutine[Any, Any, None] | None:
        """A REGISTER a SIP worker admitted (its registrar ran every check): record it here, where
        presence and the ledger live. None: a plain refresh, answer at once; else a coroutine that
        returns once the online event is durable (then answer and `catalog.queue`)."""
        rec, transition, new_login = self.presence.register(
            device_id, transport=peer.transport, host=peer.host, port=peer.port, conn_id=None, call_id=call_id,
            contact=contact, expires=expires, now=now, user_agent=user_agent)
        if not self._login(rec, self.policy.get(device_id), transition, new_login, peer, contact, expires, now):
            return None
        return self._login_persisted(transition)

    def remote_keepalive(self, device_id: str, now: float) -> None:
        """A keepalive a SIP worker answered (from the bound address): push the deadline here."""
        transition = self.presence.activity(device_id, now, keepalive=True)
        if transition is not None:
            self._apply_transition(transition)

    def alarm(self, device_id: str, kind: str, peer: Peer, reason: str) -> None:
        """A security alarm raised by a SIP worker (de-duplicated here like our own)."""
        self._alarm(device_id, kind, peer, reason)

    def _record_pending(self, device_id: str, request: Request, peer: Peer, now: float) -> None:
        evidence = {
            "device_id": device_id,
            "source": peer.host,
            "port": peer.port,
            "transport": peer.transport,
            "user_agent": request.headers.get("User-Agent") or "",
        }
        self.spawn_write(self.whitelist_actions.record_pending(evidence, now), name=f"pending-{device_id}")

    def _alarm(self, device_id: str, kind: str, peer: Peer, reason: str) -> None:
        """A security alarm: a device event (visible in the API) and an audit record — once per
        (device, kind, source) while it keeps happening; repeats only raise the event's count."""
        self.stats[f"alarms:{kind}"] += 1
        now = self.clock()
        hit = self.alarms.hit(device_id, kind, peer.host, now)
        if not hit.new:
            self.stats["alarms_deduplicated"] += 1
            return
        self.inventory.add_event(device_id, kind, now, source=hit.alarm.source, transport=peer.transport,
                                 reason=reason, count=1, first=now, last=now)
        self.spawn_write(self._audit(kind, device_id, peer, reason), name=f"audit-{device_id}")

    def _flush_alarms(self, now: float) -> None:
        """Write the counts of alarms that repeated (one UPDATE of their event each), then close
        the quiet ones."""
        for alarm in self.alarms.changed():
            self.inventory.update_alarm(alarm.device_id, alarm.kind, alarm.first, count=alarm.count,
                                        last=alarm.last)
        self.alarms.expire(now)

    async def _audit(self, action: str, device_id: str, peer: Peer, reason: str) -> None:
        await self.whitelist_actions.audit_event(action, device_id, {"source": peer.host}, reason)

    # ------------------------------------------------------------------ presence → health
    def _unregister(self, device_id: str, now: float, cause: OfflineCause) -> None:
        self.inventory.delete_binding(device_id)
        t = self.presence.unregister(device_id, now, cause)
        if t is not None:
            self._apply_transition(t)
        elif cause in (OfflineCause.REVOKED, OfflineCause.UNREGISTERED):
            self.inventory.update_device(device_id, online=False)

    def drop_device(self, device_id: str, cause: OfflineCause = OfflineCause.REVOKED) -> bool:
        """Forget a device at once (revoked/suspended): it must register again and will be refused."""
        was = device_id in self.presence
        self._unregister(device_id, self.clock(), cause)
        return was

    def _apply_transition(self, t: Transition) -> None:
        online = t.state is PresenceState.ONLINE
        rec = self.presence.get(t.device_id)
        values: dict[str, Any] = {"online": online}
        if rec is not None and rec.last_keepalive is not None:
            values["last_keepalive"] = _dt(rec.last_keepalive)
        self.inventory.update_device(t.device_id, **values)
        self.inventory.add_event(t.device_id, "online" if online else "offline", t.ts, cause=t.cause)
        pending = self._health_device(t)
        if pending is not None:
            self.spawn(_await(pending))
        if t.cause in (OfflineCause.EXPIRED.value, OfflineCause.CONNECTION_CLOSED.value):
            self.inventory.delete_binding(t.device_id)
        if online and not self.catalog.knows(t.device_id):
            self.catalog.queue(t.device_id)  # back from a restored binding: learn its channels again
        if not online:
            self.subscriptions.drop(t.device_id)  # its dialog died with it; a new login subscribes anew
            for listener in self.offline_listeners:
                listener(t.device_id, t.cause)  # media: BYE + end viewers (issue 12.2)

    def _health_device(self, t: Transition) -> Any:
        """Record the device's transition and its channels' (one durable awaitable for the batch)."""
        online = t.state is PresenceState.ONLINE
        state = "online" if online else "offline"
        evidence = {"device_id": t.device_id}
        first = self.health.set_state(f"device:{t.device_id}", state, t.cause, t.ts, evidence)
        channels = self.catalog.channels_of(t.device_id)
        if not channels:  # a login's common case (its catalog comes later): the device's own event
            return first
        pending = [first]
        # a platform's channels all point at its one device-level event (cause platform_offline)
        off_cause = channel_offline_cause(t.device_id, t.cause)
        ch_evidence = evidence if off_cause == t.cause else {**evidence, "device_cause": t.cause}
        for channel_id, on in channels.items():
            ch_state = "online" if online and on else "offline"
            cause = off_cause if not online else ("registered" if on else "catalog_off")
            pending.append(self.health.set_state(f"channel:{channel_id}", ch_state, cause, t.ts, ch_evidence))
        # the journal hands every event of a batch the same barrier future: await it once, and
        # without a gather around a lone future (a login's common case)
        waits = list(dict.fromkeys(p for p in pending if p is not None))
        if not waits:
            return None
        return waits[0] if len(waits) == 1 else asyncio.gather(*waits)

    # ------------------------------------------------------------------ catalog subscriptions
    def _new_dialog(self) -> tuple[str, str, int]:
        return new_call_id(self.identity.host), new_tag(), next(self._event_ids)

    def _catalog_synced(self, device_id: str) -> None:
        """A lower platform's catalog is known: subscribe to its changes (issue 14 #2, §4.15)."""
        if not self.settings.catalog_subscribe or kind_of(device_id) is not IdKind.PLATFORM:
            return
        if self.subscriptions.get(device_id) is None:
            self.subscriptions.want(device_id, self.clock())

    async def _subscribe(self, action: SubscribeAction) -> None:
        """Send one SUBSCRIBE (new dialog or refresh) and hand its answer to the sans-IO core."""
        rec = self.presence.get(action.device_id)
        if rec is None or not rec.online:
            self.subscriptions.drop(action.device_id)
            return
        peer = Peer(rec.transport, rec.host, rec.port, rec.conn_id)
        body = builders.build_query("Catalog", self.queries.next_sn(), action.device_id)
        req = self.requests.request(
            "SUBSCRIBE", action.device_id, rec.host, rec.port, transport=rec.transport, body=body,
            content_type="Application/MANSCDP+xml", call_id=action.call_id, from_tag=action.from_tag,
            to_tag=action.to_tag, cseq=action.cseq,
            extra=[("Expires", str(action.expires)), ("Event", f"Catalog;id={action.event_id}")],
        )
        status, to_tag, expires = 0, None, None
        try:
            resp = await self.endpoint.request(req, peer, timeout=self.settings.query_timeout)
            status, to_tag = resp.status, resp.to.tag
            raw = (resp.headers.get("Expires") or "").strip()
            expires = int(raw) if raw.isascii() and raw.isdigit() else None
        except (SipTimeout, SipError) as exc:
            log.info("SUBSCRIBE Catalog to %s failed: %s", action.device_id, exc)
        state = self.subscriptions.on_answer(action.device_id, action.call_id, status, self.clock(),
                                             to_tag=to_tag, expires=expires)
        if state is not None:
            self.stats[f"subscribe:{state.value}"] += 1

    # ------------------------------------------------------------------ fast paths
    # The two requests of a steady swarm, answered from a header scan (gateway/sip/fastpath.py)
    # with what on_register / on_message would do for them: same checks, same order of effects,
    # same counters, same bytes. Each first runs every check that changes nothing and returns
    # None (full path) unless the outcome is the common one; only then does it consult the flood
    # guard (which counts) and act.

    def fast_register(self, s: fastpath.Scan, peer: Peer) -> fastpath.FastAnswer | None:
        """A REGISTER without credentials from a valid ID with a plain Expires: the challenge;
        one with credentials (the endpoint offers those: `fast_credentials`): `fast_admit`."""
        if peer.transport == "tls":
            return None
        if s.get("Authorization") is not None:
            return self.fast_admit(s, peer)
        if not is_valid_id(s.from_user):
            return None
        expires = s.get("Expires")
        if expires is None or not expires.isdigit():
            return None
        now = self.clock()
        if not self.flood.allow(peer.host, now):
            self.stats["refused:flood"] += 1
            return fastpath.FastAnswer(None)
        challenge = self.registrar.challenge(Check.DIGEST, peer, now)
        self.stats["responses:401"] += 1
        return fastpath.FastAnswer(401, fastpath.respond(
            s, 401, (peer.host, peer.port), to_tag=fastpath.stateless_tag(s),
            extra=(("WWW-Authenticate", challenge.www_authenticate),)))

    def fast_admit(self, s: fastpath.Scan, peer: Peer) -> fastpath.FastAnswer | None:
        """`on_register` → `Registrar.admit` → `_accepted` for a REGISTER the registrar accepts
        with a lifetime (adapters/gb_device/scanned.py), from the scan: the same checks, effects,
        rows and counters. A plain refresh's 200 goes at once, kept in a transaction for Timer J
        as `_respond` keeps it; a login's waits, as on the full path, until its online event is
        durable (the endpoint holds the transaction meanwhile: `FastAnswer(None)`)."""
        now = self.clock()
        r = plain_register(self.registrar, s, peer, now)
        if r is None:
            return None
        if not self.flood.allow(peer.host, now):
            self.stats["refused:flood"] += 1
            return fastpath.FastAnswer(None)
        device_id, call_id = s.from_user, s.values[3]
        assert call_id is not None
        rec, transition, new_login = apply_register(self.registrar, device_id, call_id, r, peer, now)
        self.stats["auth:ok"] += 1
        data = fastpath.respond(s, 200, (peer.host, peer.port), to_tag=new_tag(),
                                extra=register_ok_headers(device_id, peer, r.contact, r.expires, now))
        if not self._login(rec, r.entry, transition, new_login, peer, r.contact, r.expires, now):
            self.stats["responses:200"] += 1  # a plain refresh: the binding row only
            return fastpath.FastAnswer(200, data, keep=True)
        try:
            pending = self._health_device(transition) if transition is not None else None
        except Exception as exc:  # as on the full path: logged, counted, no 200
            log.error("gb-device: login of %s failed", device_id, exc_info=exc)
            self.stats["task_errors"] += 1
            return fastpath.FastAnswer(None)
        if pending is None:  # already online (a new Call-ID): nothing to wait for, answered as `_answer_login` does
            self.stats["responses:200"] += 1
            self.catalog.queue(device_id)  # its queries start after this 200 leaves (a task's turn)
            return fastpath.FastAnswer(200, data, keep=True)
        self._answer_login(device_id, pending, partial(self._respond_raw, s.server_key, 200, data))
        return fastpath.FastAnswer(None)

    def _respond_raw(self, key: Hashable, status: int, data: bytes) -> None:
        """`_respond` for a transaction the fast path holds, with the answer's bytes built."""
        self.stats[f"responses:{status}"] += 1
        self.endpoint.respond_raw(key, data, status)

    def fast_keepalive(self, s: fastpath.Scan, peer: Peer) -> fastpath.FastAnswer | None:
        """A plain Keepalive from a registered device at its bound address, admitted: 200."""
        if peer.transport == "tls":
            return None
        now = self.clock()
        answer = answer_plain_keepalive(s, peer, self.presence.get(s.from_user), self.policy, self.flood,
                                        self.stats, now)
        if answer is not None and answer.status == 200:
            transition = self.presence.activity(s.from_user, now, keepalive=True)
            if transition is not None:
                self._apply_transition(transition)
        return answer

    # ------------------------------------------------------------------ MESSAGE / NOTIFY
    def on_notify(self, request: Request, peer: Peer, key: Hashable) -> None:
        self.on_message(request, peer, key, notify=True)

    def on_message(self, request: Request, peer: Peer, key: Hashable, *, notify: bool = False) -> None:
        now = self.clock()
        if not self.flood.allow(peer.host, now):
            self.stats["refused:flood"] += 1
            return
        device_id = request.from_.uri.user or ""
        rec = self.presence.get(device_id)
        if rec is None:
            self.stats["refused:not_registered"] += 1
            self._respond(key, request, 404, peer, reason="Device Not Registered")
            return
        if (rec.host, rec.port, rec.transport) != (peer.host, peer.port, peer.transport):
            # Only an authenticated REGISTER moves the binding (issue 10 #5): a MESSAGE from another
            # address or port — a NAT neighbour, or the camera itself after its NAT mapping changed —
            # gets the same answer as an unregistered device, so a real camera registers again.
            self.stats["refused:binding_mismatch"] += 1
            self._alarm(device_id, "alarm_binding_mismatch", peer,
                        f"registered from {rec.host}:{rec.port}/{rec.transport}")
            self._respond(key, request, 404, peer, reason="Device Not Registered")
            return
        decision = self.policy.decide(
            WlRequest(
                device_id=device_id, source_ip=peer.host, transport=peer.transport, kind=RequestKind.MESSAGE,
                cert_fingerprint=self.endpoint.peer_fingerprint(peer) if peer.transport == "tls" else None,
            ),
            datetime.fromtimestamp(now, UTC),
        )
        if not decision.allowed:
            self._refuse(key, request, peer, decision.reason.value)
            self._unregister(device_id, now, OfflineCause.REVOKED)
            return
        ctype = request.content_type or ""
        if request.body and "manscdp" not in ctype:
            self._respond(key, request, 415, peer)
            return
        quick = quick_keepalive(request.body)
        if quick is not None and not self._speaks_for(device_id, quick.device_id):
            self._foreign_body(key, request, peer, device_id, quick.device_id)
            return
        if quick is not None:
            # the plain keepalive shape: no XML parser needed (anything unusual takes the full path);
            # a keepalive seen twice is still one keepalive, so no transaction is kept for it
            self._respond(key, request, 200, peer, stateless=True)
            self.stats["manscdp:Notify:Keepalive"] += 1
            transition = self.presence.activity(device_id, now, keepalive=True)
            if transition is not None:
                self._apply_transition(transition)
            return
        try:
            msg = manscdp.parse(request.body)
        except ManscdpError as exc:
            self.stats[f"refused:bad_manscdp:{exc.reason}"] += 1
            self._respond(key, request, 400, peer, reason=exc.reason)
            return
        if not self._speaks_for(device_id, msg.device_id, catalog=msg.cmd_type == "Catalog"):
            self._foreign_body(key, request, peer, device_id, msg.device_id)
            return
        # Answer first, then process (§2.3): retransmissions are absorbed by the transaction layer,
        # except for keepalives and answers to our queries, which are harmless to see twice (the
        # catalog assembler ignores pages of a finished catalog; a late DeviceInfo has no waiter).
        idempotent = msg.cmd_type == "Keepalive" or msg.root is manscdp.Root.RESPONSE
        self._respond(key, request, 200, peer, stateless=idempotent)
        transition = self.presence.activity(device_id, now, keepalive=msg.cmd_type == "Keepalive")
        if transition is not None:
            self._apply_transition(transition)
        self._dispatch(device_id, msg, now)

    def _speaks_for(self, device_id: str, body_id: str, *, catalog: bool = False) -> bool:
        """A body's DeviceID must be the sender, or (not for a catalog) one of the sender's own
        channels — how a platform reports for a camera behind it (issue 10 #3)."""
        if body_id == device_id:
            return True
        return not catalog and self.catalog.owner_of(body_id) == device_id

    def _foreign_body(self, key: Hashable, request: Request, peer: Peer, device_id: str, body_id: str) -> None:
        self._alarm(device_id, "alarm_foreign_device_id", peer, f"body DeviceID {body_id[:40]!r} is not its own")
        self._refuse(key, request, peer, "foreign_device_id")

    def _dispatch(self, device_id: str, msg: manscdp.Manscdp, now: float) -> None:
        cmd = msg.cmd_type
        self.stats[f"manscdp:{msg.root.value}:{bounded(cmd, MANSCDP_CMD_TYPES)}"] += 1
        if cmd == "Keepalive":
            return
        try:
            if cmd == "Catalog" and msg.root is manscdp.Root.RESPONSE:
                self.catalog.on_page(device_id, manscdp.catalog_response(msg), now)
                return
            if cmd == "Catalog" and msg.root is manscdp.Root.NOTIFY:
                self.spawn(self.catalog.apply_notify(device_id, manscdp.catalog_notify(msg)))
                return
            self.queries.resolve(device_id, cmd, msg.sn, msg)
        except ManscdpError as exc:
            self.stats[f"bad_manscdp:{exc.reason}"] += 1

    # ------------------------------------------------------------------ queries
    async def query(self, device_id: str, cmd_type: str) -> manscdp.Manscdp:
        """Send a Query and wait for the matching Response MESSAGE (same SN, §4.1)."""
        return await self.queries.query(device_id, cmd_type)

    async def refresh_device_info(self, device_id: str) -> manscdp.DeviceInfo:
        info = manscdp.device_info(await self.query(device_id, "DeviceInfo"))
        values = {
            "manufacturer": (info.manufacturer or "")[:200],
            "model": (info.model or "")[:200],
            "firmware": (info.firmware or "")[:200],
        }
        entry = self.policy.get(device_id)
        if info.name and not (entry is not None and entry.name):
            values["name"] = info.name[:200]  # the whitelist's name (given by an operator) wins
        self.inventory.update_device(device_id, **values)
        if entry is not None:
            verdict = check_device_info(entry, info.manufacturer, info.model, info.firmware)
            if not verdict.allowed:
                self.stats["refused:model_mismatch"] += 1
                evidence = {"manufacturer": info.manufacturer, "model": info.model, "firmware": info.firmware}
                await self.whitelist_actions.suspend_for_mismatch(device_id, evidence)
                self.inventory.add_event(device_id, "alarm_model_mismatch", self.clock(), **evidence)
                self.stats["alarms:alarm_model_mismatch"] += 1
                self.drop_device(device_id, OfflineCause.REVOKED)
        return info

    async def device_control(self, channel_id: str, fields: dict[str, str]) -> int:
        """Send Control/DeviceControl (e.g. {"PTZCmd": …}) to the device owning `channel_id` and
        return the status of its answer (§4.8; no Response MESSAGE is awaited). QueryFailed when
        no registered device owns the channel or it does not answer."""
        owner = self.catalog.channel_owner(channel_id) or channel_id
        rec, peer = self.queries.peer_of(owner)
        body = builders.build_control("DeviceControl", self.queries.next_sn(), channel_id, extra=fields)
        req = self.requests.manscdp(channel_id, rec.host, rec.port, body, transport=rec.transport)
        try:
            response = await self.endpoint.request(req, peer, timeout=self.settings.query_timeout)
        except SipError:
            raise QueryFailed(f"DeviceControl to {channel_id}: no answer") from None
        self.stats[f"control:{response.status}"] += 1
        return response.status

    async def device_status(self, device_id: str) -> manscdp.DeviceStatus:
        return manscdp.device_status(await self.query(device_id, "DeviceStatus"))

    async def sync_catalog(self, device_id: str, *, wait_written: bool = True) -> CatalogResult:
        """Query the catalog and wait until it is assembled and applied (see CatalogSync.sync)."""
        return await self.catalog.sync(device_id, wait_written=wait_written)

    def channel_owner(self, channel_id: str) -> str | None:
        return self.catalog.channel_owner(channel_id)

    # ------------------------------------------------------------------ views for the API
    def live_view(self, device_id: str) -> dict[str, Any] | None:
        rec = self.presence.get(device_id)
        if rec is None:
            return None
        return {
            "online": rec.online,
            "transport": rec.transport,
            "remote": f"{rec.host}:{rec.port}",
            "registered_at": rec.registered_at,
            "last_keepalive": rec.last_keepalive,
            "expires_at": rec.expires_at,
        }


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


async def _await(aw: Any) -> None:
    await aw
