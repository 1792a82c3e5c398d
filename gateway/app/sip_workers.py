"""SIP on every core: main's side of the SIP worker processes (`sip.workers` > 1).

Main binds the SIP UDP port first with SO_REUSEPORT and steers the group's datagrams to the
workers (gateway/sip/reuseport.py); N worker processes (gateway/app/sip_worker.py) bind it too and
serve REGISTER and keepalives. This hub starts and supervises them, gives each a snapshot of the
shared state, applies what they report, and tells every worker what changed (docs/architecture.md,
"SIP workers: who owns what"):

- FORWARD: a datagram main must handle → `SipEndpoint.feed_datagram`, as if main had read it;
  main answers from its own socket on the same port.
- LOGIN → `GbDeviceAdapter.remote_login`; ACK once recorded (a new login: once its online event is
  durable), so a worker dying in between loses no accounting event: the device retransmits.
- KEEPALIVE, UNREGISTER, ALARM, PENDING, STATS → the adapter, as if main had decided them.
- FAILURE, SUCCESS, BAN → main's guards, and every other worker's; kept for `lockout_memory`
  seconds and replayed to a (re)started worker, so a restart does not reset anyone's lockout.
- main's presence changes (ObservedPresence) → BIND/DROP to every worker.

A worker that exits is started again after `RESTART_DELAY` (counted: `workers:restarted`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import pickle
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.gb_device import GbDeviceAdapter
from gateway.app.sip_ipc import Kind, Message
from gateway.app.sip_link import Link
from gateway.app.sip_shared import ObservedPresence, SharedFlood, SharedLockout
from gateway.config import Settings
from gateway.gb.presence import DeviceRecord, OfflineCause
from gateway.processes import reap_all
from gateway.sip.events import Peer
from gateway.sip.transport import SipEndpoint
from gateway.tasks import TaskSet
from whitelist.admission import Admission
from whitelist.model import Entry

log = logging.getLogger("gateway.sip.workers")
RESTART_DELAY = 0.5
READY_TIMEOUT = 60.0
CATALOG_DELAY = 0.05  # let the worker's 200 leave before main's first query to a new login
_MAX_EVENTS = 200_000


@dataclass(slots=True)
class _Worker:
    index: int
    link: Link | None = None
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pid: int = 0


class SipWorkers:
    def __init__(self, settings: Settings, count: int, *, adapter: GbDeviceAdapter, endpoint: SipEndpoint,
                 presence: ObservedPresence, lockout: SharedLockout, flood: SharedFlood,
                 admission: Admission, clock: Callable[[], float]) -> None:
        self.settings, self.count, self.adapter, self.endpoint = settings, count, adapter, endpoint
        self.presence, self.lockout, self.flood, self.clock = presence, lockout, flood, clock
        w = settings.whitelist
        self.lockout_memory = w.failure_window + w.lock_for
        self._lock_events: collections.deque[tuple[Kind, str, str, float]] = collections.deque(maxlen=_MAX_EVENTS)
        self._bans: dict[str, float] = {}
        self.workers = [_Worker(i) for i in range(1, count + 1)]
        self._tasks = TaskSet("sip-workers", logger=log)
        self._stopping = False
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._ping = 0
        presence.listener = self._binding_changed
        lockout.on_event = self._own_lockout_event
        flood.on_ban = self._own_ban
        admission.on_change.append(self._policy_changed)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        for w in self.workers:
            self._tasks.spawn(self._supervise(w), name=f"sip-worker-{w.index}")
        async with asyncio.timeout(READY_TIMEOUT):
            for w in self.workers:
                await w.ready.wait()

    async def stop(self) -> None:
        self._stopping = True
        for w in self.workers:
            if w.link is not None:
                w.link.close()  # the worker exits when its link closes
        await reap_all([w.proc for w in self.workers])
        await self._tasks.close()

    async def barrier(self, timeout: float = 5.0) -> None:
        """Return once every worker has applied everything sent to it before (links are FIFO):
        e.g. a whitelist change main just applied is in force on every worker."""
        loop = asyncio.get_running_loop()
        waits = []
        for w in self.workers:
            if w.link is not None:
                self._ping += 1
                self._pongs[self._ping] = fut = loop.create_future()
                w.link.send(Kind.PING, self._ping)
                waits.append(fut)
        async with asyncio.timeout(timeout):
            await asyncio.gather(*waits)

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid]

    async def _supervise(self, w: _Worker) -> None:
        while not self._stopping:
            try:
                await self._run(w)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("SIP worker %d failed to start", w.index)
            if self._stopping:
                return
            self.adapter.stats["workers:restarted"] += 1
            log.warning("SIP worker %d exited; starting it again", w.index)
            await asyncio.sleep(RESTART_DELAY)

    async def _run(self, w: _Worker) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the same code as ours, wherever we run from
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        kind = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        try:
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.app.sip_worker", str(theirs.fileno()), kind,
                pass_fds=(theirs.fileno(),), env=env)
        finally:
            theirs.close()
        w.pid = w.proc.pid
        _, link = await loop.create_unix_connection(lambda: Link(lambda m: self._on_message(w, m)), sock=ours)
        w.link = link
        self._snapshot(w, link)
        await w.proc.wait()
        w.ready.clear()
        link.close()
        w.link = None

    def _snapshot(self, w: _Worker, link: Link) -> None:
        # the port main actually bound (sip.port may be 0: any free port)
        sip = dataclasses.replace(self.settings.sip, port=self.endpoint.udp_port, host=self.settings.sip.host)
        link.send(Kind.HELLO, w.index, pickle.dumps(dataclasses.replace(self.settings, sip=sip)))
        for rec in self.presence.records():
            link.send(Kind.BIND, *_bind(rec))
        horizon = self.clock() - self.lockout_memory
        for kind, device_id, host, ts in self._lock_events:
            if ts >= horizon:
                link.send(kind, device_id, host, ts)
        now = self.clock()
        for host, until in self._bans.items():
            if until > now:
                link.send(Kind.BAN, host, until)
        link.send(Kind.SYNCED)

    # ------------------------------------------------------------------ to workers
    def _broadcast(self, kind: Kind, *fields: object, skip: _Worker | None = None) -> None:
        for w in self.workers:
            if w is not skip and w.link is not None:
                w.link.send(kind, *fields)

    def _binding_changed(self, device_id: str, rec: DeviceRecord | None) -> None:
        if rec is None:
            self._broadcast(Kind.DROP, device_id)
        else:
            self._broadcast(Kind.BIND, *_bind(rec))

    def _policy_changed(self, entries: dict[str, Entry | None], rules: list[Any] | None) -> None:
        self._broadcast(Kind.POLICY, pickle.dumps(entries), pickle.dumps(rules))

    def _remember(self, kind: Kind, device_id: str, host: str, now: float) -> None:
        self._lock_events.append((kind, device_id, host, now))
        horizon = now - self.lockout_memory
        while self._lock_events and self._lock_events[0][3] < horizon:
            self._lock_events.popleft()

    def _own_lockout_event(self, kind: str, device_id: str, host: str, now: float) -> None:
        k = Kind.FAILURE if kind == "failure" else Kind.SUCCESS
        self._remember(k, device_id, host, now)
        self._broadcast(k, device_id, host, now)

    def _own_ban(self, host: str, until: float) -> None:
        self._bans[host] = until
        self._broadcast(Kind.BAN, host, until)

    # ------------------------------------------------------------------ from workers
    def _on_message(self, w: _Worker, msg: Message) -> None:
        kind = msg[0]
        ad = self.adapter
        if kind == Kind.FORWARD:
            self.endpoint.feed_datagram(msg[3], Peer("udp", msg[1], msg[2]))
        elif kind == Kind.KEEPALIVE:
            ad.remote_keepalive(msg[1], msg[2])
        elif kind == Kind.LOGIN:
            self._login(w, msg)
        elif kind == Kind.UNREGISTER:
            ad.drop_device(msg[1], OfflineCause.UNREGISTERED)
        elif kind == Kind.FAILURE:
            _, device_id, host, now, seq = msg
            self.lockout.apply_failure(device_id, host, now)
            self._remember(Kind.FAILURE, device_id, host, now)
            self._broadcast(Kind.FAILURE, device_id, host, now, skip=w)
            if w.link is not None:
                w.link.send(Kind.ACK, seq, True)  # after the broadcast: the same flush or an earlier one
        elif kind == Kind.SUCCESS:
            _, device_id, host, now = msg
            self.lockout.apply_success(device_id, host, now)
            self._remember(Kind.SUCCESS, device_id, host, now)
            self._broadcast(Kind.SUCCESS, device_id, host, now, skip=w)
        elif kind == Kind.BAN:
            self.flood.ban(msg[1], msg[2])
            self._bans[msg[1]] = max(self._bans.get(msg[1], 0.0), msg[2])
            self._broadcast(Kind.BAN, msg[1], msg[2], skip=w)
        elif kind == Kind.ALARM:
            _, device_id, alarm, transport, host, port, detail = msg
            ad.alarm(device_id, alarm, Peer(transport, host, port), detail)
        elif kind == Kind.PENDING:
            ad.spawn_write(ad.whitelist_actions.record_pending(msg[1], msg[2]), name=f"pending-{msg[1]['device_id']}")
        elif kind == Kind.STATS:
            ad.stats.update(msg[1])
            self.endpoint.stats.update(msg[2])
        elif kind == Kind.PONG:
            fut = self._pongs.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif kind == Kind.READY:
            w.ready.set()
            log.info("SIP worker %d ready (PID %d)", w.index, msg[2])

    def _login(self, w: _Worker, msg: Message) -> None:
        _, seq, device_id, host, port, call_id, contact, user_agent, expires, now = msg
        link = w.link if seq else None  # seq 0: a refresh the worker already answered
        bound = self.presence.get(device_id)
        matches = bound is not None and (bound.host, bound.transport) == (host, "udp")
        if seq and self.lockout.is_locked(device_id, host, now, binding_matches=matches) is not None:
            # Main is where every worker's failures meet, in order: an ID locked here is refused
            # even if the worker that checked the password had not heard of the lock yet.
            if link is not None:
                link.send(Kind.ACK, seq, False)
                if bound is not None:
                    link.send(Kind.BIND, *_bind(bound))
            return
        try:
            persisted = self.adapter.remote_login(device_id, Peer("udp", host, port), call_id=call_id, contact=contact,
                                                  user_agent=user_agent, expires=expires, now=now)
        except Exception:
            log.exception("recording the login of %s failed", device_id)
            persisted = None
        if persisted is None:
            if link is not None:
                link.send(Kind.ACK, seq, True)
            return
        self.adapter.spawn(self._finish_login(link, seq, device_id, persisted), name=f"login-{device_id}")

    async def _finish_login(self, link: Link | None, seq: int, device_id: str, persisted: object) -> None:
        try:
            await persisted  # type: ignore[misc]
        finally:
            if link is not None:
                link.send(Kind.ACK, seq, True)
        asyncio.get_running_loop().call_later(CATALOG_DELAY, self.adapter.catalog.queue, device_id)


def _bind(rec: DeviceRecord) -> tuple[str, str, str, int, str, bool]:
    return (rec.device_id, rec.transport, rec.host, rec.port, rec.call_id, rec.online)
