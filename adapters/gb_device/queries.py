"""MANSCDP queries we send to devices and the answers we wait for (GB/T 28181-2016 §9.5).

A Query MESSAGE carries an SN; the device answers with a Response MESSAGE of the same
(DeviceID, CmdType, SN). `Queries` keeps the waiters; the device shell hands every Response
to `resolve`, and catalog pages count only while `expects` says we asked (issue 10 #4).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from adapters.outbound import RequestFactory
from gateway.gb import manscdp
from gateway.gb.errors import GbError
from gateway.gb.presence import DeviceRecord, Presence
from gateway.sip.errors import SipTimeout
from gateway.sip.events import Peer
from gateway.sip.message import Request, Response


class QueryFailed(GbError):
    """A MANSCDP query got no (good) answer."""


class Requester(Protocol):
    """The client side of the SIP endpoint."""

    async def request(self, request: Request, peer: Peer, *, timeout: float | None = None) -> Response: ...


class Queries:
    """Query MESSAGEs out, matching Response MESSAGEs back to their waiters."""

    def __init__(self, *, endpoint: Requester, requests: RequestFactory, presence: Presence, timeout: float,
                 first_sn: int = 0) -> None:
        self.endpoint = endpoint
        self.requests = requests
        self.presence = presence
        self.timeout = timeout
        self._waiters: dict[tuple[str, str, int], asyncio.Future[Any]] = {}
        self._sn = first_sn % 100000

    def next_sn(self) -> int:
        self._sn = (self._sn + 1) % 1_000_000 or 1
        return self._sn

    def peer_of(self, device_id: str) -> tuple[DeviceRecord, Peer]:
        rec = self.presence.get(device_id)
        if rec is None:
            raise QueryFailed(f"device {device_id} is not registered")
        return rec, Peer(rec.transport, rec.host, rec.port, rec.conn_id)

    # ------------------------------------------------------------------ waiters
    def expect(self, device_id: str, cmd_type: str, sn: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[(device_id, cmd_type, sn)] = fut
        return fut

    def expects(self, device_id: str, cmd_type: str, sn: int) -> bool:
        return (device_id, cmd_type, sn) in self._waiters

    def waiter(self, device_id: str, cmd_type: str, sn: int) -> asyncio.Future[Any] | None:
        return self._waiters.get((device_id, cmd_type, sn))

    def forget(self, device_id: str, cmd_type: str, sn: int) -> None:
        self._waiters.pop((device_id, cmd_type, sn), None)

    def resolve(self, device_id: str, cmd_type: str, sn: int, value: Any) -> None:
        """A Response arrived: wake its waiter (once); one nobody waits for is dropped."""
        waiter = self._waiters.pop((device_id, cmd_type, sn), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(value)

    # ------------------------------------------------------------------ sending
    async def send(self, device_id: str, cmd_type: str, sn: int) -> None:
        """Send the Query MESSAGE and wait for its 200 (not for the Response MESSAGE)."""
        rec, peer = self.peer_of(device_id)
        body = manscdp.build_query(cmd_type, sn, device_id)
        req = self.requests.manscdp(device_id, rec.host, rec.port, body, transport=rec.transport)
        try:
            response = await self.endpoint.request(req, peer, timeout=self.timeout)
        except SipTimeout:
            raise QueryFailed(f"{cmd_type} to {device_id}: no answer") from None
        if response.status != 200:
            raise QueryFailed(f"{cmd_type} to {device_id}: {response.status} {response.reason}")

    async def query(self, device_id: str, cmd_type: str) -> manscdp.Manscdp:
        """Send a Query and wait for the matching Response MESSAGE (same SN, §4.1)."""
        sn = self.next_sn()
        fut = self.expect(device_id, cmd_type, sn)
        try:
            await self.send(device_id, cmd_type, sn)
            result: manscdp.Manscdp = await asyncio.wait_for(fut, self.timeout)
            return result
        except TimeoutError:
            raise QueryFailed(f"{cmd_type} from {device_id}: no response in {self.timeout}s") from None
        finally:
            self.forget(device_id, cmd_type, sn)
