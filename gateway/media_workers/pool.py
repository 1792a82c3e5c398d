"""The main process's media workers: start, route, hand viewers over, notice a crash, restart.

Ownership (architecture.md "Media workers: who owns what"): a stream key belongs to worker
`crc32(key) % N` — fixed, so every viewer's request and every INVITE for the key reach the same
worker without asking anyone — and its ports come from that worker's slice of
`media.port_min..port_max` (split into N even-aligned slices). The main process keeps SIP and
runs the INVITE manager over `RemoteIngest`; the worker receives the RTP and serves viewers.

A worker that dies (its control socket closes, its process exits) is noticed at once: the
streams it owned are ended here (BYE to the devices, `media_worker_lost` to the health ledger for
channels that had video), their viewers were closed by the kernel with the worker's sockets,
feeds into the main hub end, and the worker is started again on the same slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import zlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gateway.config import MediaSettings
from gateway.media.errors import StreamError
from gateway.media.pool import PoolSet, PortPool
from gateway.media_workers.link import Link, LinkLost
from gateway.media_workers.remote import RemoteRtp, RemoteSink, frame_of
from gateway.media_workers.wire import send_fd
from gateway.media_workers.worker import error_reply
from gateway.processes import reap_all
from gateway.tasks import TaskSet

log = logging.getLogger(__name__)

RESTART_DELAY_S = 0.5
HAND_OFF_TIMEOUT_S = 2.0
MAX_RESTART_DELAY_S = 30.0
STABLE_AFTER_S = 10.0  # a worker up this long had a real crash, not a start failure
_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the gateway package


def port_slices(port_min: int, port_max: int, n: int) -> list[tuple[int, int]]:
    """N contiguous slices of the even ports in the range (RTP on even ports, RFC 3550 §11)."""
    first = port_min + (port_min & 1)
    ports = list(range(first, port_max + 1, 2))
    if len(ports) < n:
        raise ValueError(f"media ports {port_min}..{port_max} cannot be split into {n} slices")
    size, extra = divmod(len(ports), n)
    out, i = [], 0
    for k in range(n):
        take = size + (1 if k < extra else 0)
        out.append((ports[i], ports[i + take - 1] + 1))
        i += take
    return out


def owner_index(key: str, n: int) -> int:
    return zlib.crc32(key.encode()) % n


class WorkerProc:
    """One worker: its process, control link, fd channel, port slice and what main holds for it."""

    def __init__(self, index: int, pool: PortPool) -> None:
        self.index = index
        self.pool = pool
        self.proc: asyncio.subprocess.Process | None = None
        self.link: Link = Link(lambda m, p: None)
        self.link.lost = True
        self.fd_sock: socket.socket | None = None
        self.sinks: dict[str, RemoteSink] = {}
        self.opens: dict[str, asyncio.Task[None]] = {}
        self.rtps: dict[int, RemoteRtp] = {}
        self.feeds: dict[int, Any] = {}  # feed id → the main hub's Stream
        self.ready = asyncio.Event()
        self.starts = 0
        self.crashes = 0
        self.pid = 0
        self.loop = ""  # the worker's event loop module (uvloop or asyncio), from its hello
        self.started_at = 0.0
        self._writable: asyncio.Future[None] | None = None
        self.backoff = RESTART_DELAY_S / 2

    def writable(self) -> asyncio.Future[None]:
        """Resolves when the fd channel has room again (one watcher shared by every waiting viewer)."""
        fut = self._writable
        if fut is None or fut.done():
            loop = asyncio.get_running_loop()
            fut = self._writable = loop.create_future()
            sock = self.fd_sock
            assert sock is not None
            fd = sock.fileno()

            def ready() -> None:
                loop.remove_writer(fd)
                if not fut.done():
                    fut.set_result(None)
            loop.add_writer(fd, ready)
        return fut

    def drop_watch(self) -> None:
        """The fd channel is being replaced or closed: wake the waiters (they retry or fail)."""
        fut, self._writable = self._writable, None
        if fut is not None and not fut.done() and self.fd_sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_writer(self.fd_sock.fileno())
            fut.set_result(None)

    @property
    def alive(self) -> bool:
        return self.ready.is_set() and not self.link.lost


class MediaWorkers:
    """N worker processes and the routing of streams, viewers and feeds to them."""

    def __init__(self, media: MediaSettings, count: int, *, domain: str, loop_kind: str = "asyncio",
                 log_level: str = "WARNING") -> None:
        self.media = media
        self.count = count
        self.loop_kind = loop_kind
        self.log_level = log_level
        self.workers = [WorkerProc(i, PortPool(lo, hi, domain))
                        for i, (lo, hi) in enumerate(port_slices(media.port_min, media.port_max, count))]
        # the slices as one pool, for main's own media sockets (the cascade relay's)
        self.slices = PoolSet([w.pool for w in self.workers])
        self.invites: Any = None  # the InviteManager (set by the composition root)
        # channels the main process's own hub serves (pull sources): their viewers are not handed over
        self.claimed_by_main: Callable[[str], bool] = lambda key: False
        self.on_video: Callable[[str, bool, str, dict[str, Any]], None] | None = None
        self.tasks = TaskSet("media-workers", logger=log)
        self.running = False
        self.counters: dict[str, int] = {"handed_off": 0, "crashes": 0, "restarts": 0}

    def owner(self, key: str) -> WorkerProc:
        return self.workers[owner_index(key, self.count)]

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.running = True
        for w in self.workers:
            await self._spawn(w)
        async with asyncio.timeout(15):
            for w in self.workers:
                await w.ready.wait()

    async def stop(self) -> None:
        self.running = False
        for w in self.workers:
            w.link.send({"op": "stop"})
        await reap_all([w.proc for w in self.workers])
        await self.tasks.close()
        for w in self.workers:
            if w.fd_sock is not None:
                w.drop_watch()
                w.fd_sock.close()
                w.fd_sock = None

    async def _spawn(self, w: WorkerProc) -> None:
        ctl_main, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd_main, fd_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        config = {"index": w.index, "media": asdict(self.media), "loop": self.loop_kind, "log_level": self.log_level,
                  "ctl_fd": ctl_child.fileno(), "viewer_fd": fd_child.fileno()}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
        w.ready.clear()
        try:
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.media_workers.worker", json.dumps(config),
                pass_fds=(ctl_child.fileno(), fd_child.fileno()), env=env)
        finally:
            ctl_child.close()
            fd_child.close()
        w.pid = w.proc.pid
        w.starts += 1
        w.started_at = asyncio.get_running_loop().time()
        if w.fd_sock is not None:
            w.drop_watch()
            w.fd_sock.close()
        w.fd_sock = fd_main
        fd_main.setblocking(False)  # one short datagram per viewer; hand_off waits when the queue is full
        w.link = await Link.connect(ctl_main, lambda m, p: self._on_message(w, m, p), lambda: self._lost(w))
        self.tasks.spawn(self._watch(w, w.proc), name=f"watch:{w.index}")

    async def _watch(self, w: WorkerProc, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if proc is not w.proc:
            return
        w.link.close()
        if self.running:
            log.error("media worker %d (pid %d) exited with %s; restarting", w.index, proc.pid, code)

    def _lost(self, w: WorkerProc) -> None:
        """The worker's control link closed: end what it owned, then start it again."""
        w.ready.clear()
        if not self.running:
            return
        w.crashes += 1
        self.counters["crashes"] += 1
        self.tasks.spawn(self._recover(w), name=f"recover:{w.index}")

    async def _recover(self, w: WorkerProc) -> None:
        sinks, w.sinks = w.sinks, {}
        for task in list(w.opens.values()):
            task.cancel()
        for key, sink in sinks.items():
            self._video_event(key, False, "media_worker_lost", {"worker": w.index, "pid": w.pid})
            sink.ended = "media_worker_lost"
            if self.invites is not None:
                with contextlib.suppress(Exception):
                    await self.invites.close_stream(key)  # BYE: the device streams to a dead port
        feeds, w.feeds = w.feeds, {}
        for stream in feeds.values():
            stream.end("media_worker_lost")
        w.rtps.clear()
        proc = w.proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        # a worker that dies soon after each start (a broken install) is retried ever more slowly
        quick = asyncio.get_running_loop().time() - w.started_at < STABLE_AFTER_S
        w.backoff = min(MAX_RESTART_DELAY_S, w.backoff * 2) if quick else RESTART_DELAY_S
        await asyncio.sleep(w.backoff)
        if self.running:
            self.counters["restarts"] += 1
            await self._spawn(w)

    def _video_event(self, channel: str, ok: bool, cause: str, evidence: dict[str, Any]) -> None:
        if self.on_video is not None:
            with contextlib.suppress(Exception):
                self.on_video(channel, ok, cause, evidence)

    # -- the workers' messages -----------------------------------------------------------------

    def _on_message(self, w: WorkerProc, msg: dict[str, Any], payload: bytes) -> None:
        op = msg.get("op")
        if op == "frame":
            stream = w.feeds.get(msg["feed"])
            if stream is not None:
                stream.push(frame_of(msg, payload))
        elif op == "tick":
            for key, (viewers, waiting) in msg["streams"].items():
                sink = w.sinks.get(key)
                if sink is not None:
                    sink.viewers, sink.waiting = viewers, waiting
            for rid, at in msg["rtp"].items():
                rtp = w.rtps.get(int(rid))
                if rtp is not None:
                    rtp.last_packet_at = at
            for rid, totals in msg.get("totals", {}).items():
                rtp = w.rtps.get(int(rid))
                if rtp is not None:
                    rtp.update_totals(totals)
        elif op == "open":
            w.opens[msg["key"]] = self.tasks.spawn(self._open(w, msg), name=f"open:{msg['key']}")
        elif op == "cancel_open":
            task = w.opens.pop(msg["key"], None)
            if task is not None:
                task.cancel()
        elif op == "close":  # the sink goes now: an `open` of the same key may follow at once
            sink = w.sinks.pop(msg["key"], None)
            if sink is not None and sink.rtp is not None:
                w.rtps.pop(sink.rtp.id, None)
            self.tasks.spawn(self._close(msg["key"]), name=f"close:{msg['key']}")
        elif op == "video":
            self._video_event(msg["channel"], msg["ok"], msg["cause"], msg["evidence"])
        elif op == "feed_end":
            stream = w.feeds.pop(msg["feed"], None)
            if stream is not None:
                stream.end(msg["reason"] if msg["reason"] != "viewer_left" else "source_closed")
        elif op == "hello":
            w.loop = str(msg.get("loop", ""))
            w.ready.set()

    async def _open(self, w: WorkerProc, msg: dict[str, Any]) -> None:
        key = msg["key"]
        sink = RemoteSink(w, key)
        w.sinks[key] = sink
        try:
            if self.invites is None:
                raise StreamError("the media plane has no INVITE manager")
            await self.invites.open(key, sink)
            w.link.reply(msg, ok=True)
        except asyncio.CancelledError:
            if w.sinks.get(key) is sink:
                del w.sinks[key]
            w.link.reply(msg, error={"cls": "StreamEnded", "message": "open cancelled"})
            raise
        except Exception as exc:
            if w.sinks.get(key) is sink:
                del w.sinks[key]
            w.link.reply(msg, **error_reply(exc))
        finally:
            if w.opens.get(key) is asyncio.current_task():
                del w.opens[key]

    async def _close(self, key: str) -> None:
        if self.invites is not None:
            await self.invites.close_stream(key)

    # -- viewers -------------------------------------------------------------------------------

    def serves(self, key: str) -> bool:
        """True when `key`'s viewers go to a worker (GB channels), False for the main hub's own."""
        return not self.claimed_by_main(key)

    async def hand_off(self, key: str, sock_fd: int, facts: dict[str, Any]) -> None:
        """Give the owning worker a viewer's connection (the fd is duplicated by the kernel).
        A full fd channel (a burst of viewers, a busy worker) is waited on, never blocked on."""
        w = self.owner(key)
        sock = w.fd_sock
        if not w.alive or sock is None:
            raise StreamError("the media worker for this stream is restarting; try again")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HAND_OFF_TIMEOUT_S
        while True:
            try:
                send_fd(sock, {**facts, "key": key}, sock_fd)
                break
            except BlockingIOError:
                left = deadline - loop.time()
                if left <= 0:
                    raise StreamError("the media worker does not take viewers; try again") from None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(w.writable()), left)
        self.counters["handed_off"] += 1

    # -- views ---------------------------------------------------------------------------------

    async def snapshot(self, key: str | None = None) -> Any:
        if key is not None:
            w = self.owner(key)
            try:
                reply = await w.link.call({"op": "snapshot", "key": key}, timeout=5.0)
            except (LinkLost, TimeoutError):
                return None, None
            return reply.get("snapshot"), reply.get("last")
        out: list[Any] = []
        for w in self.workers:
            with contextlib.suppress(LinkLost, TimeoutError):
                reply = await w.link.call({"op": "snapshot"}, timeout=5.0)
                out.extend(reply.get("snapshot") or [])
        return out

    def status(self) -> dict[str, Any]:
        return {"workers": [{"index": w.index, "pid": w.pid, "alive": w.alive, "loop": w.loop, "starts": w.starts,
                             "crashes": w.crashes, "streams": len(w.sinks), "ports": w.pool.stats()}
                            for w in self.workers], **self.counters}
