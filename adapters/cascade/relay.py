"""Serving an upper platform's INVITE from the stream hub: PS over RTP, UDP or TCP (gb28181.md §7.5).

    INVITE ─► 100 Trying ─► check (404 unshared, 415 no PS/96, 488 not Play, 400 bad SDP / no y=)
           ─► hub.subscribe(channel, frames) ─► 200 + our SDP (sendonly, y= = the upper's SSRC)
           ─► ACK ─► every frame: PsMuxer → RTP (PT 96, 90 kHz, the offer's SSRC) → the offer's c=/m=
              UDP: datagrams from our leased port; TCP (RFC 4571 framing): the upper offered
              a=setup:passive → we connect to c=/m= after the ACK (answer a=setup:active);
              a=setup:active → we listen on our leased port before the 200 (answer a=setup:passive)
    BYE from the upper ─► stop sending, close the subscription (the hub keeps one ingest per
    channel, shared with local viewers; it closes after its linger when nobody watches).
    node shutdown ─► BYE to the upper for every play it ACKed (best effort, 2 s), then teardown.

Each play of a shared channel is a ledger subject `cascade:<upper>/<channel>` (with a health sink):
online from the ACK to the end (its cause: upper_bye, stream_ended, shutdown…), offline with
`invite_<status>` when we could not serve it (480 no stream, 503 no port) — so the ledger holds
per upper the plays that worked, those that failed and the stream time.

`check_offer` and `PsRtpPacketizer` are sans-IO; `StreamRelay` is the asyncio shell, one per
uplink, owning its dialogs on the `SipRouter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.base import HealthSink
from gateway.gb import sdp
from gateway.gb.errors import GbError, SdpError
from gateway.gb.ssrc import ssrc_to_int
from gateway.media.errors import MediaError, PsError
from gateway.media.frames import Codec, MediaFrame
from gateway.media.pool import Lease, PoolSet, PortPool
from gateway.media.psmux import PsMuxer
from gateway.media.rfc4571 import frame as rfc4571_frame
from gateway.media.rtp import packetize
from gateway.sip.errors import SipParseError
from gateway.sip.events import Peer
from gateway.sip.message import Headers, Request, Response, make_response, new_tag
from gateway.sip.router import SipRouter
from gateway.tasks import TaskSet

log = logging.getLogger("gateway.cascade")

PS_PAYLOAD_TYPE = 96
BIND_ATTEMPTS = 4  # leased ports tried before a 503 when each is found bound by someone else


@dataclass(frozen=True, slots=True)
class OfferCheck:
    """An INVITE's verdict: `status` 0 = serve `offer` for `channel_id`, else refuse with it."""

    status: int
    reason: str
    channel_id: str = ""
    offer: sdp.PlayOffer | None = None


def check_offer(request: Request, shared: Callable[[str], bool]) -> OfferCheck:
    """What we do with an upper's INVITE (§7.5 steps 1–2): the channel is the Request-URI user
    (or the first ID of Subject); unshared → 404; no PS/96 offered → 415; no `y=` → 400 (we echo
    the upper's SSRC); only live play (s=Play), else 488."""
    channel_id = request.request_uri.user or ""
    subject = request.headers.get("Subject")
    if subject:
        first = subject.split(",", 1)[0].split(":", 1)[0].strip()
        if first.isascii() and first.isdigit():
            channel_id = first
    if not channel_id or not shared(channel_id):
        return OfferCheck(404, "not_shared", channel_id)
    try:
        offer = sdp.parse_offer(request.body)
    except (SdpError, ValueError):
        return OfferCheck(400, "bad_sdp", channel_id)
    video = next((m for m in (offer.sdp.media if offer.sdp else []) if m.kind.lower() == "video"), None)
    rtpmap = offer.sdp.rtpmap if offer.sdp else {}
    if video is None or str(PS_PAYLOAD_TYPE) not in video.formats or \
            not rtpmap.get(PS_PAYLOAD_TYPE, "PS/90000").upper().startswith("PS"):
        return OfferCheck(415, "no_ps_96", channel_id)
    if offer.session_name.lower() != "play":
        return OfferCheck(488, f"session_{offer.session_name.lower()[:16]}", channel_id)
    if not offer.ssrc:
        return OfferCheck(400, "no_ssrc", channel_id)
    return OfferCheck(0, "ok", channel_id, offer)


class PsRtpPacketizer:
    """MediaFrame → RTP packets of PS (one pack group per video frame, the frame's 90 kHz PTS as
    the RTP timestamp, the marker on its last packet). Audio is not relayed yet."""

    def __init__(self, ssrc: int, *, mtu: int = 1400, first_sequence: int = 0) -> None:
        self.ssrc = ssrc
        self.mtu = mtu
        self.sequence = first_sequence & 0xFFFF
        self._mux: PsMuxer | None = None
        self.frames = 0
        self.skipped = 0

    def packets(self, frame: MediaFrame) -> list[bytes]:
        if frame.kind != "video" or frame.pts is None:
            self.skipped += 1
            return []
        if self._mux is None or self._mux.video_codec != frame.codec:
            if not frame.keyframe or frame.codec not in (Codec.H264, Codec.H265):
                self.skipped += 1  # start (or restart after a codec change) on a keyframe
                return []
            self._mux = PsMuxer(frame.codec)
        try:
            ps = self._mux.mux(frame)
        except PsError:
            self.skipped += 1
            return []
        out = packetize(ps, ssrc=self.ssrc, payload_type=PS_PAYLOAD_TYPE, timestamp=frame.pts,
                        first_sequence=self.sequence, mtu=self.mtu)
        self.sequence = (self.sequence + len(out)) & 0xFFFF
        self.frames += 1
        return out


class FrameStream(Protocol):
    """A hub subscription of kind "frames"."""

    closed: bool

    def __aiter__(self) -> Any: ...

    def close(self, reason: str = ...) -> None: ...


class Hub(Protocol):
    async def subscribe(self, channel_id: str, kind: str = ..., *, timeout: float | None = None) -> Any: ...


class Endpoint(Protocol):
    def respond(self, key: Hashable, response: Response, *, stateless: bool = False) -> None: ...

    async def request(self, request: Request, peer: Peer, *, timeout: float | None = None) -> Response: ...


@dataclass(slots=True)
class RelaySession:
    """One upper's play of one channel."""

    call_id: str
    channel_id: str  # as the upper knows it (the SDP answer's o=)
    source_id: str  # the hub stream key on our side (channel, or channel@device for a collision, idmap.py)
    dest: tuple[str, int]
    transport: sdp.MediaTransport
    ssrc: str
    invite: Request
    our_tag: str
    peer: Peer
    started_at: float
    key: Hashable = None  # the INVITE's server transaction
    answered: bool = False  # a final response went out (a CANCEL is too late after it)
    lease: Lease | None = None
    stream: FrameStream | None = None
    sock: socket.socket | None = None  # UDP
    server: asyncio.Server | None = None  # TCP, the upper connects (it offered a=setup:active)
    connected: asyncio.Future[asyncio.StreamWriter] | None = None
    writer: asyncio.StreamWriter | None = None  # TCP
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    packets: int = 0
    ended: str | None = None
    ok: bool = False  # our 200 went out


class StreamRelay:
    """The INVITEs of one upper platform, served from the hub (`InviteHandler` of the uplink)."""

    def __init__(self, *, endpoint: Endpoint, router: SipRouter, hub: Hub, pool: PortPool | PoolSet, media_host: str,
                 sdp_host: str, contact: str, invite_timeout: float = 10.0, ack_timeout: float = 32.0,
                 upper_id: str = "", health: HealthSink | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.endpoint = endpoint
        self.router = router
        self.hub = hub
        self.pool = pool
        self.media_host = media_host
        self.sdp_host = sdp_host
        self.contact = contact
        self.invite_timeout = invite_timeout
        self.ack_timeout = ack_timeout
        self.sessions: dict[str, RelaySession] = {}
        self.upper_id = upper_id
        self.health = health
        self.clock = clock  # wall clock, for the ledger
        self.stats: Counter[str] = Counter()
        self._tasks = TaskSet("cascade-relay", logger=log)
        self._durable: Awaitable[None] | None = None

    async def stop(self, bye_timeout: float = 2.0) -> None:
        """Hang up every play the upper ACKed (so it does not wait for media that will not come),
        then end them all."""
        playing = [s for s in self.sessions.values() if s.ok and s.acked.is_set() and s.ended is None]
        for session in list(self.sessions.values()):
            self._end(session, "shutdown")
        if playing:
            await asyncio.wait([asyncio.ensure_future(self._bye(s, timeout=bye_timeout)) for s in playing],
                               timeout=bye_timeout + 0.5)
        await self._tasks.close()
        for session in list(self.sessions.values()):
            self._release(session, "shutdown")
        if self._durable is not None:  # the plays' ends are in the ledger before the node goes on
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(_await(self._durable)), bye_timeout)

    def _ledger(self, session: RelaySession, state: str, cause: str, **evidence: Any) -> None:
        if self.health is None:
            return
        subject = f"cascade:{self.upper_id}/{session.channel_id}"
        pending = self.health.set_state(subject, state, cause, self.clock(),
                                        {"upper": self.upper_id, "call_id": session.call_id, **evidence})
        if pending is not None:
            self._durable = pending  # the ledger's barriers resolve in order: the last one is enough

    # ------------------------------------------------------------------ INVITE
    def on_invite(self, request: Request, peer: Peer, key: Hashable, shared: Callable[[str], bool], *,
                  source: Callable[[str], str] | None = None) -> None:
        """Serve an INVITE for a channel `shared` says the upper may play; `source` maps the ID the
        upper knows to ours (identity when not given)."""
        tag = new_tag()  # one To tag for every response of this transaction, the 100 included
        self._answer(key, request, 100, peer, tag=tag)
        verdict = check_offer(request, shared)
        if verdict.status or verdict.offer is None or verdict.offer.ssrc is None:
            self.stats[f"invite:refused:{verdict.reason}"] += 1
            self._answer(key, request, verdict.status or 400, peer, tag=tag)
            return
        if request.call_id in self.sessions:
            self._answer(key, request, 491, peer, tag=tag)  # a re-INVITE of a running play: not supported
            return
        offer = verdict.offer
        source_id = source(verdict.channel_id) if source is not None else verdict.channel_id
        session = RelaySession(call_id=request.call_id, channel_id=verdict.channel_id, source_id=source_id,
                               dest=(offer.ip, offer.port), transport=offer.transport, ssrc=offer.ssrc or "",
                               invite=request, our_tag=tag, peer=peer, started_at=time.monotonic())
        self.sessions[session.call_id] = session
        self.router.add_dialog(session.call_id, self)
        session.task = self._tasks.spawn(self._serve(session, key), name=f"play-{session.channel_id}")

    async def _serve(self, session: RelaySession, key: Hashable) -> None:
        request = session.invite
        try:
            try:
                session.stream = await self.hub.subscribe(session.source_id, "frames", timeout=self.invite_timeout)
            except MediaError as exc:
                self.stats["invite:refused:no_stream"] += 1
                log.info("cascade play %s: no stream: %s", session.channel_id, exc)
                session.answered = True
                self._answer(key, request, 480, session.peer, tag=session.our_tag, reason="Stream Unavailable")
                self._ledger(session, "offline", "invite_480", error=str(exc)[:200])
                return
            try:
                session.lease = await self._bind(session)
            except (MediaError, OSError) as exc:
                self.stats["invite:refused:no_port"] += 1
                log.warning("cascade play %s: no media port: %s", session.channel_id, exc)
                session.answered = True
                self._answer(key, request, 503, session.peer, tag=session.our_tag)
                self._ledger(session, "offline", "invite_503", error=str(exc)[:200])
                return
            body = sdp.build_play_answer(channel_id=session.channel_id, media_ip=self.sdp_host,
                                         media_port=session.lease.port, ssrc=session.ssrc,
                                         transport=session.transport)
            self.stats["invite:ok"] += 1
            session.answered = session.ok = True
            self.endpoint.respond(key, make_response(
                request, 200, to_tag=session.our_tag, body=body, received=(session.peer.host, session.peer.port),
                headers=[("Contact", self.contact), ("Content-Type", "application/sdp")]))
            try:
                async with asyncio.timeout(self.ack_timeout):
                    await session.acked.wait()
            except TimeoutError:
                self.stats["invite:no_ack"] += 1
                self._ledger(session, "offline", "invite_no_ack")
                return
            self._ledger(session, "online", "upper_play", transport=session.transport.value,
                         dest=f"{session.dest[0]}:{session.dest[1]}")
            if session.transport.is_tcp and not await self._connect(session):
                session.ended = "tcp_connect_failed"
                await self._bye(session)
                return
            await self._pump(session)
            if session.ended is None:  # the stream ended under us: hang up towards the upper
                session.ended = "stream_ended"
                await self._bye(session)
        except (GbError, SipParseError) as exc:
            self.stats["invite:failed"] += 1
            log.warning("cascade play %s failed: %s", session.channel_id, exc)
        finally:
            self._release(session, session.ended or "done")

    async def _bind(self, session: RelaySession) -> Lease:
        """A leased port we hold: the UDP socket we send from, or (we are TCP passive) our listener.
        A port someone else has bound (the pool's range overlaps the ephemeral ports, a stale
        process) is quarantined and the next one tried, as the device side does, rather than
        refusing the upper's play with 503."""
        busy = 0
        while True:
            lease = self.pool.allocate()
            try:
                if session.transport is sdp.MediaTransport.UDP:
                    session.sock = _udp_socket(self.media_host, lease.port)
                elif session.transport is sdp.MediaTransport.TCP_ACTIVE:
                    await self._listen(session, lease.port)
                return lease
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    lease.release()
                    raise
                busy += 1
                self.stats["ports_busy"] += 1
                self.pool.quarantine(lease)
                if busy >= BIND_ATTEMPTS:
                    raise

    async def _listen(self, session: RelaySession, port: int) -> None:
        """TCP, the upper connects: listen on our port before the 200 says so; keep the first
        connection (from the upper's address) and refuse the rest."""
        loop = asyncio.get_running_loop()
        connected: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
        session.connected = connected

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            source = writer.get_extra_info("peername")
            if connected.done() or not source or source[0] not in (session.peer.host, session.dest[0]):
                writer.close()
                return
            connected.set_result(writer)

        session.server = await asyncio.start_server(accept, self.media_host, port)

    async def _connect(self, session: RelaySession) -> bool:
        """TCP: the writer, by connecting to the offer's c=/m= (we are active) or by waiting for
        the upper's connection (we are passive)."""
        try:
            async with asyncio.timeout(self.invite_timeout):
                if session.connected is not None:
                    session.writer = await session.connected
                else:
                    _reader, session.writer = await asyncio.open_connection(*session.dest)
        except (TimeoutError, OSError) as exc:
            self.stats["invite:tcp_failed"] += 1
            log.info("cascade play %s: no TCP media connection: %s", session.channel_id, exc)
            return False
        if session.server is not None:
            session.server.close()  # one connection per play
        return True

    async def _pump(self, session: RelaySession) -> None:
        assert session.stream is not None
        rtp = PsRtpPacketizer(ssrc_to_int(session.ssrc))
        sock, writer, dest = session.sock, session.writer, session.dest
        async for frame in session.stream:
            if session.ended is not None:
                break  # BYE: drop what is still queued
            packets = rtp.packets(frame)
            if not packets:
                continue
            try:
                if writer is not None:
                    writer.write(b"".join(rfc4571_frame(p) for p in packets))
                    await writer.drain()  # a slow upper backs up into the hub's bounded queue
                elif sock is not None:
                    for packet in packets:
                        sock.sendto(packet, dest)
                session.packets += len(packets)
            except (ConnectionError, OSError):
                self.stats["rtp:send_errors"] += 1
                if writer is not None:
                    break  # the upper closed its media connection
        self.stats["rtp:packets"] += session.packets

    # ------------------------------------------------------------------ DialogOwner
    def on_dialog_request(self, request: Request, peer: Peer, key: Hashable) -> int:
        session = self.sessions.get(request.call_id)
        if session is None or request.method not in ("BYE", "CANCEL"):
            return 481
        if request.method == "CANCEL":
            if session.answered:
                return 200  # too late: the INVITE has its final response (RFC 3261 §9.2)
            self.stats["cancel:received"] += 1
            session.answered = True
            self._answer(session.key, session.invite, 487, peer, tag=session.our_tag)
            self._end(session, "upper_cancel")
            return 200
        self.stats["bye:received"] += 1
        self._end(session, "upper_bye")
        return 200

    def on_dialog_response(self, response: Response, peer: Peer) -> bool:
        return False

    def on_dialog_ack(self, request: Request, peer: Peer) -> None:
        session = self.sessions.get(request.call_id)
        if session is not None:
            session.acked.set()

    # ------------------------------------------------------------------ teardown
    def _end(self, session: RelaySession, reason: str) -> None:
        session.ended = session.ended or reason
        if session.stream is not None and not session.stream.closed:
            session.stream.close(reason)  # the pump's `async for` ends
        if session.task is not None and not session.acked.is_set():
            session.task.cancel()  # still waiting for the stream or the ACK

    def _release(self, session: RelaySession, reason: str) -> None:
        if self.sessions.pop(session.call_id, None) is None:
            return
        self.router.remove_dialog(session.call_id)
        if session.stream is not None and not session.stream.closed:
            session.stream.close(reason)
        if session.sock is not None:
            session.sock.close()
        if session.writer is not None:
            session.writer.close()
        if session.server is not None:
            session.server.close()
        if session.lease is not None:
            session.lease.release()
        self.stats[f"ended:{reason}"] += 1
        self.stats["stream_seconds"] += int(time.monotonic() - session.started_at)
        if session.ok and session.acked.is_set():
            self._ledger(session, "offline", reason, packets=session.packets)

    async def _bye(self, session: RelaySession, timeout: float = 5.0) -> None:
        """Hang up a play we ended (the channel's stream is gone): BYE in the INVITE's dialog."""
        inv = session.invite
        contact = inv.headers.get("Contact") or f"<{inv.from_.uri}>"
        target = contact.strip().split(">", 1)[0].lstrip("<") if contact.strip().startswith("<") else contact
        from_value = inv.headers.get("To") or ""
        headers = [("From", f"{from_value};tag={session.our_tag}"), ("To", inv.headers.get("From") or ""),
                   ("Call-ID", inv.call_id), ("CSeq", f"{inv.cseq[0] + 1} BYE"), ("Content-Length", "0")]
        bye = Request(method="BYE", uri=target, headers=Headers(headers), body=b"")
        try:
            await self.endpoint.request(bye, session.peer, timeout=timeout)
            self.stats["bye:sent"] += 1
        except Exception:
            self.stats["bye:failed"] += 1

    def _answer(self, key: Hashable, request: Request, status: int, peer: Peer, *, tag: str,
                reason: str | None = None) -> None:
        self.stats[f"responses:{status}"] += 1
        self.endpoint.respond(key, make_response(request, status, reason, to_tag=tag, received=(peer.host, peer.port)))

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"channel_id": s.channel_id, "dest": f"{s.dest[0]}:{s.dest[1]}", "ssrc": s.ssrc,
                 "transport": s.transport.value,
                 "packets": s.packets, "playing": s.acked.is_set()} for s in self.sessions.values()]


async def _await(aw: Any) -> None:
    await aw


def _udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
