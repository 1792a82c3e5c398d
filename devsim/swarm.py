"""GB/T 28181 device swarm: thousands of simulated IPCs/NVRs on one asyncio loop and one UDP socket.

Used by `gbgate demo`, the benchmarks and tests. Each device registers with digest (REGISTER →
401 → REGISTER with Authorization → 200, §3.1), sends Keepalive MESSAGEs spread evenly over the
interval (§4.3), answers the gateway's MESSAGE queries with 200 OK and then Response MESSAGEs
(Catalog in pages of ≤ 4 items with SumNum, DeviceInfo, DeviceStatus; §4.4–4.6), and — when
asked to stream — answers INVITE and sends PS over RTP (devsim/media.py, §5).

    python -m devsim --server 127.0.0.1:5060 --count 8 --password 12345678

The per-message work is a template format and a `bytes.find`; see messages.py and net.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from devsim import messages
from devsim.devices import DevState, KeepaliveRun, SimChannel, SimDevice, make_devices
from devsim.net import SipStreamProtocol, TxTable, open_udp
from devsim.serve import RequestHandler
from devsim.stats import LatencyLog, percentile
from gateway.tasks import TaskSet

__all__ = ["DevState", "DeviceSwarm", "KeepaliveRun", "SimChannel", "SimDevice", "make_devices"]

log = logging.getLogger(__name__)


class DeviceSwarm:
    """Many simulated devices sharing one loop and (for UDP) one or a few sockets."""

    def __init__(
        self,
        *,
        server_host: str,
        server_port: int,
        server_id: str = "34020000002000000001",
        domain: str = "3402000000",
        devices: Sequence[SimDevice],
        transport: str = "udp",
        local_host: str = "127.0.0.1",
        keepalive_interval: float = 60.0,
        register_expires: int = 3600,
        charset: str = "GB2312",
        sockets: int = 1,
        rcvbuf: int = 8 << 20,
        reregister_on_404: bool = True,
        media: bool = True,
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise ValueError("transport must be 'udp' or 'tcp'")
        self.server = (server_host, int(server_port))
        self.server_id, self.domain = server_id, domain
        self.devices = list(devices)
        self.transport = transport
        self.local_host = local_host
        self.keepalive_interval = keepalive_interval
        self.register_expires = register_expires
        self.charset = charset
        self.n_sockets = max(1, sockets) if transport == "udp" else 0
        self.rcvbuf = rcvbuf
        self.reregister_on_404 = reregister_on_404
        self.media_enabled = media
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tx: TxTable | None = None
        self._udp: list[Any] = []
        self.states: list[DevState] = []
        self.by_id: dict[str, DevState] = {}
        self.handler = RequestHandler(self)
        self.lat = {"register": LatencyLog(), "keepalive": LatencyLog()}
        self.reg_failures: Counter[str] = Counter()
        self.ka_failures: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._stopping = False
        self._tasks = TaskSet("devsim-swarm", logger=log)  # registrations, media sessions, re-registers

    # ------------------------------------------------------------------ life cycle
    @property
    def local_port(self) -> int:
        """Port of the first UDP socket (0 before start or for TCP)."""
        return self._udp[0][0].get_extra_info("sockname")[1] if self._udp else 0

    async def start(self) -> None:
        """Bind the UDP socket(s) and start the retransmission ticker."""
        self.loop = asyncio.get_running_loop()
        self.tx = TxTable(self.loop)
        self.tx.start()
        locals_: list[messages.Local] = []
        for _ in range(self.n_sockets):
            tr, proto = await open_udp(self.loop, self.local_host, 0, self.on_data, self.rcvbuf)
            self._udp.append((tr, proto))
            port = tr.get_extra_info("sockname")[1]
            locals_.append(messages.Local("UDP", self.local_host, port, self.server_id, self.domain))
        for i, dev in enumerate(self.devices):
            local = locals_[i % len(locals_)] if locals_ else messages.Local(
                "TCP", self.local_host, 0, self.server_id, self.domain)
            st = DevState(dev, local, i % max(1, len(locals_)))
            self.states.append(st)
            self.by_id[dev.device_id] = st
            for ch in dev.channels:
                cid = ch[0] if isinstance(ch, tuple | list) else getattr(ch, "id", None) or ch.device_id
                self.by_id.setdefault(str(cid), st)

    async def stop(self) -> None:
        """Stop streams, tasks, the ticker and close every socket (no unregister; see unregister_all)."""
        self._stopping = True
        await self.handler.close()
        await self._tasks.close()
        if self.tx is not None:
            await self.tx.stop()
        for tr, _ in self._udp:
            tr.close()
        self._udp.clear()
        for st in self.states:
            if st.conn is not None and st.conn.transport is not None:
                st.conn.transport.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    # ------------------------------------------------------------------ sending and receiving
    def sender(self, st: DevState) -> Callable[[bytes], None]:
        if st.conn is not None:
            return st.conn.write
        tr = self._udp[st.sock][0]
        server = self.server
        return lambda data: tr.sendto(data, server)

    def request(self, st: DevState, data: bytes, branch: str, callback: Callable[[int, bytes | None], None]) -> None:
        assert self.tx is not None
        self.tx.send(branch, data, self.sender(st), callback, reliable=st.conn is not None)

    def on_data(self, data: bytes, addr: Any, reply: Callable[[bytes], None]) -> None:
        if data[:8] == b"SIP/2.0 ":
            peek = messages.peek_response(data)
            if peek is None:
                self.counts["bad_response"] += 1
                return
            status, branch = peek
            if status >= 200:
                assert self.tx is not None
                self.tx.complete(branch, status, data)
            return
        if not data.strip():
            return  # CRLF keep-alive
        self.handler.on_request(data, addr, reply)

    async def _connect(self, st: DevState) -> bool:
        assert self.loop is not None
        if st.conn is not None and st.conn.transport is not None:
            return True

        def lost() -> None:
            st.conn = None
            st.registered = False

        try:
            _, proto = await self.loop.create_connection(
                lambda: SipStreamProtocol(self.on_data, lost), self.server[0], self.server[1],
                local_addr=(self.local_host, 0))
        except OSError:
            self.reg_failures["connect"] += 1
            return False
        st.conn = proto
        st.local = messages.Local("TCP", self.local_host, proto.local[1], self.server_id, self.domain)
        return True

    def _await_tx(self, st: DevState, data: bytes, branch: str) -> asyncio.Future[tuple[int, bytes | None]]:
        assert self.loop is not None
        fut: asyncio.Future[tuple[int, bytes | None]] = self.loop.create_future()

        def done(status: int, resp: bytes | None) -> None:
            if not fut.done():
                fut.set_result((status, resp))

        self.request(st, data, branch, done)
        return fut

    # ------------------------------------------------------------------ registration
    async def register_one(self, st: DevState, *, expires: int | None = None) -> int:
        """One REGISTER/401/REGISTER/200 exchange; returns the final status (0 = timeout)."""
        assert self.loop is not None
        exp = self.register_expires if expires is None else expires
        if self.transport == "tcp" and not await self._connect(st):
            return 0
        if not st.call_id:
            st.call_id = messages.new_call_id(self.local_host)
        dev = st.dev
        t0 = self.loop.time()
        auth: str | None = None
        status = 0
        for _ in range(3):  # initial, answer to the challenge, one more for a stale nonce
            st.cseq += 1
            branch = messages.new_branch()
            data = messages.register_request(st.local, dev.device_id, tag=st.tag, call_id=st.call_id,
                                            cseq=st.cseq, expires=exp, branch=branch, authorization=auth)
            status, resp = await self._await_tx(st, data, branch)
            if status != 401 or resp is None:
                break
            challenge = _header(resp, "WWW-Authenticate")
            if challenge is None:
                break
            auth = messages.authorization(challenge, method="REGISTER",
                                         uri=f"sip:{self.server_id}@{self.domain}",
                                         username=dev.device_id, password=dev.password)
        if status == 200:
            if exp > 0:
                if not st.registered:
                    self.counts["registered"] += 1
                st.registered = True
                self.lat["register"].add(self.loop.time() - t0)
            else:
                if st.registered:
                    self.counts["registered"] -= 1
                st.registered = False
                self.counts["unregistered"] += 1
        else:
            key = "timeout" if status == 0 else str(status)
            if exp > 0:
                self.reg_failures[key] += 1
            else:
                self.counts[f"unregister_{key}"] += 1
        return status

    async def register_all(self, rate: float | None = None, *, concurrency: int = 256,
                           devices: Iterable[DevState] | None = None) -> dict[str, Any]:
        """Register every (or the given) device: at most `concurrency` in flight, `rate` starts/s."""
        assert self.loop is not None
        todo = list(self.states if devices is None else devices)
        sem = asyncio.Semaphore(max(1, concurrency))
        lat_mark = self.lat["register"].mark()
        fail0 = Counter(self.reg_failures)
        ok0 = self.counts["registered"]
        t0 = self.loop.time()
        tasks = []

        async def one(st: DevState) -> None:
            try:
                await self.register_one(st)
            finally:
                sem.release()

        for i, st in enumerate(todo):
            if self._stopping:
                break
            if rate:
                delay = t0 + i / rate - self.loop.time()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            await sem.acquire()
            tasks.append(self.spawn(one(st)))
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = max(1e-9, self.loop.time() - t0)
        ok = self.counts["registered"] - ok0
        lat = self.lat["register"].since(lat_mark)
        return {
            "attempted": len(todo), "registered": ok, "registered_total": self.counts["registered"],
            "failures": dict(self.reg_failures - fail0), "elapsed_s": round(elapsed, 3),
            "rate": round(ok / elapsed, 1), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
        }

    async def unregister_all(self, *, concurrency: int = 256) -> dict[str, Any]:
        """REGISTER Expires: 0 (authenticated, §3.4) for every registered device."""
        todo = [st for st in self.states if st.registered]
        sem = asyncio.Semaphore(max(1, concurrency))
        before = self.counts["unregistered"]

        async def one(st: DevState) -> None:
            async with sem:
                await self.register_one(st, expires=0)

        await asyncio.gather(*(one(st) for st in todo), return_exceptions=True)
        return {"attempted": len(todo), "unregistered": self.counts["unregistered"] - before}

    # ------------------------------------------------------------------ keepalives
    def send_keepalive(self, st: DevState, run: KeepaliveRun | None = None) -> None:
        """One Notify/Keepalive MESSAGE (§4.3); the answer is counted globally and in `run`."""
        assert self.loop is not None
        loop = self.loop
        st.ka_sn += 1
        branch = messages.new_branch()
        body = messages.keepalive_body(st.dev.device_id, st.ka_sn, self.charset)
        data = messages.message_request(st.local, st.dev.device_id, body, tag=st.tag,
                                       call_id=messages.new_call_id(self.local_host), cseq=20, branch=branch)
        t0 = loop.time()
        self.counts["keepalives_sent"] += 1
        if run is not None:
            run.sent += 1

        def done(status: int, _resp: bytes | None) -> None:
            now = loop.time()
            if run is not None:
                run.answered += 1
            if status == 200:
                self.counts["keepalives_acked"] += 1
                self.lat["keepalive"].add(now - t0)
                if run is not None:
                    run.acked += 1
                    run.last_ack = now
                    run.lat.append((now - t0) * 1000.0)
                return
            key = "timeout" if status == 0 else str(status)
            self.ka_failures[key] += 1
            if run is not None:
                run.failures[key] += 1
            if status == 404 and st.registered:  # the gateway forgot us: re-register (§4.3)
                st.registered = False
                self.counts["registered"] -= 1
                if self.reregister_on_404 and not self._stopping:
                    self.spawn(self.register_one(st))

        self.request(st, data, branch, done)

    async def run_keepalives(self, duration: float | None = None, *, rate: float | None = None,
                             progress: Callable[[dict[str, Any]], None] | None = None,
                             progress_every: float = 5.0, drain: float = 8.0) -> dict[str, Any]:
        """Keepalives from every registered device, spread evenly over the interval.

        `rate` (keepalives/s over the registered devices) overrides `keepalive_interval`. Runs for
        `duration` seconds, or until stop() or cancellation; then waits up to `drain` seconds until
        each keepalive of this run is answered or timed out (so a saturated step does not leak its
        backlog into the next one). `rate` in the result is acked / (last ack − start).
        """
        assert self.loop is not None
        # At an offered rate: the devices registered now. At the interval: every device, so one
        # that (re-)registers later joins in; unregistered ones skip their turn.
        active = [st for st in self.states if st.registered] if rate else self.states
        if not active:
            return {"devices": 0, "sent": 0, "acked": 0, "failures": {}, "rate": 0.0}
        n = len(active)
        per_sec = rate if rate else n / self.keepalive_interval
        run = KeepaliveRun()
        t0 = self.loop.time()
        next_progress = t0 + progress_every
        sent = 0
        while not self._stopping:
            now = self.loop.time()
            if duration is not None and now - t0 >= duration:
                break
            due = int((now - t0) * per_sec) + 1
            while sent < due:
                st = active[sent % n]
                if st.registered:
                    self.send_keepalive(st, run)
                sent += 1
            if progress is not None and now >= next_progress:
                next_progress += progress_every
                progress(self.stats())
            await asyncio.sleep(min(0.01, max(0.001, (sent / per_sec) - (self.loop.time() - t0))))
        send_s = max(1e-9, self.loop.time() - t0)
        limit = self.loop.time() + drain
        while run.answered < run.sent and self.loop.time() < limit and not self._stopping:
            await asyncio.sleep(0.02)
        span = max(send_s, (run.last_ack or t0) - t0)
        return {
            "devices": n, "offered_rate": round(per_sec, 1), "sent": run.sent, "acked": run.acked,
            "failures": dict(run.failures), "unanswered": run.sent - run.answered,
            "elapsed_s": round(send_s, 3), "rate": round(run.acked / span, 1),
            "p50_ms": percentile(run.lat, 50), "p99_ms": percentile(run.lat, 99),
        }

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """Totals since start: registrations, failures by status, keepalives, queries, latency."""
        tx = self.tx
        reg = self.lat["register"].values()
        ka = self.lat["keepalive"].values()
        return {
            "devices": len(self.states),
            "registered": sum(1 for st in self.states if st.registered),
            "register_failures": dict(self.reg_failures),
            "keepalives_sent": self.counts["keepalives_sent"],
            "keepalives_acked": self.counts["keepalives_acked"],
            "keepalive_failures": dict(self.ka_failures),
            "queries_answered": self.counts["queries_answered"],
            "invites": self.counts["invites"], "streams_active": self.handler.streams_active(),
            "register_p50_ms": percentile(reg, 50), "register_p99_ms": percentile(reg, 99),
            "keepalive_p50_ms": percentile(ka, 50), "keepalive_p99_ms": percentile(ka, 99),
            "retransmissions": tx.retransmissions if tx else 0, "timeouts": tx.timeouts if tx else 0,
        }


def _header(data: bytes, name: str) -> str | None:
    """One header's value from a response (full parse: only used for the rare 401)."""
    from gateway.sip.message import parse_message

    try:
        return parse_message(data).headers.get(name)
    except Exception:
        return None

