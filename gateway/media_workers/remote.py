"""The main process's side of a stream owned by a media worker (issue 15).

The INVITE manager runs here unchanged; what it would do to a local hub stream and RTP session
goes to the owning worker instead:

* `RemoteSink` stands for the worker's hub Stream: `new_trace`/trace steps, `note_reinvite`,
  `end` are forwarded; `viewers`/`waiting` come from the worker's tick.
* `RemoteRtp` stands for the worker's RtpSession: `arm`, `rebind` are forwarded; the source
  check for the answer's `c=` is answered here (same rule); `last_packet_at` comes from the tick
  (CLOCK_MONOTONIC is one clock for every process of the machine).
* `RemoteIngest` is the InviteManager's `Ingest`: the port comes from the worker's slice, the
  worker binds it (`listen`) or connects (`connect`); a busy port comes back as its errno.
* `FeedOpener` opens a channel in the main process's own hub (WebRTC, snapshots, cascade relays)
  by subscribing to the owning worker's stream for frames: one ingest per channel, always in its
  worker.
"""

from __future__ import annotations

import ipaddress
import itertools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gateway.media.errors import MediaError, StreamError
from gateway.media.frames import Codec, MediaFrame
from gateway.media.hub import Stream
from gateway.media.pool import PortPool
from gateway.media.receiver import RTP_COUNTER_KEYS
from gateway.media.session_stats import Trace
from gateway.media_workers.link import LinkLost
from gateway.media_workers.worker import raise_reply

if TYPE_CHECKING:
    from gateway.media_workers.pool import WorkerProc

_rtp_ids = itertools.count(1)


class RemoteSink:
    """The InviteManager's view of a stream living in a worker's hub."""

    def __init__(self, worker: WorkerProc, key: str) -> None:
        self.worker = worker
        self.key = key
        self.channel_id = key
        self.traces: list[Trace] = []
        self.viewers = 0
        self.waiting = 1  # a viewer is waiting: that is why the worker asked to open
        self.ended: str | None = None
        self.rtp: RemoteRtp | None = None  # the current leg's (its tick updates the watchdog's view)

    def new_trace(self) -> Trace:
        self.worker.link.send({"op": "new_trace", "key": self.key})
        t = Trace(attempt=len(self.traces) + 1, on_step=self._forward_step)
        self.traces.append(t)
        del self.traces[:-4]
        return t

    def _forward_step(self, step: str, detail: dict[str, Any]) -> None:
        """A trace step recorded here is also recorded by the worker's stream (what viewers see)."""
        self.worker.link.send({"op": "trace", "key": self.key, "step": step, "detail": detail})

    @property
    def trace(self) -> list[dict[str, Any]]:
        return [t.as_dict() for t in self.traces]

    def note_reinvite(self, reason: str) -> None:
        self.worker.link.send({"op": "reinvite", "key": self.key, "reason": reason})

    def end(self, reason: str) -> None:
        self.ended = reason
        self.worker.link.send({"op": "end", "key": self.key, "reason": reason})

    def push(self, frame: MediaFrame) -> None:  # pragma: no cover - frames never pass through main
        raise MediaError("a worker's stream gets its frames in the worker")


def _host_allowed(host: str, hosts: frozenset[str], nets: tuple[Any, ...]) -> bool:
    """RtpSession.host_allowed's rule, for the answer's c= (the worker applies it to packets)."""
    if host in hosts:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in nets)


class RemoteRtp:
    """The InviteManager's view of an RtpSession living in a worker."""

    def __init__(self, sink: RemoteSink, *, ssrc: int, allowed_hosts: Iterable[str], allowed_nets: Iterable[Any],
                 reorder: bool) -> None:
        self.id = next(_rtp_ids)
        self.sink = sink
        self.worker = sink.worker
        self.expected_ssrc: int | None = ssrc
        self.hosts = frozenset(h[7:] if h.startswith("::ffff:") else h for h in allowed_hosts)
        self.nets = tuple(allowed_nets)
        self._reorder = reorder
        self.last_packet_at: float | None = None
        self._totals: dict[str, int] = {}
        old = sink.rtp
        if old is not None:
            self.worker.rtps.pop(old.id, None)
        sink.rtp = self
        self.worker.rtps[self.id] = self
        self.worker.link.send({"op": "rtp_new", "key": sink.key, "rtp": self.id, "ssrc": ssrc,
                               "hosts": sorted(self.hosts), "nets": [str(n) for n in self.nets], "reorder": reorder})

    def arm(self) -> None:
        self.worker.link.send({"op": "arm", "rtp": self.id})

    def rebind(self, *, ssrc: int | None) -> None:
        self.expected_ssrc = ssrc
        self.worker.link.send({"op": "rebind", "rtp": self.id, "ssrc": ssrc})

    def host_allowed(self, host: str) -> bool:
        return _host_allowed(host, self.hosts, self.nets)

    @property
    def use_reorder(self) -> bool:
        return self._reorder

    @use_reorder.setter
    def use_reorder(self, on: bool) -> None:
        self._reorder = on
        self.worker.link.send({"op": "reorder", "rtp": self.id, "on": on})

    def update_totals(self, totals: dict[str, int]) -> None:
        self._totals = totals

    def stats(self) -> dict[str, Any]:
        return {"worker": self.worker.index, **self._totals}

    def totals(self) -> dict[str, int]:
        return {k: int(self._totals.get(k, 0)) for k in RTP_COUNTER_KEYS}


class RemoteReceiver:
    """A listening/connected receiver in the worker; `close` returns the session's totals."""

    def __init__(self, rtp: RemoteRtp) -> None:
        self.rtp = rtp

    async def close(self) -> None:
        rtp = self.rtp
        try:
            reply = await rtp.worker.link.call({"op": "unlisten", "rtp": rtp.id}, timeout=5.0)
        except (LinkLost, TimeoutError):
            return
        rtp._totals = reply.get("totals") or {}


class RemoteIngest:
    """The InviteManager's Ingest when the stream's worker receives its RTP."""

    def pool_for(self, sink: Any) -> PortPool:
        if not isinstance(sink, RemoteSink):
            raise MediaError("a stream without a worker cannot be opened here")
        return sink.worker.pool

    def session(self, sink: RemoteSink, *, ssrc: int, allowed_hosts: Iterable[str], allowed_nets: Iterable[Any],
                trace: Trace, reorder: bool, clock: Callable[[], float] = time.monotonic) -> RemoteRtp:
        return RemoteRtp(sink, ssrc=ssrc, allowed_hosts=allowed_hosts, allowed_nets=allowed_nets, reorder=reorder)

    async def _bind(self, rtp: RemoteRtp, msg: dict[str, Any]) -> RemoteReceiver:
        try:
            reply = await rtp.worker.link.call({**msg, "rtp": rtp.id})
        except LinkLost:
            raise OSError(0, "the media worker is gone") from None
        if not reply.get("ok"):
            raise OSError(int(reply.get("errno") or 0), reply.get("error_text") or "listen failed")
        rtp.worker.link.send({"op": "info", "rtp": rtp.id, "info": {
            "local_port": msg.get("port"), "transport": msg.get("mode")}})
        return RemoteReceiver(rtp)

    async def listen_udp(self, rtp: RemoteRtp, host: str, port: int, *, rcvbuf: int,
                         window: float) -> RemoteReceiver:
        return await self._bind(rtp, {"op": "listen", "mode": "udp", "port": port, "rcvbuf": rcvbuf,
                                      "window": window})

    async def listen_tcp(self, rtp: RemoteRtp, host: str, port: int) -> RemoteReceiver:
        return await self._bind(rtp, {"op": "listen", "mode": "tcp", "port": port})

    async def connect_tcp(self, rtp: RemoteRtp, host: str, port: int, *, retry_for: float) -> RemoteReceiver:
        try:
            reply = await rtp.worker.link.call({"op": "connect", "rtp": rtp.id, "host": host, "port": port,
                                                "retry_for": retry_for})
        except LinkLost:
            raise MediaError("the media worker is gone") from None
        if not reply.get("ok"):
            raise MediaError(reply.get("error_text") or "connect failed")
        return RemoteReceiver(rtp)


class FeedHandle:
    """The main hub's StreamHandle for a worker feed."""

    def __init__(self, worker: WorkerProc, fid: int, key: str) -> None:
        self.worker = worker
        self.fid = fid
        self.key = key

    async def close(self) -> None:
        self.worker.feeds.pop(self.fid, None)
        self.worker.link.send({"op": "unfeed", "feed": self.fid})

    def stats(self) -> dict[str, Any]:
        return {"fed_by_worker": self.worker.index}


class FeedOpener:
    """StreamOpener for the main process's hub: frames of the owning worker's stream."""

    def __init__(self, owner: Callable[[str], WorkerProc]) -> None:
        self.owner = owner
        self._ids = itertools.count(1)

    async def open(self, channel_id: str, sink: Stream) -> FeedHandle:
        worker = self.owner(channel_id)
        fid = next(self._ids)
        worker.feeds[fid] = sink
        try:
            reply = await worker.link.call({"op": "feed", "key": channel_id, "feed": fid})
            raise_reply(reply)
        except LinkLost:
            worker.feeds.pop(fid, None)
            raise StreamError("the media worker is gone") from None
        except BaseException:
            worker.feeds.pop(fid, None)
            worker.link.send({"op": "unfeed", "feed": fid})
            raise
        return FeedHandle(worker, fid, channel_id)


def frame_of(msg: dict[str, Any], payload: bytes) -> MediaFrame:
    return MediaFrame(msg["k"], Codec(msg["c"]), payload, msg["p"], msg["d"], bool(msg["kf"]), msg["s"])
