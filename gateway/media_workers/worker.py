"""A media worker process: RTP ingest on its slice of the media ports, the stream hub of the
streams it owns, and their viewers (issue 15; architecture.md "Media workers: who owns what").

The main process keeps SIP. For a stream this worker owns it asks here, over the control link:
open a trace attempt (`new_trace`) and add its signalling steps (`trace`), make an RTP session
(`rtp_new`, `arm`, `rebind`), listen or connect for it (`listen`, `connect`, `unlisten`), note a
re-INVITE, end the stream. This worker's hub is the unchanged StreamHub; its opener is the main
process (`open` → the INVITE, `cancel_open`, `close` → BYE). Back to main go the hub's video
events (the health ledger), a tick of viewer counts and last-packet times (the re-INVITE
watchdog), and frames of a `feed` (main's own hub: WebRTC, snapshots, cascade relays).
Viewers' sockets arrive on the fd channel; `viewer.serve_viewer` answers them.

Run by the main process: `python -m gateway.media_workers.worker CONFIG_JSON`; the config names
the inherited fds of the control socket (`ctl_fd`) and the viewer fd channel (`viewer_fd`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import json
import logging
import os
import socket
import sys
from collections import Counter
from typing import Any

from gateway.media import errors as media_errors
from gateway.media.errors import MediaError, StreamError
from gateway.media.fanout import FRAMES, Subscription
from gateway.media.hub import Stream, StreamHub
from gateway.media.receiver import RtpSession, TcpPassiveReceiver, UdpReceiver, open_tcp_active
from gateway.media_workers.link import Link, LinkLost
from gateway.media_workers.viewer import serve_viewer
from gateway.media_workers.wire import WireError, recv_fd
from gateway.processes import leave_stop_signals_to_main
from gateway.tasks import TaskSet

log = logging.getLogger(__name__)

TICK_S = 0.2
TOTALS_EVERY = 5  # ticks


def error_reply(exc: BaseException) -> dict[str, Any]:
    """A StreamError as the main process's reply carries it (class name, status, code, text)."""
    if isinstance(exc, StreamError):
        return {"error": {"cls": type(exc).__name__, "status": exc.status, "code": exc.code, "message": str(exc)}}
    return {"error": {"cls": "StreamError", "status": 502, "code": "stream_failed", "message": str(exc)}}


def raise_reply(reply: dict[str, Any]) -> None:
    """Raise the StreamError a reply names (the hub attaches this side's trace)."""
    err = reply.get("error")
    if not err:
        return
    cls = getattr(media_errors, err.get("cls", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, StreamError)):
        cls = StreamError
    exc = cls(err.get("message", "stream failed"))
    if type(exc) is StreamError:
        exc.status, exc.code = int(err.get("status", 502)), str(err.get("code", "stream_failed"))
    raise exc


class WorkerHandle:
    """The hub's StreamHandle for a stream whose INVITE the main process holds."""

    def __init__(self, worker: MediaWorker, key: str) -> None:
        self.worker = worker
        self.key = key

    async def close(self) -> None:
        rid = self.worker.current_rtp.get(self.key)
        if rid is not None:
            await self.worker.drop_rtp(rid)
        self.worker.link.send({"op": "close", "key": self.key})

    def stats(self) -> dict[str, Any]:
        w = self.worker
        rid = w.current_rtp.get(self.key)
        rtp = w.rtps.get(rid) if rid is not None else None
        out: dict[str, Any] = dict(w.rtp_info.get(rid, {})) if rid is not None else {}
        if rtp is not None:
            out.update(rtp.stats())
        out["worker"] = w.index
        return out


class MainOpener:
    """StreamOpener: the main process INVITEs; the stream's RTP then comes to this worker."""

    def __init__(self, worker: MediaWorker) -> None:
        self.worker = worker

    async def open(self, channel_id: str, sink: Stream) -> WorkerHandle:
        link = self.worker.link
        try:
            reply = await link.call({"op": "open", "key": channel_id})
        except asyncio.CancelledError:
            link.send({"op": "cancel_open", "key": channel_id})
            raise
        except LinkLost:
            raise StreamError("the main process is gone") from None
        raise_reply(reply)
        return WorkerHandle(self.worker, channel_id)


class MediaWorker:
    """Everything one worker process runs; `handle` dispatches the main process's messages."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.index = int(config["index"])
        self.config = config
        m = config["media"]
        self.host = m["host"]
        self.hub = StreamHub(MainOpener(self), linger=m["linger"], ready_timeout=m["invite_timeout"],
                             queue_size=m["viewer_queue"], viewer_backlog=m["viewer_backlog"])
        self.hub.on_video = self._video
        self.link: Link = Link(self.handle, self._main_gone)
        self.rtps: dict[int, RtpSession] = {}
        self.rtp_key: dict[int, str] = {}
        self.rtp_info: dict[int, dict[str, Any]] = {}
        self.current_rtp: dict[str, int] = {}
        self.receivers: dict[int, Any] = {}
        self.feeds: dict[int, Subscription] = {}
        self.unfed: set[int] = set()
        self.closed_totals: Counter[str] = Counter()
        self.tasks = TaskSet(f"media-worker-{self.index}", logger=log)
        self.stopped = asyncio.Event()
        self.viewers_served = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, ctl: socket.socket, fds: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        await self.hub.start()
        await loop.connect_accepted_socket(lambda: self.link, ctl)
        fds.setblocking(False)
        loop.add_reader(fds.fileno(), self._on_viewer_fd, fds)
        ticker = self.tasks.spawn(self._tick(), name="tick")
        self.link.send({"op": "hello", "index": self.index, "pid": os.getpid(), "loop": type(loop).__module__})
        # as the main process does (gateway/app/node.py): what is built lives as long as the process,
        # garbage is freed by reference counting, so the cyclic collector runs rarely
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        try:
            await self.stopped.wait()
        finally:
            loop.remove_reader(fds.fileno())
            ticker.cancel()
            await self.hub.stop()
            for rid in list(self.rtps):
                await self.drop_rtp(rid)
            await self.tasks.close()
            self.link.close()

    def _main_gone(self) -> None:
        self.stopped.set()  # the main process died or stopped: nothing to serve for

    def _on_viewer_fd(self, fds: socket.socket) -> None:
        while True:
            try:
                got = recv_fd(fds)
            except (EOFError, OSError):
                self.stopped.set()
                return
            except WireError:
                log.warning("media worker %d: bad viewer hand-over", self.index)
                continue
            if got is None:
                return
            facts, fd = got
            sock = socket.socket(fileno=fd)
            self.viewers_served += 1
            self.tasks.spawn(serve_viewer(self.hub, facts, sock), name=f"viewer:{facts.get('key')}")

    async def _tick(self) -> None:
        """Viewer counts and last-packet times for the main process's re-INVITE watchdog; once a
        second the RTP counters too (its /metrics)."""
        n = 0
        while True:
            await asyncio.sleep(TICK_S)
            n += 1
            streams = {s.channel_id: [s.viewers, s.waiting] for s in self.hub.streams()}
            rtp = {rid: r.last_packet_at for rid, r in self.rtps.items() if r.last_packet_at is not None}
            if streams or rtp:
                msg: dict[str, Any] = {"op": "tick", "streams": streams, "rtp": rtp}
                if n % TOTALS_EVERY == 0:
                    msg["totals"] = {rid: r.totals() for rid, r in self.rtps.items()}
                self.link.send(msg)

    def _video(self, channel_id: str, ok: bool, cause: str, evidence: dict[str, Any]) -> None:
        self.link.send({"op": "video", "channel": channel_id, "ok": ok, "cause": cause, "evidence": evidence})

    # -- the main process's messages ---------------------------------------------------------

    def handle(self, msg: dict[str, Any], payload: bytes) -> None:
        op = msg.get("op")
        fn = getattr(self, f"op_{op}", None)
        if fn is None:
            log.warning("media worker %d: unknown op %r", self.index, op)
            if "id" in msg:
                self.link.reply(msg, error={"cls": "StreamError", "message": f"unknown op {op}"})
            return
        fn(msg)

    def _stream(self, key: str) -> Stream | None:
        return self.hub.get(key)

    def op_stop(self, msg: dict[str, Any]) -> None:
        self.stopped.set()

    def op_new_trace(self, msg: dict[str, Any]) -> None:
        s = self._stream(msg["key"])
        if s is not None:
            s.new_trace()

    def op_trace(self, msg: dict[str, Any]) -> None:
        s = self._stream(msg["key"])
        if s is None or not s.traces:
            return
        t = s.traces[-1]
        (t.once if msg.get("once") else t.add)(msg["step"], **msg.get("detail", {}))

    def op_reinvite(self, msg: dict[str, Any]) -> None:
        s = self._stream(msg["key"])
        if s is not None:
            s.note_reinvite(msg["reason"])

    def op_end(self, msg: dict[str, Any]) -> None:
        self.hub.end(msg["key"], msg["reason"])

    def op_rtp_new(self, msg: dict[str, Any]) -> None:
        key, rid = msg["key"], int(msg["rtp"])
        s = self._stream(key)
        if s is None:
            return
        old = self.current_rtp.get(key)
        if old is not None:  # a re-INVITE's new leg replaces the last one
            self.tasks.spawn(self.drop_rtp(old), name="drop-rtp")
        nets = [ipaddress.ip_network(n, strict=False) for n in msg.get("nets", ())]
        self.rtps[rid] = RtpSession(s, ssrc=msg["ssrc"], allowed_hosts=msg["hosts"], allowed_nets=nets,
                                    trace=s.traces[-1] if s.traces else None, reorder=msg["reorder"], armed=False)
        self.rtp_key[rid] = key
        self.rtp_info[rid] = msg.get("info", {})
        self.current_rtp[key] = rid

    def op_arm(self, msg: dict[str, Any]) -> None:
        r = self.rtps.get(int(msg["rtp"]))
        if r is not None:
            r.arm()

    def op_rebind(self, msg: dict[str, Any]) -> None:
        r = self.rtps.get(int(msg["rtp"]))
        if r is not None:
            r.rebind(ssrc=msg["ssrc"])

    def op_reorder(self, msg: dict[str, Any]) -> None:
        r = self.rtps.get(int(msg["rtp"]))
        if r is not None:
            r.use_reorder = bool(msg["on"])

    def op_info(self, msg: dict[str, Any]) -> None:
        rid = int(msg["rtp"])
        if rid in self.rtp_info:
            self.rtp_info[rid].update(msg["info"])

    def op_listen(self, msg: dict[str, Any]) -> None:
        self.tasks.spawn(self._listen(msg), name="listen")

    def op_connect(self, msg: dict[str, Any]) -> None:
        self.tasks.spawn(self._connect(msg), name="connect")

    def op_unlisten(self, msg: dict[str, Any]) -> None:
        async def run() -> None:
            totals = await self._unlisten(int(msg["rtp"]))
            self.link.reply(msg, totals=totals)
        self.tasks.spawn(run(), name="unlisten")

    def op_feed(self, msg: dict[str, Any]) -> None:
        self.tasks.spawn(self._feed(msg), name=f"feed:{msg['key']}")

    def op_unfeed(self, msg: dict[str, Any]) -> None:
        sub = self.feeds.get(int(msg["feed"]))
        if sub is not None:
            sub.close("viewer_left")
        else:
            self.unfed.add(int(msg["feed"]))  # given up while its subscribe still waits

    def op_snapshot(self, msg: dict[str, Any]) -> None:
        key = msg.get("key")
        self.link.reply(msg, snapshot=self.hub.snapshot(key),
                        last=self.hub.last_failure(key) if key else None, gauges=self.hub.gauges(),
                        counters=dict(self.hub.counters))

    # -- receivers ---------------------------------------------------------------------------

    async def _listen(self, msg: dict[str, Any]) -> None:
        rid = int(msg["rtp"])
        rtp = self.rtps.get(rid)
        if rtp is None:
            self.link.reply(msg, errno=errno.ENOENT, error_text="no such RTP session")
            return
        try:
            if msg["mode"] == "udp":
                rec: Any = await UdpReceiver.open(rtp, self.host, msg["port"], rcvbuf=msg["rcvbuf"],
                                                  window=msg["window"])
            else:
                rec = await TcpPassiveReceiver.open(rtp, self.host, msg["port"])
        except OSError as exc:
            self.link.reply(msg, errno=exc.errno or 0, error_text=str(exc))
            return
        old = self.receivers.pop(rid, None)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        self.receivers[rid] = rec
        self.link.reply(msg, ok=True)

    async def _connect(self, msg: dict[str, Any]) -> None:
        rid = int(msg["rtp"])
        rtp = self.rtps.get(rid)
        if rtp is None:
            self.link.reply(msg, error_text="no such RTP session")
            return
        old = self.receivers.pop(rid, None)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        try:
            self.receivers[rid] = await open_tcp_active(rtp, msg["host"], msg["port"], retry_for=msg["retry_for"])
        except MediaError as exc:
            self.link.reply(msg, error_text=str(exc))
            return
        self.link.reply(msg, ok=True)

    async def _unlisten(self, rid: int) -> dict[str, int]:
        """Stop receiving (the leg ends, or TCP active replaces the listener); the session stays
        until its stream closes or the next leg's replaces it."""
        rec = self.receivers.pop(rid, None)
        if rec is not None:
            with contextlib.suppress(Exception):
                await rec.close()
        rtp = self.rtps.get(rid)
        return rtp.totals() if rtp is not None else {}

    async def drop_rtp(self, rid: int) -> None:
        await self._unlisten(rid)
        rtp = self.rtps.pop(rid, None)
        key = self.rtp_key.pop(rid, None)
        self.rtp_info.pop(rid, None)
        if key is not None and self.current_rtp.get(key) == rid:
            del self.current_rtp[key]
        if rtp is not None:
            self.closed_totals.update(rtp.totals())

    # -- feeds to the main process's hub -------------------------------------------------------

    async def _feed(self, msg: dict[str, Any]) -> None:
        fid = int(msg["feed"])
        try:
            sub = await self.hub.subscribe(msg["key"], FRAMES)
        except StreamError as exc:
            self.link.reply(msg, **error_reply(exc))
            return
        if fid in self.unfed:
            self.unfed.discard(fid)
            sub.close("viewer_left")
            return
        self.feeds[fid] = sub
        self.link.reply(msg, ok=True)
        send = self.link.send
        try:
            async for f in sub:
                send({"op": "frame", "feed": fid, "k": f.kind, "c": f.codec.value, "p": f.pts, "d": f.dts,
                      "kf": f.keyframe, "s": f.stream_id}, f.data)
        finally:
            self.feeds.pop(fid, None)
            send({"op": "feed_end", "feed": fid, "reason": sub.reason or "closed"})


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config = json.loads(args[0])
    logging.basicConfig(level=config.get("log_level", "WARNING"),
                        format=f"%(asctime)s media-worker-{config['index']} %(levelname)s %(name)s: %(message)s")
    leave_stop_signals_to_main()  # a group's Ctrl-C / SIGTERM: main stops us, in its order
    ctl = socket.socket(fileno=int(config["ctl_fd"]))
    fds = socket.socket(fileno=int(config["viewer_fd"]))
    factory = None
    if config.get("loop") == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(MediaWorker(config).run(ctl, fds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
