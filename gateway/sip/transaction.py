"""SIP transactions, client and server, INVITE and non-INVITE (RFC 3261 §17, RFC 6026).

Sans-IO: messages and `now` in, events out; the driver arms one timer from next_timer().
All timers of a transaction collapse into two instants, `retx_at` (A/E/G) and `end_at`
(B/F/H/J/K/D/I), and a transaction has at most one live entry in a single heap (lazy
deletion via a sequence number), so 200,000 Timer-J transactions cost O(log n) each and
about one small slotted object plus the cached response bytes.

Server transactions absorb retransmitted requests by answering from the cache, so a body is
never processed twice (gb28181 §2.3). Matching is RFC 3261 §17.2.3 (top Via branch +
sent-by + method); for branches without the magic cookie it falls back to Call-ID + CSeq +
From tag (RFC 3261 §17.2.3 last paragraph, gb28181 §2.2).

The 2xx to an INVITE is retransmitted here too (RFC 3261 §13.3.1.4) until its ACK, matched by
Call-ID + CSeq number + From tag because that ACK has a new branch.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections import Counter
from collections.abc import Hashable

from .errors import SipParseError, TransactionError
from .events import (
    AckReceived,
    Event,
    Peer,
    RequestReceived,
    ResponseReceived,
    Send,
    StrayResponse,
    TransactionTimeout,
)
from .message import Headers, Request, Response, new_tag, serialize, with_received

MAGIC = "z9hG4bK"
_INF = math.inf


class TxState(enum.Enum):
    TRYING = "trying"  # client non-INVITE before any response; server non-INVITE before any response
    CALLING = "calling"  # client INVITE before any response
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"  # RFC 6026: after a 2xx to INVITE
    CONFIRMED = "confirmed"  # server INVITE: ACK for a non-2xx received
    TERMINATED = "terminated"


class _Tx:
    __slots__ = (
        "ack_key", "data", "end_at", "heap_at", "interval", "invite", "key", "last", "peer",
        "request", "retx_at", "seq", "server", "state", "to_tag",
    )

    def __init__(self, key: Hashable, peer: Peer, server: bool, invite: bool, state: TxState) -> None:
        self.key = key
        self.peer = peer
        self.server = server
        self.invite = invite
        self.state = state
        self.last: bytes | None = None  # server: last response sent; client: the request bytes
        self.data: bytes | None = None  # client INVITE: the ACK sent for a non-2xx
        self.request: Request | None = None  # client INVITE: to build that ACK
        self.to_tag: str | None = None
        self.ack_key: tuple[str, int, str] | None = None
        self.retx_at = _INF
        self.end_at = _INF
        self.interval = 0.0
        self.heap_at = _INF
        self.seq = -1


def server_key(request: Request) -> Hashable:
    """Server transaction key (RFC 3261 §17.2.3); ACK matches its INVITE, CANCEL has its own."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch.startswith(MAGIC) and len(branch) > len(MAGIC):
        return ("s", branch, via.host.lower(), via.port, method)
    # Non-RFC 3261 branch (RFC 4475 §3.2.1, gb28181 §2.2): Call-ID + CSeq + From tag.
    return ("s2543", request.call_id, request.cseq[0], method, request.from_.tag or "")


def client_key(branch: str, method: str) -> Hashable:
    """Client transaction key (RFC 3261 §17.1.3): top Via branch + CSeq method."""
    return ("c", branch, method)


def _dialog_ack_key(msg: Request | Response) -> tuple[str, int, str]:
    return (msg.call_id, msg.cseq[0], msg.from_.tag or "")


class TransactionLayer:
    """All transactions of one endpoint; drive with receive/respond/send_request/handle_timer."""

    def __init__(self, *, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0) -> None:
        self.t1, self.t2, self.t4 = t1, t2, t4
        self._txs: dict[Hashable, _Tx] = {}
        self._heap: list[tuple[float, int, _Tx]] = []
        self._seq = 0
        self._acks: dict[tuple[str, int, str], _Tx] = {}  # 2xx-to-INVITE awaiting ACK
        self._by_conn: dict[int, set[Hashable]] = {}
        self._unarmed: list[_Tx] = []  # new server transactions whose guard timer is not armed yet
        self.stats: Counter[str] = Counter()

    # ----------------------------------------------------------------- timers
    def _arm(self, tx: _Tx) -> None:
        wake = tx.retx_at if tx.retx_at < tx.end_at else tx.end_at
        if wake >= tx.heap_at or wake == _INF:
            return  # an entry that fires no later already exists; it re-arms when it fires
        self._seq += 1
        tx.seq = self._seq
        tx.heap_at = wake
        heapq.heappush(self._heap, (wake, self._seq, tx))

    def _arm_new(self) -> None:
        """Arm the guard of server transactions the application has not answered yet.

        Deferred from receive(): most requests are answered before the driver next asks for
        the timer, and one answered statelessly then leaves nothing behind, not even a heap
        entry holding it for 32 s."""
        for tx in self._unarmed:
            if tx.state is not TxState.TERMINATED:
                self._arm(tx)
        self._unarmed.clear()

    def next_timer(self) -> float | None:
        """When handle_timer() next has work (may be early, never late)."""
        if self._unarmed:
            self._arm_new()
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float) -> list[Event]:
        if self._unarmed:
            self._arm_new()
        events: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, tx = heapq.heappop(heap)
            if seq != tx.seq or tx.state is TxState.TERMINATED:
                continue  # superseded entry (lazy deletion)
            tx.heap_at = _INF
            if now >= tx.end_at:
                self._expire(tx, events)
                continue
            if now >= tx.retx_at:
                self._retransmit(tx, events)
            self._arm(tx)
        return events

    def _retransmit(self, tx: _Tx, events: list[Event]) -> None:
        assert tx.last is not None
        events.append(Send(tx.last, tx.peer))
        self.stats["retransmissions_sent"] += 1
        # Timer A doubles without bound (§17.1.1.2); E, G double up to T2 (§17.1.2.2, §17.2.1).
        tx.interval = tx.interval * 2 if (tx.invite and not tx.server) else min(tx.interval * 2, self.t2)
        tx.retx_at += tx.interval

    def _expire(self, tx: _Tx, events: list[Event]) -> None:
        s = tx.state
        if not tx.server and s in (TxState.TRYING, TxState.CALLING, TxState.PROCEEDING):
            events.append(TransactionTimeout(tx.key))  # Timer B / F
            self.stats["client_timeouts"] += 1
        elif tx.server and tx.invite and s in (TxState.COMPLETED, TxState.ACCEPTED):
            events.append(TransactionTimeout(tx.key, server=True))  # Timer H: no ACK
            self.stats["server_ack_timeouts"] += 1
        elif tx.server and s in (TxState.TRYING, TxState.PROCEEDING):
            self.stats["server_abandoned"] += 1  # the application never answered
        self._terminate(tx)

    def _terminate(self, tx: _Tx) -> None:
        tx.state = TxState.TERMINATED
        self._txs.pop(tx.key, None)
        if tx.ack_key is not None and self._acks.get(tx.ack_key) is tx:
            del self._acks[tx.ack_key]
        cid = tx.peer.conn_id
        if cid is not None:
            keys = self._by_conn.get(cid)
            if keys is not None:
                keys.discard(tx.key)
                if not keys:
                    del self._by_conn[cid]

    def _add(self, tx: _Tx) -> None:
        self._txs[tx.key] = tx
        cid = tx.peer.conn_id
        if cid is not None:
            self._by_conn.setdefault(cid, set()).add(tx.key)

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, key: object) -> bool:
        """A transaction with this key is alive (a request with it is a retransmission)."""
        return key in self._txs

    # ----------------------------------------------------------------- input
    def receive(self, msg: Request | Response, peer: Peer, now: float) -> list[Event]:
        """Feed a parsed message from the transport. Raises SipParseError only if the message
        lacks what matching needs (parse_message has already checked that)."""
        if isinstance(msg, Response):
            return self._receive_response(msg, peer, now)
        if msg.method == "ACK":
            return self._receive_ack(msg, peer, now)
        key = server_key(msg)
        tx = self._txs.get(key)
        if tx is not None:
            self.stats["retransmissions_absorbed"] += 1
            if tx.last is not None and tx.state is not TxState.CONFIRMED:
                return [Send(tx.last, peer)]  # §17.2.2: resend the last response
            return []
        invite = msg.method == "INVITE"
        tx = _Tx(key, peer, True, invite, TxState.PROCEEDING if invite else TxState.TRYING)
        if invite:
            tx.ack_key = _dialog_ack_key(msg)
        tx.end_at = now + 64 * self.t1  # guard against an application that never answers
        self._add(tx)
        self._unarmed.append(tx)
        self.stats["server_transactions"] += 1
        return [RequestReceived(msg, peer, key)]

    def answered(self, key: Hashable, peer: Peer, data: bytes, now: float) -> None:
        """A non-INVITE request answered (final, `data`) before it reached `receive`: the server
        transaction `receive` + `respond` would leave, Completed until Timer J (§17.2.2), so a
        retransmission gets `data` again. `key` must be new (the caller checked `key in self`)."""
        tx = _Tx(key, peer, True, False, TxState.COMPLETED)
        tx.last = data
        tx.end_at = now + (0.0 if peer.reliable else 64 * self.t1)
        self.stats["server_transactions"] += 1
        if tx.end_at > now:
            self._add(tx)
            self._arm(tx)

    def hold(self, key: Hashable, peer: Peer, now: float) -> None:
        """A non-INVITE request taken before it reached `receive` and not answered yet: the
        server transaction `receive` would leave (Trying, with its guard), so a retransmission
        is absorbed; `answer` ends it. `key` must be new (the caller checked `key in self`)."""
        tx = _Tx(key, peer, True, False, TxState.TRYING)
        tx.end_at = now + 64 * self.t1
        self._add(tx)
        self._unarmed.append(tx)
        self.stats["server_transactions"] += 1

    def answer(self, key: Hashable, data: bytes, now: float) -> list[Event]:
        """The final answer `data` (wire bytes) to a non-INVITE server transaction not answered
        yet (one `hold` or `receive` made): Completed until Timer J, as `respond` leaves it."""
        tx = self._txs.get(key)
        if tx is None or not tx.server or tx.invite:
            raise TransactionError("no such non-INVITE server transaction (already finished?)")
        if tx.state not in (TxState.TRYING, TxState.PROCEEDING):
            raise TransactionError("transaction already has a final response")
        tx.last = data
        tx.state = TxState.COMPLETED
        tx.end_at = now + 64 * self.t1 if not tx.peer.reliable else now
        if tx.end_at <= now:
            self._terminate(tx)
        else:
            self._arm(tx)
        return [Send(data, tx.peer)]

    def _receive_ack(self, ack: Request, peer: Peer, now: float) -> list[Event]:
        tx = self._txs.get(server_key(ack))
        if tx is not None and tx.invite and tx.server and tx.state is TxState.COMPLETED:
            tx.state = TxState.CONFIRMED  # §17.2.1: ACK for a non-2xx, absorbed; Timer I
            tx.retx_at = _INF
            tx.end_at = now + (0.0 if tx.peer.reliable else self.t4)
            self._arm(tx)
            if tx.peer.reliable:
                self._terminate(tx)
            self.stats["acks_absorbed"] += 1
            return []
        if tx is None or tx.state is not TxState.ACCEPTED:
            try:
                tx = self._acks.get(_dialog_ack_key(ack))
            except SipParseError:
                tx = None
        if tx is not None and tx.state is TxState.ACCEPTED:
            # ACK for our 2xx: stop retransmitting it (§13.3.1.4); keep absorbing INVITE
            # retransmissions until the end of Timer L (RFC 6026 §8.7).
            tx.state = TxState.CONFIRMED
            tx.retx_at = _INF
            if tx.ack_key is not None:
                self._acks.pop(tx.ack_key, None)
        return [AckReceived(ack, peer)]

    def _receive_response(self, resp: Response, peer: Peer, now: float) -> list[Event]:
        branch = resp.top_via.branch
        tx = self._txs.get(client_key(branch, resp.cseq[1])) if branch else None
        if tx is None:
            self.stats["stray_responses"] += 1
            return [StrayResponse(resp, peer)]
        status = resp.status
        s = tx.state
        if s in (TxState.TRYING, TxState.CALLING, TxState.PROCEEDING):
            if status < 200:
                tx.state = TxState.PROCEEDING
                if tx.invite:
                    tx.retx_at = _INF  # §17.1.1.2: provisional stops Timer A
                elif tx.retx_at != _INF:
                    tx.interval = self.t2  # §17.1.2.2: keep retransmitting at T2 in Proceeding
                    tx.retx_at = now + self.t2
                self._arm(tx)
                return [ResponseReceived(resp, tx.key, False, peer)]
            events: list[Event] = [ResponseReceived(resp, tx.key, True, peer)]
            tx.retx_at = _INF
            if tx.invite and status < 300:
                tx.state = TxState.ACCEPTED  # RFC 6026 Timer M: let 2xx retransmissions through
                tx.end_at = now + 64 * self.t1
            elif tx.invite:
                tx.state = TxState.COMPLETED  # §17.1.1.3: we ACK non-2xx ourselves; Timer D
                tx.data = serialize(_ack_for(tx, resp))
                events.append(Send(tx.data, tx.peer))
                tx.end_at = now + (0.0 if tx.peer.reliable else max(32.0, 64 * self.t1))
            else:
                tx.state = TxState.COMPLETED  # Timer K
                tx.end_at = now + (0.0 if tx.peer.reliable else self.t4)
            if tx.end_at <= now:
                self._terminate(tx)
            else:
                self._arm(tx)
            return events
        if s is TxState.ACCEPTED and 200 <= status < 300:
            return [ResponseReceived(resp, tx.key, True, peer)]  # 2xx retransmission: the TU re-ACKs
        if s is TxState.COMPLETED and tx.data is not None and status >= 300:
            return [Send(tx.data, tx.peer)]  # retransmitted non-2xx final: resend our ACK
        return []

    # ---------------------------------------------------------------- output
    def respond(self, key: Hashable, response: Response, now: float, *, stateless: bool = False) -> list[Event]:
        """Send a response in server transaction `key`; adds a To tag if it has none.

        `stateless` (non-INVITE final responses only): forget the transaction at once instead of
        keeping it for Timer J — RFC 3261 §8.2.7 stateless UAS behaviour, for requests whose
        reprocessing is harmless (a registrar's challenge, keepalives, query responses). A
        retransmission is then a new request, answered again; the caller makes the To tag
        depend on the request only, so the answer is the same."""
        tx = self._txs.get(key)
        if tx is None or not tx.server:
            raise TransactionError("no such server transaction (already finished?)")
        if tx.state not in (TxState.TRYING, TxState.PROCEEDING):
            raise TransactionError("transaction already has a final response")
        via = response.headers.get("Via")
        if via is not None and "received=" not in via:
            # RFC 3581 §4 / gb28181 §2.1: stamp the packet source on the top Via.
            response.headers.set_first("Via", with_received(via, (tx.peer.host, tx.peer.port)))
        to = response.to
        if to.tag is None:  # gb28181 §2.2: always a To tag; one per transaction
            if tx.to_tag is None:
                tx.to_tag = new_tag()
            response.headers.set("To", f"{response.headers.get('To')};tag={tx.to_tag}")
        data = tx.last = serialize(response)
        status = response.status
        if status < 200:
            tx.state = TxState.PROCEEDING
            return [Send(data, tx.peer)]
        udp = not tx.peer.reliable
        if not tx.invite:
            tx.state = TxState.COMPLETED  # Timer J
            tx.end_at = now + 64 * self.t1 if udp and not stateless else now
            if stateless:
                self.stats["stateless_responses"] += 1
        else:
            tx.state = TxState.ACCEPTED if status < 300 else TxState.COMPLETED
            tx.end_at = now + 64 * self.t1  # Timer H (and 2xx give-up, §13.3.1.4)
            if udp:
                tx.interval = self.t1
                tx.retx_at = now + self.t1  # Timer G
            if status < 300 and tx.ack_key is not None:
                self._acks[tx.ack_key] = tx
        if tx.end_at <= now:
            self._terminate(tx)
        else:
            self._arm(tx)
        return [Send(data, tx.peer)]

    def send_request(self, request: Request, peer: Peer, now: float) -> tuple[Hashable, list[Event]]:
        """Start a client transaction; the request must carry its top Via with a fresh branch."""
        if request.method == "ACK":
            raise TransactionError("ACK is sent without a transaction (send it stateless)")
        try:
            branch = request.top_via.branch
            method = request.cseq[1]
        except SipParseError as e:
            raise TransactionError(f"request not ready to send: {e.reason}") from None
        if not branch or not branch.startswith(MAGIC):
            raise TransactionError("top Via needs a branch starting with z9hG4bK")
        key = client_key(branch, method)
        if key in self._txs:
            raise TransactionError("a client transaction with this branch exists")
        invite = request.method == "INVITE"
        tx = _Tx(key, peer, False, invite, TxState.CALLING if invite else TxState.TRYING)
        tx.last = serialize(request)
        if invite:
            tx.request = request
        if not peer.reliable:
            tx.interval = self.t1
            tx.retx_at = now + self.t1  # Timer A / E
        tx.end_at = now + 64 * self.t1  # Timer B / F
        self._add(tx)
        self._arm(tx)
        self.stats["client_transactions"] += 1
        return key, [Send(tx.last, peer)]

    def connection_lost(self, conn_id: int, now: float) -> list[Event]:
        """A TCP/TLS connection closed: its pending client transactions fail (gb28181 §2.3)."""
        events: list[Event] = []
        for key in list(self._by_conn.get(conn_id, ())):
            tx = self._txs.get(key)
            if tx is None:
                continue
            if not tx.server and tx.state in (TxState.TRYING, TxState.CALLING, TxState.PROCEEDING):
                events.append(TransactionTimeout(key))
            self._terminate(tx)
        self._by_conn.pop(conn_id, None)
        return events

    def cancel_target(self, cancel: Request) -> Hashable | None:
        """Key of the INVITE server transaction a CANCEL refers to (RFC 3261 §9.2), if live."""
        inv = Request("INVITE", cancel.uri, cancel.headers, b"", cancel.version)
        try:
            key = server_key(inv)
        except SipParseError:
            return None
        return key if key in self._txs else None

    def has_final(self, key: Hashable) -> bool:
        """True if server transaction `key` is gone or already answered finally."""
        tx = self._txs.get(key)
        return tx is None or tx.state not in (TxState.TRYING, TxState.PROCEEDING)


def _ack_for(tx: _Tx, resp: Response) -> Request:
    """ACK for a non-2xx final (RFC 3261 §17.1.1.3): same branch, To from the response."""
    req = tx.request
    assert req is not None
    h = Headers()
    h.add("Via", req.headers.get_all("Via")[0])
    for name in ("From", "Call-ID"):
        h.add(name, req.headers.get(name) or "")
    h.add("To", resp.headers.get("To") or "")
    h.add("CSeq", f"{req.cseq[0]} ACK")
    for route in req.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    return Request("ACK", req.uri, h)
