"""Live media sessions with GB/T 28181 devices: INVITE → 200 (SDP) → ACK → RTP/PS … BYE (gb28181.md §5).

`InviteManager` is the hub's `StreamOpener`, the owner of its dialogs in the SIP router (the
device's BYE and retransmitted 2xx come back through `on_dialog_request`/`on_dialog_response`)
and a listener of devices going offline. It is given what it talks to — the endpoint, the
request factory, presence, the whitelist policy, the channel locator and a clock — explicitly. One
INVITE goes straight to the device with an SDP pointing at our own receiver (the collapsed
third-party flow of §5.1). Per device the transport is UDP, TCP passive (we listen BEFORE the
INVITE) or TCP active (we connect to the answer's c=/m= AFTER the ACK, retrying, §5.5); the
answer's `y=` SSRC wins (§5.4). RTP counts only after the offer is sent and only from the
device's signalling host or its whitelisted source networks — the answer's `c=` never widens
that, and TCP active connects only to those hosts (issue 10.13). The 2xx is ACKed in-dialog
(same Call-ID/From tag, To tag of the 200, CSeq number of the INVITE, RFC 3261 §13.2.2.4) and
re-ACKed if the device retransmits it; BYE on close. A watchdog re-INVITEs when media stops for
`media.timeout` while viewers remain (device restart, lost NAT binding) — sooner, after
`media.loss_timeout`, once media had been flowing to viewers — but never after the device sent
BYE, unregistered or went offline (§5.9); a device that unregisters or goes offline gets a BYE
for its dialogs at once. Every attempt fills a trace (session_stats.Trace) that explains a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from adapters.outbound import RequestFactory
from gateway.gb.errors import GbError
from gateway.gb.presence import DeviceRecord, Presence
from gateway.gb.sdp import MediaTransport, PlayAnswer, build_play_offer, parse_answer
from gateway.gb.ssrc import ssrc_to_int
from gateway.media.errors import (
    ChannelNotFound,
    DeviceUnavailable,
    MediaError,
    NotAdmitted,
    StreamError,
    StreamTimeout,
)
from gateway.media.hub import Stream, split_key
from gateway.media.ingest import Ingest, LocalIngest, RtpLeg
from gateway.media.pool import Lease, PortPool
from gateway.media.receiver import RTP_COUNTER_KEYS
from gateway.media.session_stats import Trace
from gateway.sip.errors import SipError, SipTimeout
from gateway.sip.events import Peer
from gateway.sip.message import Request, Response, new_tag
from gateway.tasks import TaskSet
from whitelist.decide import Policy, RequestKind
from whitelist.decide import Request as WlRequest

log = logging.getLogger(__name__)

_MODES = {"udp": MediaTransport.UDP, "tcp-passive": MediaTransport.TCP_PASSIVE,
          "tcp-active": MediaTransport.TCP_ACTIVE, "tcp": MediaTransport.TCP_PASSIVE}


class MediaEndpoint(Protocol):
    """The client side of the SIP endpoint the INVITE dialogs go through."""

    async def request(self, request: Request, peer: Peer, *, timeout: float | None = None) -> Response: ...

    def send_stateless(self, msg: Request | Response, peer: Peer) -> None: ...


class ChannelLocator(Protocol):
    """Which device owns a channel (the device adapter's catalog: accepted items before the store)."""

    def channel_owner(self, channel_id: str) -> str | None: ...

    async def locate_channel(self, channel_id: str, timeout: float | None = None) -> str | None: ...

    def out_of_range_owner(self, channel_id: str) -> str | None:
        """The device whose catalog listed `channel_id` outside its whitelist entry's ranges."""
        ...


class DialogTable(Protocol):
    """Where our dialogs are registered so in-dialog requests and stray 2xx reach us (SipRouter)."""

    def add_dialog(self, call_id: str, owner: Any) -> None: ...

    def remove_dialog(self, call_id: str) -> None: ...


class InviteFailed(StreamError):
    """The device refused or mangled the INVITE (non-2xx, bad SDP)."""

    status, code = 502, "invite_failed"


def transport_of(mode: str | None, default: str) -> MediaTransport:
    """A device's stream mode (WVP spelling accepted: UDP, TCP-PASSIVE, TCP-ACTIVE)."""
    for value in (mode, default):
        if value:
            t = _MODES.get(value.strip().lower().replace("_", "-"))
            if t is not None:
                return t
    return MediaTransport.UDP


@dataclass(slots=True)
class Leg:
    """One INVITE dialog and its receiver."""

    call_id: str
    from_tag: str
    cseq: int
    peer: Peer
    target: tuple[str, int]  # Request-URI host/port for in-dialog requests
    lease: Lease
    rtp: RtpLeg
    trace: Trace
    mode: MediaTransport
    to_tag: str | None = None
    receiver: Any = None
    invite: Request | None = None
    answer: PlayAnswer | None = None
    ack: Request | None = None
    started: float = 0.0  # the manager's clock
    established: bool = False
    closed: bool = False


class MediaSession:
    """One channel's ingest as the hub sees it (StreamHandle): re-INVITEs keep the same object."""

    def __init__(self, mgr: InviteManager, channel_id: str, device_id: str, sink: Stream) -> None:
        self.mgr = mgr
        self.channel_id = channel_id
        self.device_id = device_id
        self.sink = sink
        self.leg: Leg | None = None
        self.closed = False
        self.remote_ended: str | None = None
        self.reinvites = 0
        self.watchdog: asyncio.Task[None] | None = None
        self.totals: Counter[str] = Counter()
        self.allowed_nets: tuple[Any, ...] = ()  # the whitelist's allowed_sources for this device
        self.key = channel_id  # the hub's stream key (hub.stream_key: channel, or channel@device)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.watchdog is not None and self.watchdog is not asyncio.current_task():
            self.watchdog.cancel()
        await self.mgr._end_leg(self, bye=self.remote_ended is None)
        if self.mgr._sessions.get(self.key) is self:  # a new stream of the key may have opened meanwhile
            del self.mgr._sessions[self.key]

    def stats(self) -> dict[str, Any]:
        leg = self.leg
        out: dict[str, Any] = {"device_id": self.device_id, "reinvites": self.reinvites}
        if leg is not None:
            out.update(leg.rtp.stats())
            out.update(call_id=leg.call_id, transport=leg.mode.value, local_port=leg.lease.port,
                       ssrc_offered=leg.lease.ssrc,
                       ssrc_answer=leg.answer.ssrc if leg.answer is not None else None,
                       remote=f"{leg.answer.ip}:{leg.answer.port}" if leg.answer is not None else None)
        for k, v in self.totals.items():  # earlier legs of this stream
            if k in out and isinstance(out[k], int):
                out[k] += v
        return out


class InviteManager:
    """StreamOpener (for StreamHub), DialogOwner (for SipRouter), offline listener (for the device adapter)."""

    def __init__(self, *, endpoint: MediaEndpoint, requests: RequestFactory, presence: Presence, policy: Policy,
                 channels: ChannelLocator, dialogs: DialogTable, pool: PortPool, media: Any, repo: Any,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 bye_timeout: float = 3.0, ingest: Ingest | None = None) -> None:
        """`clock` (monotonic) times media and the watchdog; `wall_clock` dates whitelist decisions;
        `ingest` receives the RTP (default: in this process, from `pool`)."""
        self.ingest: Ingest = ingest or LocalIngest(pool)
        self.endpoint = endpoint
        self.requests = requests
        self.presence = presence
        self.policy = policy
        self.channels = channels
        self.dialogs = dialogs
        self.wall_clock = wall_clock
        self.pool = pool
        self.media = media
        self.repo = repo
        self.clock = clock
        self.bye_timeout = bye_timeout
        self._sessions: dict[str, MediaSession] = {}
        self._by_call: dict[str, MediaSession] = {}
        self._acks: dict[str, tuple[Request, Peer]] = {}  # call-id → ACK to resend on a 2xx retransmission
        self._abandoned: dict[str, tuple[Peer, str, tuple[str, int], int]] = {}
        self._tasks = TaskSet("gb-media", logger=log)  # BYEs, re-INVITEs, teardown started from callbacks
        self.counters: Counter[str] = Counter()
        self._closed_rtp: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for s in list(self._sessions.values()):
            await s.close()
        await self._tasks.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    # ------------------------------------------------------------------ StreamOpener
    async def resolve(self, channel_id: str) -> tuple[str, DeviceRecord]:
        """(device_id, presence record) or the StreamError saying why not (404/409/403)."""
        device_id, rec, _nets = await self._admit(channel_id)
        return device_id, rec

    async def _admit(self, channel_id: str, owner: str = "") -> tuple[str, DeviceRecord, tuple[Any, ...]]:
        """`resolve`, plus the networks the device's RTP may come from besides its signalling host.
        `owner`: the device named by the stream key (a channel ID two devices share)."""
        presence = self.presence
        # an accepted catalog item first (it reaches the store only with the next batch); while a
        # catalog sync is in flight the lookup waits for it, bounded (issue 12 #3)
        device_id: str | None = owner or self.channels.channel_owner(channel_id)
        refused_by = self.channels.out_of_range_owner(channel_id) if device_id is None else None
        if refused_by is not None:
            raise NotAdmitted(f"channel {channel_id} is outside the channel ranges allowed for {refused_by}")
        if device_id is None:
            row = await self.repo.find_channel(channel_id)
            if row is not None:
                device_id = row.device_id
            elif presence.get(channel_id) is not None:
                device_id = channel_id  # an IPC addressed by its own ID
            else:
                device_id = await self.channels.locate_channel(channel_id)
        if device_id is None:
            raise ChannelNotFound(f"unknown channel {channel_id}")
        rec = presence.get(device_id)
        if rec is None or not rec.online:
            raise DeviceUnavailable(f"device {device_id} of channel {channel_id} is "
                                    f"{'not registered' if rec is None else 'offline'}")
        decision = self.policy.decide(
            WlRequest(device_id=device_id, source_ip=rec.host, transport=rec.transport, kind=RequestKind.INVITE),
            datetime.fromtimestamp(self.wall_clock(), UTC))
        if not decision.allowed:
            raise NotAdmitted(f"device {device_id} is not admitted: {decision.reason.value}")
        entry = getattr(decision, "entry", None)
        if entry is not None and channel_id != device_id and not entry.channel_allowed(channel_id):
            # a channel stored before the entry's ranges were narrowed (issue 14 #2)
            raise NotAdmitted(f"channel {channel_id} is outside the channel ranges allowed for {device_id}")
        source = entry or getattr(decision, "rule", None)
        return device_id, rec, tuple(getattr(source, "allowed_sources", ()) or ())

    async def open(self, key: str, sink: Stream) -> MediaSession:
        channel_id, owner = split_key(key)
        device_id, _rec, nets = await self._admit(channel_id, owner)
        session = MediaSession(self, channel_id, device_id, sink)
        session.allowed_nets = nets
        session.key = key
        self._sessions[key] = session
        try:
            await self._invite(session)
        except BaseException:
            self._sessions.pop(key, None)
            raise
        session.watchdog = self._spawn(self._watch(session))
        return session

    async def close_stream(self, key: str) -> None:
        """Close stream `key`'s session (BYE unless the device ended it): its media worker is done
        with it (the hub there lingered out, or the worker died)."""
        session = self._sessions.get(key)
        if session is not None:
            await session.close()

    async def _mode_of(self, device_id: str) -> MediaTransport:
        mode = None
        with contextlib.suppress(Exception):
            dev = await self.repo.get_device(device_id)
            mode = getattr(dev, "stream_mode", None)
        return transport_of(mode, self.media.transport)

    async def _invite(self, session: MediaSession) -> None:
        """One INVITE attempt; on success `session.leg` is streaming (or about to)."""
        trace = session.sink.new_trace()
        channel_id, device_id = session.channel_id, session.device_id
        rec = self.presence.get(device_id)
        if rec is None or not rec.online:
            trace.add("device_unavailable")
            raise DeviceUnavailable(f"device {device_id} is offline", trace=session.sink.trace)
        mode = await self._mode_of(device_id)
        peer = Peer(rec.transport, rec.host, rec.port, rec.conn_id)
        leg = await self._prepare(session, trace, mode, peer, rec)
        session.leg = leg
        reqs = self.requests
        sip_id = reqs.me.sip_id
        try:
            offer = build_play_offer(channel_id=channel_id, media_ip=self.media.host, media_port=leg.lease.port,
                                     ssrc=leg.lease.ssrc, transport=mode, origin_user=sip_id)
            invite = reqs.request(
                "INVITE", channel_id, rec.host, rec.port, transport=rec.transport, body=offer,
                content_type="APPLICATION/SDP", call_id=leg.call_id, from_tag=leg.from_tag, cseq=leg.cseq,
                extra=[("Subject", f"{channel_id}:{leg.lease.ssrc},{sip_id}:0")])
            leg.invite = invite
            leg.rtp.arm()  # RTP before this instant is a stray sender's, never the answer to our offer
            trace.add("offer_sent", to=f"{rec.host}:{rec.port}/{rec.transport}", transport=mode.value,
                      port=leg.lease.port, ssrc=leg.lease.ssrc)
            self.counters["invite:sent"] += 1
            try:
                resp = await self.endpoint.request(invite, peer, timeout=self.media.invite_timeout)
            except SipTimeout:
                trace.add("answer", status=None, reason="no final response")
                self.counters["invite:timeout"] += 1
                self._abandon(leg, send_cancel=True)
                raise StreamTimeout(f"INVITE to {channel_id}: no answer", trace=session.sink.trace) from None
            except SipError as exc:
                trace.add("answer", status=None, reason=str(exc))
                self.counters["invite:error"] += 1
                raise InviteFailed(f"INVITE to {channel_id} failed: {exc}", trace=session.sink.trace) from None
            self._on_final(session, leg, resp)
            await self._after_ack(session, leg)
        except asyncio.CancelledError:
            # The hub gave up (timeout, last viewer left): never leave a dialog or a port behind.
            trace.add("cancelled")
            if leg.to_tag is None and leg.invite is not None:
                self._abandon(leg, send_cancel=True)
            await self._end_leg(session, bye=leg.to_tag is not None)
            raise
        except BaseException:
            await self._end_leg(session, bye=leg.to_tag is not None)
            raise

    async def _prepare(self, session: MediaSession, trace: Trace, mode: MediaTransport, peer: Peer,
                       rec: DeviceRecord) -> Leg:
        """Lease a port + SSRC and, for UDP / TCP passive, start listening before the INVITE."""
        last_exc: Exception | None = None
        ingest = self.ingest
        pool = ingest.pool_for(session.sink)
        for _ in range(4):
            lease = pool.allocate()
            rtp = ingest.session(session.sink, ssrc=lease.ssrc_int, allowed_hosts={rec.host},
                                 allowed_nets=session.allowed_nets, trace=trace, reorder=mode is MediaTransport.UDP,
                                 clock=self.clock)
            leg = Leg(call_id=f"{new_tag()}@{self.media.host}", from_tag=new_tag(),
                      cseq=self.requests.next_cseq(), peer=peer, target=(rec.host, rec.port),
                      lease=lease, rtp=rtp, trace=trace, mode=mode, started=self.clock())
            try:
                if mode is MediaTransport.UDP:
                    leg.receiver = await ingest.listen_udp(rtp, self.media.host, lease.port, rcvbuf=self.media.rcvbuf,
                                                           window=self.media.rx_window)
                else:
                    # TCP active too: a camera that answers a=setup:active as well (a common firmware
                    # bug) dials the offer's port at once; be listening there (issue 16.2)
                    leg.receiver = await ingest.listen_tcp(rtp, self.media.host, lease.port)
                return leg
            except OSError as exc:
                last_exc = exc
                if exc.errno == errno.EADDRINUSE:
                    self.counters["ports_busy"] += 1
                    pool.quarantine(lease)
                    continue
                lease.release()
                break
        trace.add("listen_failed", error=str(last_exc))
        raise StreamError(f"cannot listen for media: {last_exc}", trace=session.sink.trace)

    def _on_final(self, session: MediaSession, leg: Leg, resp: Response) -> None:
        trace = leg.trace
        if resp.status >= 300 or resp.status < 200:
            trace.add("answer", status=resp.status, reason=resp.reason)
            self.counters[f"invite:{resp.status}"] += 1
            raise InviteFailed(f"device answered {resp.status} {resp.reason}", trace=session.sink.trace)
        leg.to_tag = resp.to.params.get("tag") or ""
        self._by_call[leg.call_id] = session
        self.dialogs.add_dialog(leg.call_id, self)
        self.counters["invite:200"] += 1
        self._send_ack(leg)
        try:
            answer = parse_answer(resp.body, leg.mode)
        except (GbError, ValueError) as exc:
            trace.add("answer", status=200, error=f"bad SDP: {exc}")
            self.counters["invite:bad_sdp"] += 1
            raise InviteFailed(f"unusable SDP answer: {exc}", trace=session.sink.trace) from None
        leg.answer = answer
        trace.add("answer", status=200, media=f"{answer.ip}:{answer.port}", transport=answer.transport.value,
                  ssrc=answer.ssrc)
        expected = None
        if answer.ssrc:
            try:
                expected = ssrc_to_int(answer.ssrc)
            except GbError:
                expected = None
        if expected != leg.rtp.expected_ssrc:
            leg.rtp.rebind(ssrc=expected)  # the answer's y= wins; none → lock to the first seen
        if not leg.rtp.host_allowed(answer.ip):
            # behind NAT c= is a private address; a hostile one names a third party: never trust it
            trace.add("answer_host_ignored", host=answer.ip, allowed=leg.target[0])
        leg.established = True

    def _send_ack(self, leg: Leg) -> None:
        ack = self.requests.request(
            "ACK", leg.invite.request_uri.user if leg.invite else "", leg.target[0], leg.target[1],
            transport=leg.peer.transport, call_id=leg.call_id, from_tag=leg.from_tag, to_tag=leg.to_tag,
            cseq=leg.cseq)
        leg.ack = ack
        self._acks[leg.call_id] = (ack, leg.peer)
        self.endpoint.send_stateless(ack, leg.peer)
        leg.trace.add("ack_sent")

    async def _after_ack(self, session: MediaSession, leg: Leg) -> None:
        answer = leg.answer
        assert answer is not None
        if answer.transport is MediaTransport.TCP_ACTIVE:
            # The device listens; connect now (it may only listen after the ACK: retry, §5.5), but
            # only to a host its RTP may come from: the answer's c= if allowed, else the device's own
            if leg.receiver is not None:
                await leg.receiver.close()
            host = answer.ip if leg.rtp.host_allowed(answer.ip) else leg.target[0]
            try:
                leg.receiver = await self.ingest.connect_tcp(leg.rtp, host, answer.port,
                                                             retry_for=min(5.0, self.media.invite_timeout))
            except MediaError as exc:
                raise StreamError(str(exc), trace=session.sink.trace) from None
        elif answer.transport is MediaTransport.UDP and leg.mode is not MediaTransport.UDP:
            # UDP answer to a TCP offer: follow it (Monibuca does) on the same port number.
            if leg.receiver is not None:
                await leg.receiver.close()
            leg.rtp.use_reorder = True
            leg.receiver = await self.ingest.listen_udp(leg.rtp, self.media.host, leg.lease.port,
                                                        rcvbuf=self.media.rcvbuf, window=self.media.rx_window)
        elif answer.transport is MediaTransport.TCP_PASSIVE and leg.mode is MediaTransport.TCP_ACTIVE:
            # Both sides active (issue 16.2): we listen on the offered port since before the INVITE,
            # so accept the device's connection instead of failing; the trace names the cause.
            leg.trace.add("setup_conflict", offered="active", answered=answer.setup or "active",
                          action=f"accepting the device's connection on port {leg.lease.port}")
            log.info("setup roles: both active for %s (device %s answered a=setup:%s to our active offer); "
                     "accepting its connection on port %d", session.channel_id, session.device_id,
                     answer.setup or "active", leg.lease.port)
            self.counters["setup_conflict"] += 1
        elif answer.transport is MediaTransport.TCP_PASSIVE and leg.mode is not MediaTransport.TCP_PASSIVE:
            raise InviteFailed("device wants to connect to us over TCP but we offered otherwise",
                               trace=session.sink.trace)
        leg.mode = answer.transport

    def _abandon(self, leg: Leg, *, send_cancel: bool) -> None:
        """No final answer: CANCEL (§5.9); a 200 arriving later gets ACK + BYE (on_stray_response)."""
        self._abandoned[leg.call_id] = (leg.peer, leg.from_tag, leg.target, leg.cseq)
        self.dialogs.add_dialog(leg.call_id, self)  # an early dialog: a late 2xx must reach us
        if len(self._abandoned) > 256:
            oldest = next(iter(self._abandoned))
            del self._abandoned[oldest]
            self._release_dialog(oldest)
        if send_cancel and leg.invite is not None:
            self._spawn(self._cancel(leg))

    async def _cancel(self, leg: Leg) -> None:
        assert leg.invite is not None
        cancel = self.requests.request(
            "CANCEL", leg.invite.request_uri.user or "", leg.target[0], leg.target[1], transport=leg.peer.transport,
            call_id=leg.call_id, from_tag=leg.from_tag, cseq=leg.cseq)
        cancel.headers.set("Via", leg.invite.headers.get("Via") or "")  # same branch (RFC 3261 §9.1)
        self.counters["cancel:sent"] += 1
        with contextlib.suppress(SipError, OSError):
            await self.endpoint.request(cancel, leg.peer, timeout=self.bye_timeout)

    async def _end_leg(self, session: MediaSession, *, bye: bool) -> None:
        leg = session.leg
        if leg is None or leg.closed:
            return
        leg.closed = True
        self._by_call.pop(leg.call_id, None)
        self._acks.pop(leg.call_id, None)
        self._release_dialog(leg.call_id)
        if leg.receiver is not None:
            with contextlib.suppress(Exception):
                await leg.receiver.close()
        totals = leg.rtp.totals()
        for k, v in totals.items():
            self._closed_rtp[k] += v
            session.totals[k] += v
        leg.lease.release()
        if bye and leg.to_tag is not None:
            self._spawn(self._bye(leg))

    async def _bye(self, leg: Leg) -> None:
        bye = self.requests.request(
            "BYE", leg.invite.request_uri.user if leg.invite else "", leg.target[0], leg.target[1],
            transport=leg.peer.transport, call_id=leg.call_id, from_tag=leg.from_tag, to_tag=leg.to_tag)
        self.counters["bye:sent"] += 1
        leg.trace.add("bye_sent")
        try:
            resp = await self.endpoint.request(bye, leg.peer, timeout=self.bye_timeout)
            self.counters[f"bye:{resp.status}"] += 1
        except (SipError, OSError):
            self.counters["bye:no_answer"] += 1

    # ------------------------------------------------------------------ watchdog / re-INVITE
    async def _watch(self, session: MediaSession) -> None:
        timeout = float(self.media.timeout)
        # media that was flowing to viewers and stops is lost sooner than a slow start (issue 12.1)
        loss = min(timeout, float(getattr(self.media, "loss_timeout", timeout) or timeout))
        tick = max(0.05, min(0.25, loss / 4))
        backoff = 0.0
        while not session.closed:
            await asyncio.sleep(tick)
            leg = session.leg
            if leg is None or session.closed:
                continue
            now = self.clock()
            last = leg.rtp.last_packet_at
            limit = loss if last is not None and session.sink.viewers else timeout
            if last is None:
                last = leg.started
            if now - last < limit or now < backoff:
                continue
            if session.sink.viewers == 0 and session.sink.waiting == 0:
                continue  # lingering: the hub closes it, no point re-inviting
            rec = self.presence.get(session.device_id)
            if rec is None or not rec.online:
                self._finish(session, "device_offline")
                return
            self.counters["reinvite:attempt"] += 1
            session.reinvites += 1
            session.sink.note_reinvite(f"no media for {limit:g} s")
            leg.trace.add("media_timeout", idle_s=round(now - last, 2))
            await self._end_leg(session, bye=True)
            try:
                await self._invite(session)
                self.counters["reinvite:ok"] += 1
                backoff = 0.0
            except StreamError as exc:
                self.counters["reinvite:failed"] += 1
                log.info("re-INVITE of %s failed: %s", session.channel_id, exc)
                backoff = self.clock() + min(timeout, 5.0)
                if isinstance(exc, DeviceUnavailable):
                    self._finish(session, "device_offline")
                    return

    def _finish(self, session: MediaSession, reason: str) -> None:
        if session.remote_ended is None:
            session.remote_ended = reason
        session.sink.end(reason)

    # ------------------------------------------------------------------ dialogs (SipRouter) and devices
    def _release_dialog(self, call_id: str) -> None:
        """Stop routing `call_id` here once nothing of ours is left under it."""
        if call_id not in self._by_call and call_id not in self._acks and call_id not in self._abandoned:
            self.dialogs.remove_dialog(call_id)

    def on_dialog_request(self, request: Request, peer: Peer, key: Hashable) -> int:
        """In one of our dialogs: a BYE ends the session (200); anything else has no transaction (481)."""
        return 200 if request.method == "BYE" and self.on_remote_bye(request.call_id) else 481

    def on_dialog_response(self, response: Response, peer: Peer) -> bool:
        return self.on_stray_response(response, peer)

    def on_dialog_ack(self, request: Request, peer: Peer) -> None:
        """We are the UAC of our dialogs: an ACK in one of them is none of ours to act on."""

    def on_remote_bye(self, call_id: str) -> bool:
        """The device hung up (§5.9): release everything, tell viewers, no re-INVITE."""
        session = self._by_call.get(call_id)
        if session is None:
            return False
        self.counters["bye:received"] += 1
        if session.leg is not None:
            session.leg.trace.add("bye_received")
        session.remote_ended = "device_bye"
        self._spawn(self._end_leg(session, bye=False))
        self._finish(session, "device_bye")
        return True

    def on_device_gone(self, device_id: str, cause: str | None = None) -> None:
        """The device unregistered (REGISTER Expires: 0), was revoked or went offline: BYE its
        dialogs now (the camera may still be streaming), end the viewers, no re-INVITE (§5.9)."""
        reason = "device_unregistered" if cause == "unregistered" else "device_offline"
        for session in [s for s in self._sessions.values() if s.device_id == device_id]:
            self.counters[f"device_gone:{cause or 'offline'}"] += 1
            session.remote_ended = reason
            if session.leg is not None:
                session.leg.trace.add("device_gone", cause=cause or "offline")
            self._spawn(self._end_leg(session, bye=True))
            self._finish(session, reason)

    def on_stray_response(self, response: Response, peer: Peer) -> bool:
        """A retransmitted 2xx to one of our INVITEs: ACK again; a late 2xx after we gave up:
        ACK and BYE at once (§5.9). Returns True when the response was ours."""
        try:
            call_id = response.call_id
            _cseq, method = response.cseq
        except Exception:
            return False
        if method != "INVITE" or not 200 <= response.status < 300:
            return False
        ack = self._acks.get(call_id)
        if ack is not None:
            self.counters["ack:resent"] += 1
            self.endpoint.send_stateless(ack[0], ack[1])
            return True
        gone = self._abandoned.pop(call_id, None)
        if gone is None:
            return False
        self._release_dialog(call_id)
        leg_peer, from_tag, target, invite_cseq = gone
        to_tag = response.to.params.get("tag") or ""
        user = response.to.uri.user or ""
        reqs = self.requests
        self.endpoint.send_stateless(reqs.request(
            "ACK", user, target[0], target[1], transport=leg_peer.transport, call_id=call_id, from_tag=from_tag,
            to_tag=to_tag, cseq=invite_cseq), leg_peer)
        self.counters["late_2xx:bye"] += 1

        async def bye() -> None:
            with contextlib.suppress(SipError, OSError):
                await self.endpoint.request(reqs.request(
                    "BYE", user, target[0], target[1], transport=leg_peer.transport, call_id=call_id,
                    from_tag=from_tag, to_tag=to_tag), leg_peer, timeout=self.bye_timeout)
        self._spawn(bye())
        return True

    # ------------------------------------------------------------------ metrics
    def metrics_counters(self) -> Counter[str]:
        """Counter keys for /metrics: "invite:<outcome>", "bye:<outcome>", "reinvite:<outcome>",
        "rtp:<kind>" (all sessions, open and closed), "pool:<state>"."""
        out: Counter[str] = Counter(self.counters)
        rtp: Counter[str] = Counter(self._closed_rtp)
        for s in self._sessions.values():
            if s.leg is not None and not s.leg.closed:
                for k, v in s.leg.rtp.totals().items():
                    rtp[k] += v
        for k in RTP_COUNTER_KEYS:
            out[f"rtp:{k}"] = rtp[k]
        return out
