"""Where an INVITE's RTP is received: in this process, or in a media worker (issue 15).

The INVITE manager (adapters/gb_media.py) does the signalling and asks an `Ingest` for the rest:
which port pool a stream's ports come from, an RTP session checking the device's packets, and
a receiver listening (UDP, TCP passive) or connecting (TCP active) for it. `LocalIngest` is the
single-process answer: the session and receivers live here and feed the hub's stream directly.
`gateway.media_workers.remote.RemoteIngest` gives the same answers for a stream owned by a
media worker, whose slice of the port range the ports then come from.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gateway.media.pool import PortPool
from gateway.media.receiver import FrameSink, RtpSession, TcpPassiveReceiver, UdpReceiver, open_tcp_active
from gateway.media.session_stats import Trace

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RtpLeg(Protocol):
    """What the INVITE manager reads and sets on a leg's RTP session (RtpSession's shape)."""

    expected_ssrc: int | None
    last_packet_at: float | None
    use_reorder: bool

    def arm(self) -> None: ...

    def rebind(self, *, ssrc: int | None) -> None: ...

    def host_allowed(self, host: str) -> bool: ...

    def stats(self) -> dict[str, Any]: ...

    def totals(self) -> dict[str, int]: ...


class Receiver(Protocol):
    async def close(self) -> None: ...


class Ingest(Protocol):
    """Port pool, RTP session and receivers for one stream's legs."""

    def pool_for(self, sink: Any) -> PortPool: ...

    def session(self, sink: Any, *, ssrc: int, allowed_hosts: Iterable[str], allowed_nets: Iterable[Network],
                trace: Trace, reorder: bool, clock: Callable[[], float]) -> RtpLeg: ...

    # `rtp` is what `session` returned (each ingest knows its own kind)
    async def listen_udp(self, rtp: Any, host: str, port: int, *, rcvbuf: int, window: float) -> Receiver: ...

    async def listen_tcp(self, rtp: Any, host: str, port: int) -> Receiver: ...

    async def connect_tcp(self, rtp: Any, host: str, port: int, *, retry_for: float) -> Receiver: ...


class LocalIngest:
    """Everything in this process (media.workers = 1): RtpSession → the hub's Stream."""

    __slots__ = ("pool",)

    def __init__(self, pool: PortPool) -> None:
        self.pool = pool

    def pool_for(self, sink: Any) -> PortPool:
        return self.pool

    def session(self, sink: FrameSink, *, ssrc: int, allowed_hosts: Iterable[str],
                allowed_nets: Iterable[Network], trace: Trace, reorder: bool,
                clock: Callable[[], float] = time.monotonic) -> RtpSession:
        return RtpSession(sink, ssrc=ssrc, allowed_hosts=allowed_hosts, allowed_nets=allowed_nets, trace=trace,
                          reorder=reorder, armed=False, clock=clock)

    async def listen_udp(self, rtp: Any, host: str, port: int, *, rcvbuf: int, window: float) -> Receiver:
        return await UdpReceiver.open(rtp, host, port, rcvbuf=rcvbuf, window=window)

    async def listen_tcp(self, rtp: Any, host: str, port: int) -> Receiver:
        return await TcpPassiveReceiver.open(rtp, host, port)

    async def connect_tcp(self, rtp: Any, host: str, port: int, *, retry_for: float) -> Receiver:
        return await open_tcp_active(rtp, host, port, retry_for=retry_for)
