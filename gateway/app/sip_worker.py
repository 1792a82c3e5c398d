"""One SIP worker process (`python -m gateway.app.sip_worker FD`), started by gateway/app/sip_workers.py.

It binds the SIP UDP port beside main (SO_REUSEPORT) and serves the high-volume requests itself:
REGISTER (the same `Registrar`, every check) and the plain keepalive MESSAGE from the bound
address. The two answers of a steady swarm — a keepalive's 200 and a credential-less REGISTER's
401 — come from a header scan and a response template when the request has the plain shape
(gateway/sip/fastpath.py, as GbDeviceAdapter's fast paths in one process), with the same checks,
counters and reports as the parsed path they decline to otherwise. Every other datagram —
responses to main's requests, other MESSAGEs, NOTIFY, INVITE, BYE, a keepalive it cannot vouch
for — goes raw to main with its source (FORWARD), before the transaction layer sees it. What
the worker decided is reported to main (sip_ipc.py); an admitted REGISTER is answered only once
main has recorded it (ACK), durably for a new login.
The worker exits when its link to main closes.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import itertools
import logging
import os
import pickle
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.gb_device.device import answer_plain_keepalive, register_ok_headers
from adapters.gb_device.registrar import Accept, Challenge, Check, Refuse, Registrar, RegistrarSettings
from adapters.gb_device.scanned import apply_register, plain_register, whitelist_decision
from gateway.app.sip_ipc import Kind, Message
from gateway.app.sip_link import Link
from gateway.app.sip_sendbatch import SendBatch
from gateway.app.sip_shared import ReplicaPresence, SharedFlood, SharedLockout
from gateway.app.store import node_secret
from gateway.config import Settings
from gateway.gb.ids import is_valid_id
from gateway.gb.keepalive_fast import quick_keepalive
from gateway.processes import leave_stop_signals_to_main
from gateway.sip import digest, fastpath
from gateway.sip.errors import SipParseError
from gateway.sip.events import Peer
from gateway.sip.fastpath import FastAnswer, Scan
from gateway.sip.framer import parse_datagram
from gateway.sip.message import Request, Response, make_response, new_tag, stateless_tag
from gateway.sip.transport import SipEndpoint
from gateway.store.db import make_engine, make_sessionmaker
from whitelist.admission import apply_rules
from whitelist.decide import Policy, RequestKind
from whitelist.model import Credential, Entry, EntryStatus
from whitelist.store import WhitelistStore

log = logging.getLogger("gateway.sip.workers")
STATS_INTERVAL = 0.2


def worker_secret(secret: bytes, index: int) -> bytes:
    """Worker `index`'s nonce key: nonces are bound to the process that issued them, so its own
    replay guard sees every use of them (main, index 0, keeps the node secret itself)."""
    return secret if index == 0 else hmac.new(secret, f"sip-worker-{index}".encode(), hashlib.sha256).digest()


@dataclass(slots=True)
class _Held:
    """An answer waiting for main's ACK: to the parsed `request`, or (None) to the scanned
    request `scan` whose answer `data` the fast path built."""

    key: Hashable
    request: Request | None
    peer: Peer
    status: int
    phrase: str | None
    headers: Sequence[tuple[str, str]]
    device_id: str = ""
    scan: Scan | None = None
    data: bytes = b""


class SipWorker:
    """The worker's SIP application (REGISTER) and datagram hook (keepalives, forwarding)."""

    def __init__(self, index: int, settings: Settings, policy: Policy, link: Link, *,
                 clock: Callable[[], float] = time.time) -> None:
        s = settings
        self.index, self.settings, self.policy, self.link, self.clock = index, settings, policy, link, clock
        self.presence = ReplicaPresence(keepalive_interval=s.sip.keepalive_interval,
                                        keepalive_count=s.sip.keepalive_timeout_count)
        self.lockout = SharedLockout(
            max_failures=s.whitelist.max_failures, window=s.whitelist.failure_window, lock_for=s.whitelist.lock_for,
            source_distinct_ids=s.whitelist.source_distinct_ids, source_max_failures=s.whitelist.source_max_failures)
        self.lockout.on_event = self._lockout_event
        self.flood = SharedFlood(max_per_second=s.whitelist.flood_max_per_second, ban_for=s.whitelist.flood_ban_for)
        self.flood.on_ban = lambda host, until: link.send(Kind.BAN, host, until)
        nonces = digest.NonceIssuer(worker_secret(node_secret(Path(s.data_dir)), index), ttl=s.sip.nonce_ttl)
        replays = digest.ReplayGuard(ttl=nonces.ttl)
        replays.forget_before(clock())  # a previous worker with this index may have issued nonces
        password = s.sip.default_password
        realm = s.sip.domain
        default_credential = (lambda d: Credential.from_password(d, realm, password)) if password else None
        self.registrar = Registrar(
            settings=RegistrarSettings(realm=realm, register_expires_max=s.sip.register_expires_max,
                                       register_expires_min=s.sip.register_expires_min,
                                       digest_algorithm=s.sip.digest_algorithm),
            policy=policy, lockout=self.lockout, flood=self.flood, presence=self.presence, nonces=nonces,
            replays=replays, default_credential=default_credential)
        self.stats: Counter[str] = Counter()
        self.endpoint: SipEndpoint | None = None
        self._pending: dict[int, _Held] = {}
        self._seq = itertools.count(1)
        self._failure_seq = 0
        self._sent_endpoint: Counter[str] = Counter()
        self.synced = asyncio.Event()

    # ------------------------------------------------------------------ from main
    def on_link(self, msg: Message) -> None:
        kind = msg[0]
        if kind == Kind.BIND:
            _, device_id, transport, host, port, call_id, online = msg
            self.presence.put(device_id, transport=transport, host=host, port=port, call_id=call_id, online=online,
                              now=self.clock())
        elif kind == Kind.DROP:
            self.presence.drop(msg[1])
        elif kind == Kind.ACK:
            self._answer(msg[1], msg[2])
        elif kind == Kind.FAILURE:
            self.lockout.apply_failure(msg[1], msg[2], msg[3])  # (seq is ours only)
        elif kind == Kind.SUCCESS:
            self.lockout.apply_success(msg[1], msg[2], msg[3])
        elif kind == Kind.BAN:
            self.flood.ban(msg[1], msg[2])
        elif kind == Kind.POLICY:
            self._policy_changed(pickle.loads(msg[1]), pickle.loads(msg[2]))
        elif kind == Kind.PING:
            self.link.send(Kind.PONG, msg[1])
        elif kind == Kind.SYNCED:
            self.synced.set()

    def _policy_changed(self, entries: dict[str, Entry | None], rules: list[Any] | None) -> None:
        """What main's admission applied, applied here the same way (whitelist/admission.py)."""
        for device_id, entry in entries.items():
            if entry is None:
                self.policy.remove(device_id)
            else:
                self.policy.upsert(entry)
            if entry is None or entry.status in (EntryStatus.SUSPENDED, EntryStatus.REVOKED):
                self.presence.drop(device_id)
        if rules is not None:
            apply_rules(self.policy, rules)

    def _lockout_event(self, kind: str, device_id: str, host: str, now: float) -> None:
        if kind == "failure":
            self._failure_seq = next(self._seq)  # its 403 waits for main's ACK (see on_request)
            self.link.send(Kind.FAILURE, device_id, host, now, self._failure_seq)
        else:
            self.link.send(Kind.SUCCESS, device_id, host, now)

    # ------------------------------------------------------------------ datagrams
    def datagram_hook(self, data: bytes, peer: Peer) -> bool:
        """REGISTER: ours, through the endpoint (False: its fast path, `fast_register`, then the
        transaction layer). A keepalive we can vouch for: answered here, from the scan when it is
        plain. Anything else: main's, raw."""
        if data.startswith(b"REGISTER "):
            return False
        if data.startswith(b"MESSAGE "):
            s = fastpath.scan(data) if len(data) <= self.settings.sip.max_message else None
            if s is not None:
                answer = self.fast_keepalive(s, peer)
                if answer is not None:
                    if answer.status is not None:
                        assert self.endpoint is not None
                        self.endpoint.send_raw(answer.data, peer)
                        self.endpoint.stats["requests:MESSAGE"] += 1
                        self.endpoint.stats["responses_sent:200"] += 1
                    return True
            try:
                msg = parse_datagram(data, max_size=self.settings.sip.max_message)
            except SipParseError:
                msg = None  # main answers the 400
            if isinstance(msg, Request) and self._keepalive(msg, peer):
                return True
        self.link.send(Kind.FORWARD, peer.host, peer.port, data)
        self.stats["workers:forwarded"] += 1
        return True

    def _keepalive(self, request: Request, peer: Peer) -> bool:
        """The keepalive path of GbDeviceAdapter.on_message when everything is plain: bound address,
        MANSCDP body of the usual shape naming the sender, admitted. Else False (main decides)."""
        device_id = request.from_.uri.user or ""
        rec = self.presence.get(device_id)
        if rec is None or (rec.host, rec.port, rec.transport) != (peer.host, peer.port, peer.transport):
            return False
        if "manscdp" not in (request.content_type or ""):
            return False
        quick = quick_keepalive(request.body)
        if quick is None or quick.device_id != device_id:
            return False
        now = self.clock()
        if not self.flood.allow(peer.host, now):
            self.stats["refused:flood"] += 1
            return True
        decision = whitelist_decision(self.policy, device_id, peer, RequestKind.MESSAGE, now)
        if not decision.allowed:
            return False
        assert self.endpoint is not None
        response = make_response(request, 200, to_tag=stateless_tag(request), received=(peer.host, peer.port))
        self.endpoint.send_stateless(response, peer)
        self.endpoint.stats["requests:MESSAGE"] += 1
        self.endpoint.stats["responses_sent:200"] += 1
        self.stats["responses:200"] += 1
        self.stats["manscdp:Notify:Keepalive"] += 1
        self.presence.activity(device_id, now, keepalive=True)
        self.link.send(Kind.KEEPALIVE, device_id, now)
        return True

    # ------------------------------------------------------------------ fast paths
    # What the parsed paths (`_keepalive`, `on_request` → Registrar.admit) do for the plain
    # request, from the scan: first every check that changes nothing — None (the parsed path)
    # unless the outcome is the common one — then the flood guard (which counts), then the effects
    # in the same order, with the same counters and reports to main.

    def fast_register(self, s: Scan, peer: Peer) -> FastAnswer | None:
        """`SipEndpoint.fast_path`: a REGISTER without credentials from a valid ID with a plain
        Expires gets the registrar's challenge (FLOOD → ID → EXPIRES → DIGEST; no lockout or
        alarm applies before credentials); one with credentials, `fast_admit`."""
        if s.method != "REGISTER":
            return None
        if s.get("Authorization") is not None:
            return self.fast_admit(s, peer)
        if not is_valid_id(s.from_user):
            return None
        expires = s.get("Expires")
        if expires is None or not expires.isdigit():
            return None
        now = self.clock()
        self.stats["workers:register"] += 1
        if not self.flood.allow(peer.host, now):
            self.stats["refused:flood"] += 1
            return FastAnswer(None)  # the endpoint holds the unanswered transaction
        challenge = self.registrar.challenge(Check.DIGEST, peer, now)
        self.stats["responses:401"] += 1
        return FastAnswer(401, fastpath.respond(s, 401, (peer.host, peer.port), to_tag=fastpath.stateless_tag(s),
                                                extra=(("WWW-Authenticate", challenge.www_authenticate),)))

    def fast_admit(self, s: Scan, peer: Peer) -> FastAnswer | None:
        """`on_request` → `Registrar.admit` → `_accepted` for a REGISTER the registrar accepts with
        a lifetime (adapters/gb_device/scanned.py), from the scan: a plain refresh's 200 at once,
        kept in a transaction for Timer J as `_respond` keeps it, and LOGIN seq 0 to main; a
        login's 200 held (`FastAnswer(None)`: the endpoint holds the transaction) until main ACKs
        its LOGIN; the flood guard may ignore it."""
        now = self.clock()
        r = plain_register(self.registrar, s, peer, now)
        if r is None:
            return None
        stats = self.stats
        stats["workers:register"] += 1
        reg = self.registrar
        if not reg.flood.allow(peer.host, now):
            stats["refused:flood"] += 1
            return FastAnswer(None)
        device_id, call_id = s.from_user, s.values[3]
        assert call_id is not None
        _rec, transition, new_login = apply_register(reg, device_id, call_id, r, peer, now)
        stats["auth:ok"] += 1
        data = fastpath.respond(s, 200, (peer.host, peer.port), to_tag=new_tag(),
                                extra=register_ok_headers(device_id, peer, r.contact, r.expires, now))
        if transition is None and not new_login:
            seq = 0  # a plain refresh: answered at once (see `_accepted`)
            stats["responses:200"] += 1
            answer = FastAnswer(200, data, keep=True)
        else:
            seq = next(self._seq)
            self._pending[seq] = _Held(s.server_key, None, peer, 200, None, (), device_id, s, data)
            answer = FastAnswer(None)
        self.link.send(Kind.LOGIN, seq, device_id, peer.host, peer.port, call_id, r.contact, r.user_agent, r.expires,
                       now)
        return answer

    def fast_keepalive(self, s: Scan, peer: Peer) -> FastAnswer | None:
        """`_keepalive` from the scan: bound address, MANSCDP keepalive naming the sender, admitted
        (the memoized decision): 200 and the KEEPALIVE report; the flood guard may ignore it."""
        if s.method != "MESSAGE":
            return None
        now = self.clock()
        answer = answer_plain_keepalive(s, peer, self.presence.get(s.from_user), self.policy, self.flood,
                                        self.stats, now)
        if answer is not None and answer.status == 200:
            self.presence.activity(s.from_user, now, keepalive=True)
            self.link.send(Kind.KEEPALIVE, s.from_user, now)
        return answer

    # ------------------------------------------------------------------ SipApplication
    def on_request(self, request: Request, peer: Peer, key: Hashable) -> None:
        if request.method != "REGISTER":  # cannot happen: the hook forwards everything else
            self._respond(key, request, 501, peer)
            return
        now = self.clock()
        self.stats["workers:register"] += 1
        verdict = self.registrar.admit(request, peer, now)
        for name in verdict.counts:
            self.stats[name] += 1
        device_id = request.from_.uri.user or ""
        alarm = verdict.alarm if isinstance(verdict, Challenge | Refuse) else None
        if alarm is not None:
            self.link.send(Kind.ALARM, device_id, alarm.kind, peer.transport, peer.host, peer.port, alarm.detail)
        if isinstance(verdict, Challenge):
            self._respond(key, request, 401, peer, headers=[("WWW-Authenticate", verdict.www_authenticate)],
                          stateless=True)
        elif isinstance(verdict, Refuse):
            self.stats[f"refused:{verdict.reason}"] += 1
            if verdict.pending:
                evidence = {"device_id": device_id, "source": peer.host, "port": peer.port,
                            "transport": peer.transport, "user_agent": request.headers.get("User-Agent") or ""}
                self.link.send(Kind.PENDING, evidence, now)
            if verdict.status is None:
                return
            if verdict.check is Check.CREDENTIALS:
                # A wrong password is answered once main has counted it (and told every worker):
                # a guesser learns the result only after every worker would refuse its next try.
                self._pending[self._failure_seq] = _Held(key, request, peer, verdict.status, verdict.phrase, [])
            else:
                self._respond(key, request, verdict.status, peer, reason=verdict.phrase)
        else:
            self._accepted(verdict, key, request, peer, now)

    def _accepted(self, v: Accept, key: Hashable, request: Request, peer: Peer, now: float) -> None:
        if v.expires == 0:
            self.presence.drop(v.device_id)
            self.link.send(Kind.UNREGISTER, v.device_id, now)
            self._respond(key, request, 200, peer, headers=[("Expires", "0")])
            return
        headers = register_ok_headers(v.device_id, peer, v.contact, v.expires, now)
        if v.transition is None and not v.new_login:
            # A plain refresh (online here, same Call-ID, same host: the clone check passed): answered
            # at once as in one process — nothing durable waits on it; main records it (seq 0: no ACK).
            seq = 0
            self._respond(key, request, 200, peer, headers=headers)
        else:
            seq = next(self._seq)
            self._pending[seq] = _Held(key, request, peer, 200, None, headers, v.device_id)
        self.link.send(Kind.LOGIN, seq, v.device_id, peer.host, peer.port, request.call_id, v.contact,
                       request.headers.get("User-Agent") or "", v.expires, now)

    def _answer(self, seq: int, ok: bool) -> None:
        """Main's ACK: answer what waited for it. A login main refused (the ID got locked by a
        failure another worker counted meanwhile) gets the uniform 403 instead."""
        held = self._pending.pop(seq, None)
        if held is None:
            return
        if held.request is None:  # the fast path's login
            self._answer_scanned(held, ok)
            return
        if ok:
            self._respond(held.key, held.request, held.status, held.peer, reason=held.phrase, headers=held.headers)
            return
        self.stats["refused:LOCKED_ID"] += 1
        self.presence.drop(held.device_id)  # main re-sends its own binding, if any
        self._respond(held.key, held.request, 403, held.peer, reason="Forbidden")

    def _answer_scanned(self, held: _Held, ok: bool) -> None:
        """`_answer` for a login `fast_admit` held: its 200 as built, or the uniform 403."""
        assert self.endpoint is not None and held.scan is not None
        status, data = 200, held.data
        if not ok:
            self.stats["refused:LOCKED_ID"] += 1
            self.presence.drop(held.device_id)
            status, data = 403, fastpath.respond(held.scan, 403, (held.peer.host, held.peer.port), to_tag=new_tag(),
                                                 reason="Forbidden")
        self.stats[f"responses:{status}"] += 1
        self.endpoint.respond_raw(held.key, data, status)

    def _respond(self, key: Hashable, request: Request, status: int, peer: Peer, *, reason: str | None = None,
                 headers: Sequence[tuple[str, str]] | None = None, stateless: bool = False) -> None:
        assert self.endpoint is not None
        tag = stateless_tag(request) if stateless else new_tag()
        response = make_response(request, status, reason, to_tag=tag, headers=headers or [],
                                 received=(peer.host, peer.port))
        self.stats[f"responses:{status}"] += 1
        self.endpoint.respond(key, response, stateless=stateless)

    def on_ack(self, request: Request, peer: Peer) -> None:
        pass  # no INVITE is served here

    def on_stray_response(self, response: Response, peer: Peer) -> None:
        pass  # responses are forwarded before the transaction layer

    def on_connection_closed(self, peer: Peer) -> None:
        pass  # UDP only

    # ------------------------------------------------------------------ counters
    def flush_stats(self) -> None:
        assert self.endpoint is not None
        delta = Counter(self.endpoint.stats)
        delta.subtract(self._sent_endpoint)
        endpoint = {k: v for k, v in delta.items() if v}
        if self.stats or endpoint:
            self.link.send(Kind.STATS, dict(self.stats), endpoint)
            self.stats.clear()
            self._sent_endpoint = Counter(self.endpoint.stats)


async def _serve(fd: int) -> int:
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=fd)
    hello: asyncio.Future[Message] = loop.create_future()
    worker: SipWorker | None = None
    early: list[Message] = []

    def on_message(msg: Message) -> None:
        if msg[0] == Kind.HELLO and not hello.done():
            hello.set_result(msg)
        elif worker is not None:
            worker.on_link(msg)
        else:
            early.append(msg)

    _, link = await loop.create_unix_connection(lambda: Link(on_message), sock=sock)
    _, index, blob = await hello
    settings: Settings = pickle.loads(blob)
    engine = make_engine(settings.database.url)
    try:  # the policy as stored now; main pushes every change it applies from here on (POLICY)
        policy = await WhitelistStore(make_sessionmaker(engine)).load_policy()
    finally:
        await engine.dispose()
    worker = SipWorker(index, settings, policy, link)
    for msg in early:
        worker.on_link(msg)
    await worker.synced.wait()  # main's bindings, lockout events and bans: then take datagrams
    s = settings.sip
    endpoint = await SipEndpoint.start(s.host, s.port, worker, rcvbuf=s.rcvbuf, max_message=s.max_message,
                                       tcp=False, reuseport=True)
    worker.endpoint = endpoint
    endpoint.datagram_hook = worker.datagram_hook
    endpoint.fast_path = worker.fast_register  # plain REGISTERs (MESSAGEs never get past the hook)
    endpoint.fast_credentials = True  # REGISTERs with credentials too (fast_admit)
    if endpoint.udp_socket is not None and endpoint.udp_transport is not None:
        # a pass's answers leave in one sendmmsg (fewer syscalls, and fewer wake-ups of the peer mid-pass)
        endpoint.udp_sendto = SendBatch(endpoint.udp_socket, endpoint.udp_transport,
                                        endpoint.count_send_error).sendto
    # as the node does (gateway/app/node.py): what is built lives as long as the process; collect
    # the young generation every 50,000 allocations, not 700 (a storm allocates a lot, cyclically little)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        link.send(Kind.READY, index, os.getpid())
        while not link.closed.done():
            await asyncio.wait([link.closed], timeout=STATS_INTERVAL)
            worker.flush_stats()
    finally:
        await endpoint.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    leave_stop_signals_to_main()  # a group's Ctrl-C / SIGTERM: main stops us by closing the link
    logging.basicConfig(level=logging.WARNING, format=f"sip-worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s")
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if len(args) > 1 and args[1] == "uvloop":  # the loop main runs on
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(int(args[0])))


if __name__ == "__main__":
    raise SystemExit(main())

