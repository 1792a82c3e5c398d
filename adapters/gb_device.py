"""GB/T 28181 devices (IPC, NVR, lower platforms): registration, keepalive, queries, catalog.

The SIP endpoint hands every request here. Admission is decided by the whitelist at every
request (REGISTER, MESSAGE, NOTIFY). A REGISTER that has not proven its credential gets one
uniform answer, 403, whatever the real reason (unknown ID → also recorded `pending`, wrong
password → counts toward a lockout, wrong source, locked); the stats and audit keep the reason.
A digest (nonce, nc) pair is accepted once and only from the address it was issued to.
The signalling binding (address, port, transport) changes only on an authenticated REGISTER:
a MESSAGE from anywhere else is answered like one from an unregistered device. A MESSAGE body
speaks only for the sending device (or, for a platform, its own channels); catalog pages count
only for a query we sent, and a channel ID owned by another device is refused with an alarm.
Security alarms are de-duplicated per (device, kind, source). Keepalives touch memory only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from adapters.base import HealthSink, Inventory, MediaSessions
from adapters.outbound import LocalIdentity, RequestFactory
from gateway.gb import manscdp
from gateway.gb.catalog import CatalogAssembler, CatalogDiff, CatalogResult
from gateway.gb.errors import GbError, ManscdpError
from gateway.gb.ids import is_playable_channel, is_valid_id
from gateway.gb.keepalive_fast import quick_keepalive
from gateway.gb.presence import OfflineCause, Presence, PresenceState, Transition
from gateway.health.metrics import MANSCDP_CMD_TYPES, SIP_METHODS, bounded
from gateway.sip import digest
from gateway.sip.errors import SipError, SipParseError, SipTimeout
from gateway.sip.message import Request, Response, make_response, new_tag, stateless_tag
from gateway.sip.transaction import Peer
from whitelist.alarms import AlarmDeduper
from whitelist.decide import Decision, Policy, Reason, RequestKind, check_device_info
from whitelist.decide import Request as WlRequest
from whitelist.lockout import FloodGuard, Lockout
from whitelist.model import EntryStatus

log = logging.getLogger(__name__)
BEIJING = timezone(timedelta(hours=8))
ALLOWED_METHODS = "REGISTER, MESSAGE, NOTIFY, INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"


class QueryFailed(GbError):
    """A MANSCDP query got no (good) answer."""


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


class GbDeviceAdapter:
    """The SIP application for devices; also the client that queries them."""

    def __init__(
        self,
        *,
        settings: DeviceSettings,
        identity: LocalIdentity,
        policy: Policy,
        lockout: Lockout,
        flood: FloodGuard,
        presence: Presence,
        nonces: digest.NonceIssuer,
        inventory: Inventory,
        health: HealthSink,
        whitelist_actions: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.requests = RequestFactory(identity)
        self.policy = policy
        self.lockout = lockout
        self.flood = flood
        self.presence = presence
        self.nonces = nonces
        self.inventory = inventory
        self.health = health
        self.whitelist_actions = whitelist_actions
        self.clock = clock
        self.endpoint: Any = None
        self.media: MediaSessions | None = None
        self.stats: Counter[str] = Counter()
        self.catalogs = CatalogAssembler(
            idle_timeout=settings.catalog_idle_timeout, first_timeout=settings.catalog_first_timeout
        )
        self._waiters: dict[tuple[str, str, int], asyncio.Future[Any]] = {}
        self._sn = int(clock()) % 100000
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer_task: asyncio.Task[None] | None = None
        self._channel_limits: dict[str, int | None] = {}
        # exposed channels of each device and whether their catalog said ON: device transitions
        # become channel transitions in the health ledger (reports read channel timelines)
        self._channels: dict[str, dict[str, bool]] = {}
        self._catalog_cache: dict[str, dict[str, int]] = {}  # device → {channel_id: fingerprint}
        self._catalog_loaded: asyncio.Future[None] | None = None
        self._catalog_writes: dict[str, asyncio.Future[Any]] = {}
        self._sync_queue: asyncio.Queue[str] = asyncio.Queue()
        self._sync_pending: set[str] = set()
        # sip.default_password: a shared credential for admitted entries that have none (off by default)
        self.default_credential: Callable[[str], Any] | None = None
        self.replays = digest.ReplayGuard(ttl=nonces.ttl)
        self.alarms = AlarmDeduper()
        # channel ID → the device that owns it (every stored or accepted catalog item): ownership
        # never moves silently, and the play resolver sees accepted items before the store does
        self._owners: dict[str, str] = {}
        self._syncing: set[str] = set()  # devices whose post-login catalog sync has not finished
        self._catalog_applied = asyncio.Event()  # pulsed whenever a catalog is applied or a sync ends

    # ------------------------------------------------------------------ lifecycle
    def attach(self, endpoint: Any) -> None:
        self.endpoint = endpoint

    async def start(self) -> None:
        await self._restore_bindings()
        self._timer_task = asyncio.create_task(self._tick(), name="gb-device-timers")
        for i in range(self.settings.sync_concurrency):
            self.spawn(self._sync_worker(), name=f"device-sync-{i}")

    async def stop(self) -> None:
        if self._timer_task:
            self._timer_task.cancel()
            await asyncio.gather(self._timer_task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
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
        # channel ownership is needed from the first MESSAGE on (a platform speaking for a channel)
        self._catalog_loaded = asyncio.ensure_future(self._load_catalogs())
        try:
            await asyncio.shield(self._catalog_loaded)
        except Exception:
            log.exception("cannot load stored channels now; the first catalog sync tries again")
            self._catalog_loaded = None
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
            self._channel_limits[device_id] = entry.max_channels if entry is not None else None
            self.stats["bindings:restored"] += 1
        for b in expired:
            device_id, ts = b["device_id"], b["expires_at"]
            evidence = {"device_id": device_id, "expired_while_down": True}
            self.health.set_state(f"device:{device_id}", "offline", OfflineCause.EXPIRED.value, ts, evidence)
            for channel_id in self._catalog_cache.get(device_id, {}):
                self.health.set_state(f"channel:{channel_id}", "offline", OfflineCause.EXPIRED.value, ts, evidence)
            self.stats["bindings:expired_while_down"] += 1

    def spawn(self, coro: Any, name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["task_errors"] += 1
            log.warning("device task %s failed: %r", task.get_name(), task.exception())

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
                for result in self.catalogs.handle_timer(now):
                    self._catalog_done(result)
                self._flush_alarms(now)
            except Exception:
                log.exception("device timer failed")

    # ------------------------------------------------------------------ SIP application
    def on_request(self, request: Request, peer: Peer, key: Hashable) -> None:
        method = request.method
        self.stats[f"requests:{bounded(method, SIP_METHODS)}"] += 1
        try:
            if method == "REGISTER":
                self._on_register(request, peer, key)
            elif method == "MESSAGE":
                self._on_message(request, peer, key)
            elif method == "NOTIFY":
                self._on_message(request, peer, key, notify=True)
            elif method == "OPTIONS":
                self._respond(key, request, 200, peer, headers=[("Allow", ALLOWED_METHODS)])
            elif method in ("BYE", "CANCEL", "INFO"):
                handled = self.media is not None and method == "BYE" and self.media.on_remote_bye(request.call_id)
                self._respond(key, request, 200 if handled else 481, peer)
            elif method == "INVITE":
                self._respond(key, request, 488, peer, reason="Not Acceptable Here")
            elif method in ("SUBSCRIBE", "PUBLISH", "UPDATE", "PRACK", "REFER"):
                self._respond(key, request, 405, peer, headers=[("Allow", ALLOWED_METHODS)])
            else:
                self._respond(key, request, 501, peer, reason="Not Implemented")
        except SipParseError as exc:
            self.stats[f"refused:bad_request:{exc.reason}"] += 1
            self._respond(key, request, 400, peer, reason=exc.reason)
        except Exception:
            log.exception("error handling %s", method)
            self.stats["internal_errors"] += 1
            self._respond(key, request, 500, peer)

    def on_ack(self, request: Request, peer: Peer) -> None:
        self.stats["acks"] += 1

    def on_stray_response(self, response: Response, peer: Peer) -> None:
        """A retransmitted or late 2xx to our INVITE: the media sessions re-ACK (or BYE) it."""
        handler = getattr(self.media, "on_stray_response", None)
        if handler is not None and handler(response, peer):
            return
        self.stats["stray_responses"] += 1

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
        headers: list[tuple[str, str]] | None = None,
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

    def _deny(self, key: Hashable, request: Request, peer: Peer, reason: str, creds: digest.Credentials) -> None:
        """The one answer to a REGISTER that has not proven its credential (issue 10 #9): 403
        Forbidden for an unknown ID, a wrong password, a wrong source or a lock alike, after the
        same digest work, so neither status, reason phrase nor timing tells them apart."""
        if reason != "bad_credentials":
            digest.verify(creds, "REGISTER", "0" * 32)
        self._refuse(key, request, peer, reason)

    # ------------------------------------------------------------------ REGISTER
    @staticmethod
    def _nonce_source(peer: Peer) -> str:
        """What a nonce is bound to: the exact address and port the challenge went to."""
        return f"{peer.transport}:{peer.host}:{peer.port}"

    def _challenge(self, key: Hashable, request: Request, peer: Peer, *, stale: bool = False) -> None:
        now = self.clock()
        alg = digest.Algorithm(self.settings.digest_algorithm)
        nonce = self.nonces.issue(now, self._nonce_source(peer))
        value = digest.challenge(self.settings.realm, nonce, alg, qop=True, stale=stale)
        # A registrar's challenge is the textbook stateless answer (RFC 3261 §8.2.7): a
        # registration storm then keeps no transaction per device for 32 s.
        self._respond(key, request, 401, peer, headers=[("WWW-Authenticate", value)], stateless=True)

    def _on_register(self, request: Request, peer: Peer, key: Hashable) -> None:
        now = self.clock()
        if not self.flood.allow(peer.host, now):
            self.stats["refused:flood"] += 1
            return  # ignored source: no answer at all
        device_id = request.from_.uri.user or ""
        if not is_valid_id(device_id):
            self._refuse(key, request, peer, "invalid_id")
            return
        expires = _expires(request)
        if expires is None:
            self.stats["refused:bad_request:Missing Expires"] += 1
            self._respond(key, request, 400, peer, reason="Missing Expires")
            return
        auth = request.headers.get("Authorization")
        if auth is None:
            # Unknown, locked and known IDs all look the same until credentials are presented.
            self._challenge(key, request, peer)
            return
        creds = digest.parse_credentials(auth)
        bound = self.presence.get(device_id)
        binding_matches = bound is not None and (bound.host, bound.transport) == (peer.host, peer.transport)
        locked = self.lockout.is_locked(device_id, peer.host, now, binding_matches=binding_matches)
        if locked is not None:
            self._deny(key, request, peer, str(locked), creds)
            return
        state = self.nonces.check(creds.nonce, now, self._nonce_source(peer))
        if state is not digest.NonceState.VALID:
            self.stats[f"auth:nonce_{state.value.lower()}"] += 1
            self._challenge(key, request, peer, stale=state is digest.NonceState.STALE)
            return
        decision = self.policy.decide(
            WlRequest(
                device_id=device_id, source_ip=peer.host, transport=peer.transport, kind=RequestKind.REGISTER,
                cert_fingerprint=self._cert_fingerprint(peer),
            ),
            _utc(now),
        )
        if not decision.allowed:
            if decision.reason is Reason.UNKNOWN_DEVICE:
                self._record_pending(device_id, request, peer, now)
            self._deny(key, request, peer, decision.reason.value, creds)
            return
        if not self._verify(creds, decision):
            self.stats["auth:failed"] += 1
            if self.lockout.record_failure(device_id, peer.host, now) is not None:
                self._alarm(device_id, "alarm_lockout", peer, "too many failed authentications")
            self._deny(key, request, peer, "bad_credentials", creds)
            return
        replay = self.replays.accept(creds.nonce, creds.nc, self.nonces.issued_at(creds.nonce), now)
        if replay is not digest.NonceState.VALID:
            # a (nonce, nc) pair seen before: a captured Authorization played back (issue 10 #6)
            self.stats["auth:replay" if replay is digest.NonceState.INVALID else "auth:nonce_forgotten"] += 1
            if replay is digest.NonceState.INVALID:
                self._alarm(device_id, "alarm_digest_replay", peer, "digest (nonce, nc) replayed")
            self._challenge(key, request, peer, stale=replay is digest.NonceState.STALE)
            return
        self.lockout.record_success(device_id, peer.host, now)
        self.stats["auth:ok"] += 1
        current = self.presence.get(device_id)
        if current is not None and current.online and (current.host, current.transport) != (peer.host, peer.transport):
            # The same approved ID, with valid credentials, from a second place while the first is
            # alive: a cloned or swapped camera. Refuse it and raise an alarm; a device that really
            # moved is admitted once its old registration goes offline (keepalive × count).
            self._refuse(key, request, peer, "clone_suspected")
            self._alarm(device_id, "alarm_clone_suspected", peer, f"registered from {current.host}/{current.transport}")
            return
        if expires == 0:
            self._unregister(device_id, now, OfflineCause.UNREGISTERED)
            self._respond(key, request, 200, peer, headers=[("Expires", "0")])
            return
        expires = max(self.settings.register_expires_min, min(expires, self.settings.register_expires_max))
        contact = request.headers.get("Contact") or ""
        rec, transition, new_login = self.presence.register(
            device_id,
            transport=peer.transport,
            host=peer.host,
            port=peer.port,
            conn_id=peer.conn_id,
            call_id=request.call_id,
            contact=contact,
            expires=expires,
            now=now,
            user_agent=request.headers.get("User-Agent") or "",
        )
        self.inventory.save_binding(
            device_id, transport=peer.transport, host=peer.host, port=peer.port, contact=contact[:400],
            call_id=request.call_id[:200], realm=self.settings.realm, user_agent=rec.user_agent[:200],
            registered_at=rec.registered_at, expires_at=rec.expires_at,
        )
        entry = decision.entry
        self._channel_limits[device_id] = entry.max_channels if entry is not None else None
        ok_headers = [("Contact", contact or f"<sip:{device_id}@{peer.host}:{peer.port}>"), ("Expires", str(expires))]
        ok_headers.append(("Date", gb_date(now)))
        if transition is None and not new_login:
            self._respond(key, request, 200, peer, headers=ok_headers)  # plain refresh
            return
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
        self.spawn(self._finish_login(key, request, peer, transition, ok_headers), name=f"login-{device_id}")

    async def _finish_login(
        self, key: Hashable, request: Request, peer: Peer, transition: Transition | None, headers: list[tuple[str, str]]
    ) -> None:
        """Persist the online event durably, answer 200, then query DeviceInfo and Catalog."""
        device_id = request.from_.uri.user or ""
        if transition is not None:
            pending = self._health_device(transition)
            if pending is not None:
                await pending
        self._respond(key, request, 200, peer, headers=headers)
        self._queue_sync(device_id)

    def _queue_sync(self, device_id: str) -> None:
        if self.settings.query_on_register and device_id not in self._sync_pending:
            self._sync_pending.add(device_id)
            self._syncing.add(device_id)
            self._sync_queue.put_nowait(device_id)

    async def _sync_worker(self) -> None:
        """Post-login DeviceInfo + Catalog, a few devices at a time.

        After a power cut thousands of devices register at once; querying them all at once would
        flood the network and the store, so a fixed number of workers drain a de-duplicated queue.
        """
        while True:
            device_id = await self._sync_queue.get()
            self._sync_pending.discard(device_id)
            try:
                await self._sync_one(device_id)
            except Exception:
                log.exception("post-login sync of %s failed", device_id)
            finally:
                if device_id not in self._sync_pending:
                    self._syncing.discard(device_id)
                self._pulse_catalog()

    async def _sync_one(self, device_id: str) -> None:
        if device_id not in self.presence:
            return
        try:
            await self.refresh_device_info(device_id)
        except (QueryFailed, SipError) as exc:
            log.info("DeviceInfo from %s failed: %s", device_id, exc)
        if device_id not in self.presence:
            return  # dropped (model mismatch) or gone meanwhile
        try:
            await self.sync_catalog(device_id, wait_written=False)
        except (QueryFailed, SipError) as exc:
            log.info("Catalog from %s failed: %s", device_id, exc)
        except Exception:
            log.exception("catalog sync of %s failed", device_id)

    def _cert_fingerprint(self, peer: Peer) -> str | None:
        """The client-certificate pin of the TLS connection `peer` came on (whitelist CERT_MISMATCH)."""
        return self.endpoint.peer_fingerprint(peer) if peer.transport == "tls" else None

    def _verify(self, creds: digest.Credentials, decision: Decision) -> bool:
        cred = decision.credential
        if cred is None and self.default_credential is not None and decision.entry is not None:
            cred = self.default_credential(decision.entry.device_id)
        if cred is None or creds.username != cred.username or creds.realm != self.settings.realm:
            # still compute a digest so timing does not tell a missing credential apart
            digest.verify(creds, "REGISTER", "0" * 32)
            return False
        alg = (creds.algorithm or "MD5").upper()
        ha1 = cred.ha1_sha256 if alg in ("SHA-256", "SHA256") else cred.ha1_md5
        return digest.verify(creds, "REGISTER", ha1)

    def _record_pending(self, device_id: str, request: Request, peer: Peer, now: float) -> None:
        evidence = {
            "device_id": device_id,
            "source": peer.host,
            "port": peer.port,
            "transport": peer.transport,
            "user_agent": request.headers.get("User-Agent") or "",
        }
        self.spawn(self.whitelist_actions.record_pending(evidence, now), name=f"pending-{device_id}")

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
        self.spawn(self._audit(kind, device_id, peer, reason))

    def _flush_alarms(self, now: float) -> None:
        """Write the counts of alarms that repeated (one UPDATE of their event each), then close
        the quiet ones."""
        for alarm in self.alarms.changed():
            self.inventory.update_alarm(alarm.device_id, alarm.kind, alarm.first, count=alarm.count,
                                        last=alarm.last)
        self.alarms.expire(now)

    async def _audit(self, action: str, device_id: str, peer: Peer, reason: str) -> None:
        await self.whitelist_actions.audit_event(action, device_id, {"source": peer.host}, reason)

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
        if online and t.device_id not in self._channels:
            self._queue_sync(t.device_id)  # back from a restored binding: learn its channels again
        if not online and self.media is not None:
            self.media.on_device_gone(t.device_id, t.cause)  # BYE + end viewers (issue 12.2)

    def _health_device(self, t: Transition) -> Any:
        """Record the device's transition and its channels' (one durable awaitable for the batch)."""
        online = t.state is PresenceState.ONLINE
        state = "online" if online else "offline"
        evidence = {"device_id": t.device_id}
        pending = [self.health.set_state(f"device:{t.device_id}", state, t.cause, t.ts, evidence)]
        for channel_id, on in self._channels.get(t.device_id, {}).items():
            ch_state = "online" if online and on else "offline"
            cause = t.cause if not online else ("registered" if on else "catalog_off")
            pending.append(self.health.set_state(f"channel:{channel_id}", ch_state, cause, t.ts, evidence))
        waits = [p for p in pending if p is not None]
        return asyncio.gather(*waits) if waits else None

    # ------------------------------------------------------------------ MESSAGE / NOTIFY
    def _on_message(self, request: Request, peer: Peer, key: Hashable, *, notify: bool = False) -> None:
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
                cert_fingerprint=self._cert_fingerprint(peer),
            ),
            _utc(now),
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
        return not catalog and self._owners.get(body_id) == device_id

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
                page = manscdp.catalog_response(msg)
                if (device_id, "Catalog", page.sn) not in self._waiters:
                    self.stats["refused:unsolicited_catalog"] += 1  # not an answer to a query we sent
                    return
                result = self.catalogs.feed(page, now)
                if result is not None:
                    self._catalog_done(result)
                return
            if cmd == "Catalog" and msg.root is manscdp.Root.NOTIFY:
                self.spawn(self._apply_catalog_notify(device_id, manscdp.catalog_notify(msg)))
                return
            waiter = self._waiters.pop((device_id, cmd, msg.sn), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
        except ManscdpError as exc:
            self.stats[f"bad_manscdp:{exc.reason}"] += 1

    # ------------------------------------------------------------------ queries
    def _next_sn(self) -> int:
        self._sn = (self._sn + 1) % 1_000_000 or 1
        return self._sn

    def _peer_of(self, device_id: str) -> tuple[Any, Peer]:
        rec = self.presence.get(device_id)
        if rec is None:
            raise QueryFailed(f"device {device_id} is not registered")
        return rec, Peer(rec.transport, rec.host, rec.port, rec.conn_id)

    async def _send_query(self, device_id: str, cmd_type: str, sn: int) -> None:
        rec, peer = self._peer_of(device_id)
        body = manscdp.build_query(cmd_type, sn, device_id)
        req = self.requests.manscdp(device_id, rec.host, rec.port, body, transport=rec.transport)
        try:
            response = await self.endpoint.request(req, peer, timeout=self.settings.query_timeout)
        except SipTimeout:
            raise QueryFailed(f"{cmd_type} to {device_id}: no answer") from None
        if response.status != 200:
            raise QueryFailed(f"{cmd_type} to {device_id}: {response.status} {response.reason}")

    async def query(self, device_id: str, cmd_type: str) -> manscdp.Manscdp:
        """Send a Query and wait for the matching Response MESSAGE (same SN, §4.1)."""
        sn = self._next_sn()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[(device_id, cmd_type, sn)] = fut
        try:
            await self._send_query(device_id, cmd_type, sn)
            return await asyncio.wait_for(fut, self.settings.query_timeout)
        except TimeoutError:
            raise QueryFailed(f"{cmd_type} from {device_id}: no response in {self.settings.query_timeout}s") from None
        finally:
            self._waiters.pop((device_id, cmd_type, sn), None)

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

    async def device_status(self, device_id: str) -> manscdp.DeviceStatus:
        return manscdp.device_status(await self.query(device_id, "DeviceStatus"))

    async def sync_catalog(self, device_id: str, *, wait_written: bool = True) -> CatalogResult:
        """Query the catalog and wait until it is assembled (or timed out) and applied.

        With `wait_written` (the API's on-demand query) also wait until the channels are in the
        store; the post-login workers do not, so they are not paced by the writer's batches.
        """
        sn = self._next_sn()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[(device_id, "Catalog", sn)] = fut
        self.catalogs.start(device_id, sn, self.clock())
        try:
            await self._send_query(device_id, "Catalog", sn)
            limit = self.settings.catalog_first_timeout + self.settings.catalog_idle_timeout + 5
            result: CatalogResult = await asyncio.wait_for(fut, limit)
            written = self._catalog_writes.get(device_id)
            if wait_written and written is not None:
                await written
            return result
        except TimeoutError:
            raise QueryFailed(f"Catalog from {device_id}: no response") from None
        finally:
            self._waiters.pop((device_id, "Catalog", sn), None)

    def _catalog_done(self, result: CatalogResult) -> None:
        self.stats["catalog:complete" if result.complete else "catalog:incomplete"] += 1
        waiter = self._waiters.get((result.device_id, "Catalog", result.sn))
        task = self.spawn(self._apply_catalog(result), name=f"catalog-{result.device_id}")
        if waiter is not None:
            task.add_done_callback(lambda t: waiter.done() or waiter.set_result(result))

    def _exposed(self, device_id: str, channel_ids: list[str]) -> set[str]:
        """Channels beyond the whitelist entry's max_channels are not exposed (issue 3)."""
        limit = self._channel_limits.get(device_id)
        ordered = sorted(channel_ids)
        if limit is not None:
            ordered = ordered[: max(0, limit)]
        return set(ordered)

    async def _known_fingerprints(self, device_id: str) -> dict[str, int]:
        """The device's channels as last applied: {channel_id: fingerprint}, from memory.

        The store is read once, in bulk, on the first sync after start; after that catalogs are
        diffed in memory, so a registration storm's syncs never wait on the database.
        """
        cached = self._catalog_cache.get(device_id)
        if cached is not None:
            return cached
        if self._catalog_loaded is None:
            self._catalog_loaded = asyncio.ensure_future(self._load_catalogs())
        await asyncio.shield(self._catalog_loaded)
        return self._catalog_cache.setdefault(device_id, {})

    async def _load_catalogs(self) -> None:
        for dev, items in (await self.inventory.all_channels()).items():
            self._catalog_cache.setdefault(dev, {cid: _fingerprint(item) for cid, item in items.items()})
        for dev, fps in self._catalog_cache.items():
            for cid in fps:
                self._owners.setdefault(cid, dev)

    def _claimable(self, device_id: str, channel_id: str) -> str | None:
        """Who else owns `channel_id` (another device's channel, or another device's own ID), or None."""
        owner = self._owners.get(channel_id)
        if owner is not None:
            return None if owner == device_id else owner
        if channel_id == device_id:
            return None
        entry = self.policy.get(channel_id)
        # a pending entry is only what some caller claimed: it must not let anyone block a channel
        if channel_id in self.presence or (entry is not None and entry.status is not EntryStatus.PENDING):
            return channel_id
        return None

    async def _apply_catalog(self, result: CatalogResult) -> None:
        device_id = result.device_id
        old = await self._known_fingerprints(device_id)
        new = {i.device_id: i for i in result.items if is_playable_channel(i.device_id)}
        for cid in list(new):
            other = self._claimable(device_id, cid)
            if other is not None:
                # ownership never moves silently: the item is dropped and the claim alarmed
                del new[cid]
                self.stats["refused:channel_owned"] += 1
                rec0 = self.presence.get(device_id)
                src = Peer(rec0.transport, rec0.host, rec0.port, rec0.conn_id) if rec0 else Peer("udp", "", 0, None)
                self._alarm(device_id, "alarm_channel_conflict", src, f"channel {cid} belongs to {other}")
        fps = {cid: _fingerprint(item) for cid, item in new.items()}
        added = [item for cid, item in new.items() if cid not in old]
        updated = [item for cid, item in new.items() if cid in old and fps[cid] != old[cid]]
        # an incomplete catalog must not delete channels that simply did not arrive
        removed = [cid for cid in old if cid not in new] if result.complete else []
        kept = {} if result.complete else {cid: fp for cid, fp in old.items() if cid not in new}
        channels = list(new.values())
        exposed = self._exposed(device_id, [*new, *kept])
        # queued on the batched writer; not awaited here so a sync worker moves on at once
        written = asyncio.ensure_future(self.inventory.apply_catalog(device_id, added, updated, removed, exposed))
        written.add_done_callback(lambda f: self._write_done(device_id, f))
        self._catalog_writes[device_id] = written
        self._catalog_cache[device_id] = {**kept, **fps}
        for cid in removed:
            if self._owners.get(cid) == device_id:
                del self._owners[cid]
        for cid in fps:
            self._owners[cid] = device_id
        d = CatalogDiff(added, updated, removed, len(new) - len(added) - len(updated))
        self.inventory.update_device(device_id, channel_count=len(exposed))
        if d.added or d.removed or d.updated:
            self.inventory.add_event(
                device_id,
                "catalog_changed",
                self.clock(),
                added=len(d.added),
                updated=len(d.updated),
                removed=len(d.removed),
                complete=result.complete,
            )
        now = self.clock()
        rec = self.presence.get(device_id)
        device_online = rec is not None and rec.online
        known = self._channels.setdefault(device_id, {})
        for channel_id in list(known):
            if channel_id not in exposed:
                del known[channel_id]
                self.health.set_state(f"channel:{channel_id}", "offline", "removed_from_catalog", now, {})
        for item in channels:
            if item.device_id not in exposed:
                continue
            status_on = (item.status or "ON").upper() in ("ON", "ONLINE", "OK")
            known[item.device_id] = status_on
            on = device_online and status_on
            self.health.set_state(
                f"channel:{item.device_id}",
                "online" if on else "offline",
                "catalog" if device_online else "device_offline",
                now,
                {"device_id": device_id, "status": item.status},
            )
        self._pulse_catalog()

    def _write_done(self, device_id: str, fut: asyncio.Future[Any]) -> None:
        if self._catalog_writes.get(device_id) is fut:
            del self._catalog_writes[device_id]  # only pending writes are kept (20,000 devices)
        if not fut.cancelled() and fut.exception() is not None:
            self.stats["catalog:write_failed"] += 1
            log.warning("catalog write failed: %r", fut.exception())

    async def _apply_catalog_notify(self, device_id: str, items: list[Any]) -> None:
        now = self.clock()
        own = self._channels.get(device_id, {})
        for item in items:
            event = (item.event or "").upper()
            if event in ("ON", "OFF", "VLOST", "DEFECT") and item.device_id not in own:
                # a device's events change only its own (exposed) channels' state (issue 10 #4)
                self.stats["refused:foreign_channel_event"] += 1
                continue
            if event in ("ON", "OFF", "VLOST", "DEFECT"):
                state = {"ON": "online", "OFF": "offline", "VLOST": "no_video", "DEFECT": "offline"}[event]
                self.health.set_state(f"channel:{item.device_id}", state, f"notify_{event.lower()}", now, {})
        if any((i.event or "").upper() in ("ADD", "DEL", "UPDATE") for i in items):
            await self.sync_catalog(device_id)

    # ------------------------------------------------------------------ play resolution
    def _pulse_catalog(self) -> None:
        self._catalog_applied.set()
        self._catalog_applied = asyncio.Event()

    def channel_owner(self, channel_id: str) -> str | None:
        """The device whose accepted catalog exposes `channel_id` (before the batched write lands)."""
        owner = self._owners.get(channel_id)
        if owner is not None and channel_id in self._channels.get(owner, {}):
            return owner
        return None

    def catalog_sync_in_flight(self) -> bool:
        return bool(self._syncing) or len(self.catalogs) > 0

    async def locate_channel(self, channel_id: str, timeout: float | None = None) -> str | None:
        """The owner of `channel_id`; while catalog syncs are in flight, wait for them (bounded)
        instead of answering "unknown" (issue 12 #3)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + (self.settings.play_catalog_wait if timeout is None else timeout)
        while True:
            owner = self.channel_owner(channel_id)
            left = end - loop.time()
            if owner is not None or left <= 0 or not self.catalog_sync_in_flight():
                return owner
            try:
                await asyncio.wait_for(self._catalog_applied.wait(), min(left, 0.5))
            except TimeoutError:
                pass

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


def _expires(request: Request) -> int | None:
    value = request.headers.get("Expires")
    if value is None:
        contact = request.headers.get("Contact") or ""
        idx = contact.lower().find("expires=")
        if idx < 0:
            return None
        value = contact[idx + 8 :].split(";")[0].split(",")[0]
    try:
        n = int(value.strip())
    except ValueError:
        raise SipParseError("Bad Expires") from None
    if n < 0:
        raise SipParseError("Bad Expires")
    return n


def _fingerprint(item: Any) -> int:
    """Equal catalog items have equal fingerprints (all fields, `extra` included) within a process."""
    return hash(repr(item))


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


async def _await(aw: Any) -> None:
    await aw

