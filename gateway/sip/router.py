"""The one SIP application: routes what the endpoint delivers to the handlers that registered.

    endpoint ──► SipRouter ──► by dialog (Call-ID of a dialog we hold) ──► that dialog's owner
                            └► by sender (From user of a configured peer, e.g. an upper platform) ──► its handler
                            └► by method (REGISTER, MESSAGE, NOTIFY, …) ──► the method's handler
                            └► nobody: the answer RFC 3261 asks for (OPTIONS 200, 405, 481, 501)

Handlers register; nothing here knows about devices or media. Device registrar and media
sessions register today; cascade and lower-platform adapters plug in the same way. A request is
matched to a dialog first (in-dialog BYE from a camera goes to the media session that owns the
Call-ID; RFC 3261 §12.2.2), then to its sender (a MESSAGE or INVITE whose From user is an upper
platform's ID goes to that cascade uplink, not to the device adapter), then to its method. The
sender table only routes: the handler still checks that the request came from where that peer
lives (a From header is the peer's word, not proof). An ACK goes to the owner of its dialog. A
response that matches no client transaction (a retransmitted or late 2xx to our INVITE,
§13.2.2.4) goes to the dialog's owner, else is counted and dropped. Peer garbage never escapes
a handler (house rule 8): a malformed header touched by a handler is answered 400 with its
reason, anything else 500, and counted.

Plain keepalives and first REGISTERs may be answered before any of that by a method's fast
handler (`add_fast`, gateway/sip/fastpath.py): the endpoint offers it the scanned bytes, and it
answers or hands the request back untouched for the full path.

Errors: none of its own; handlers raise `SipParseError` (→ 400) or anything (→ 500).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from typing import Protocol

from .errors import SipParseError
from .events import Peer
from .fastpath import FastAnswer, Scan
from .message import KNOWN_METHODS, Request, Response, make_response, new_tag

log = logging.getLogger("gateway.sip")

#: Methods an out-of-dialog request may never carry into us with a 2xx: no dialog, no call.
_DIALOG_ONLY = frozenset({"BYE", "CANCEL", "INFO"})
#: Methods we know but do not serve (RFC 3261 §8.2.1: 405 with Allow).
_NOT_ALLOWED = frozenset({"SUBSCRIBE", "PUBLISH", "UPDATE", "PRACK", "REFER"})


class Responder(Protocol):
    """What the router answers through (the endpoint's server transactions)."""

    def respond(self, key: Hashable, response: Response, *, stateless: bool = False) -> None: ...


RequestHandler = Callable[[Request, Peer, Hashable], None]
FastHandler = Callable[[Scan, Peer], FastAnswer | None]
ConnectionListener = Callable[[Peer], None]


class DialogOwner(Protocol):
    """Who holds a dialog (or an early dialog awaiting a late 2xx) and answers inside it."""

    def on_dialog_request(self, request: Request, peer: Peer, key: Hashable) -> int:
        """Handle an in-dialog request; return the status to answer (the router answers it)."""
        ...

    def on_dialog_response(self, response: Response, peer: Peer) -> bool:
        """A response no client transaction matched, for this dialog; True when it was used."""
        ...

    def on_dialog_ack(self, request: Request, peer: Peer) -> None:
        """The ACK of a 2xx we sent in this dialog (a UAS starts sending media on it)."""
        ...


class SipRouter:
    """`SipApplication` for `SipEndpoint`: a method table, a dialog table and default answers."""

    def __init__(self, *, server_methods: str | None = None) -> None:
        self._methods: dict[str, RequestHandler] = {}
        self._fast: dict[str, FastHandler] = {}
        self._senders: dict[tuple[str, str], RequestHandler] = {}  # (From user, method) → handler
        self._dialogs: dict[str, DialogOwner] = {}
        self._on_closed: list[ConnectionListener] = []
        self._responder: Responder | None = None
        self._allow = server_methods
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ wiring
    def bind(self, responder: Responder) -> None:
        """The endpoint this router answers through (it is started with the router as its app,
        the way an asyncio transport hands itself to its protocol)."""
        self._responder = responder

    def add_method(self, method: str, handler: RequestHandler) -> None:
        """Out-of-dialog requests of `method` go to `handler` (one handler per method)."""
        if method in self._methods:
            raise ValueError(f"{method} already has a handler")
        self._methods[method] = handler

    def add_fast(self, method: str, handler: FastHandler) -> None:
        """Plain requests of `method` (fastpath.scan said yes) are offered to `handler` first; it
        answers them or returns None, having changed nothing, for the full path to run."""
        if method in self._fast:
            raise ValueError(f"{method} already has a fast handler")
        self._fast[method] = handler

    def on_fast(self, scan: Scan, peer: Peer) -> FastAnswer | None:
        """The endpoint's fast path: the method's fast handler, unless a sender handler (a
        cascade's upper platform) owns the request — that one always sees the parsed request."""
        handler = self._fast.get(scan.method)
        if handler is None or (self._senders and (scan.from_user, scan.method) in self._senders):
            return None
        answer = handler(scan, peer)
        if answer is not None:
            self.stats[f"requests:{scan.method}"] += 1
        return answer

    def add_sender(self, user: str, methods: Iterable[str], handler: RequestHandler) -> None:
        """Out-of-dialog requests of `methods` whose From URI user is `user` go to `handler` instead
        of the method table (one handler per sender and method)."""
        keys = [(user, m) for m in methods]
        taken = [k for k in keys if k in self._senders]
        if taken:
            raise ValueError(f"{taken[0][1]} from {user} already has a handler")
        for k in keys:
            self._senders[k] = handler

    def remove_sender(self, user: str) -> None:
        for k in [k for k in self._senders if k[0] == user]:
            del self._senders[k]

    def add_dialog(self, call_id: str, owner: DialogOwner) -> None:
        """Requests and stray responses carrying `call_id` go to `owner` until remove_dialog."""
        self._dialogs[call_id] = owner

    def remove_dialog(self, call_id: str) -> None:
        self._dialogs.pop(call_id, None)

    def add_connection_listener(self, listener: ConnectionListener) -> None:
        self._on_closed.append(listener)

    @property
    def allow(self) -> str:
        """The Allow header value: every method served, plus ACK/BYE/CANCEL/OPTIONS/INFO/INVITE."""
        if self._allow is not None:
            return self._allow
        return ", ".join([*self._methods, "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO"])

    def dialogs(self) -> int:
        return len(self._dialogs)

    # ------------------------------------------------------------------ SipApplication
    def on_request(self, request: Request, peer: Peer, key: Hashable) -> None:
        method = request.method
        self.stats[f"requests:{method if method in KNOWN_METHODS else 'other'}"] += 1
        try:
            owner = self._dialogs.get(request.call_id) if method in _DIALOG_ONLY else None
            if owner is not None:
                self._answer(key, request, owner.on_dialog_request(request, peer, key), peer)
                return
            handler = None
            if self._senders:  # empty unless a cascade is configured: no From parse on the hot path
                handler = self._senders.get((request.from_.uri.user or "", method))
            if handler is None:
                handler = self._methods.get(method)
            if handler is not None:
                handler(request, peer, key)
            elif method == "OPTIONS":
                self._answer(key, request, 200, peer, headers=[("Allow", self.allow)])
            elif method in _DIALOG_ONLY:
                self._answer(key, request, 481, peer)  # no such dialog or transaction (§15.1.2)
            elif method == "INVITE":
                self._answer(key, request, 488, peer, reason="Not Acceptable Here")  # we place calls only
            elif method in _NOT_ALLOWED:
                self._answer(key, request, 405, peer, headers=[("Allow", self.allow)])
            else:
                self._answer(key, request, 501, peer, reason="Not Implemented")
        except SipParseError as exc:
            self.stats[f"refused:bad_request:{exc.reason}"] += 1
            self._answer(key, request, 400, peer, reason=exc.reason)
        except Exception:
            log.exception("error handling %s", method)
            self.stats["internal_errors"] += 1
            self._answer(key, request, 500, peer)

    def on_ack(self, request: Request, peer: Peer) -> None:
        self.stats["acks"] += 1
        try:
            owner = self._dialogs.get(request.call_id)
            if owner is not None:
                owner.on_dialog_ack(request, peer)
        except SipParseError:
            self.stats["refused:bad_ack"] += 1
        except Exception:
            self.stats["internal_errors"] += 1
            log.exception("dialog ACK handler failed")

    def on_stray_response(self, response: Response, peer: Peer) -> None:
        try:
            owner = self._dialogs.get(response.call_id)
        except SipParseError:
            owner = None
        if owner is not None and owner.on_dialog_response(response, peer):
            return
        self.stats["stray_responses"] += 1

    def on_connection_closed(self, peer: Peer) -> None:
        for listener in self._on_closed:
            try:
                listener(peer)
            except Exception:
                self.stats["internal_errors"] += 1
                log.exception("connection listener failed")

    # ------------------------------------------------------------------ answers
    def _answer(self, key: Hashable, request: Request, status: int, peer: Peer, *, reason: str | None = None,
                headers: list[tuple[str, str]] | None = None) -> None:
        response = make_response(request, status, reason, to_tag=new_tag(), headers=headers or [],
                                 received=(peer.host, peer.port))
        self.stats[f"responses:{status}"] += 1
        if self._responder is None:
            raise RuntimeError("SipRouter.bind(endpoint) was never called")
        self._responder.respond(key, response)
