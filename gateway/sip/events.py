"""Events the sans-IO transaction layer hands to its driver (house rule 3: small, frozen)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from .message import Request, Response


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from / goes to. `conn_id` pins a TCP/TLS message to one connection."""

    transport: str  # "udp" | "tcp" | "tls"
    host: str
    port: int
    conn_id: int | None = None

    @property
    def reliable(self) -> bool:
        """Stream transports: no retransmissions, zero-length Timer J/K/D/I (RFC 3261 §17)."""
        return self.transport != "udp"


@dataclass(frozen=True, slots=True)
class Send:
    """Put these bytes on the wire to `peer`."""

    data: bytes
    peer: Peer


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (not a retransmission); answer it with respond(key, ...)."""

    request: Request
    peer: Peer
    key: Hashable


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx (or one that matches no transaction): the dialog layer's business."""

    request: Request
    peer: Peer


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response matched to our client transaction `key`; `final` = status >= 200."""

    response: Response
    key: Hashable
    final: bool
    peer: Peer | None = None


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matches no client transaction (late, duplicated, or forged)."""

    response: Response
    peer: Peer


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Client: no final response (Timer B/F). Server (`server=True`): no ACK for our final (Timer H)."""

    key: Hashable
    server: bool = False


Event = Send | RequestReceived | AckReceived | ResponseReceived | StrayResponse | TransactionTimeout
