"""The upper's Catalog subscriptions, sans-IO (gb28181.md §7.4, §4.15; RFC 6665 as GB uses it).

    SUBSCRIBE (Event: Catalog;id=n, body Query/Catalog) ─► 200, Expires echoed (capped), body
        Response/Catalog Result OK; the dialog is kept: Call-ID, the upper's From tag (our To tag
        on NOTIFY), our new tag, the upper's Contact (the NOTIFY Request-URI)
    refresh (same Call-ID, our tag in To) ─► 200, new expiry; Expires: 0 ─► 200, dropped
    shared channels change ─► NOTIFY (Event echoed, Subscription-State: active;expires=left,
        body Notify/Catalog, items with <Event>) in each live dialog, CSeq+1 each
    expiry passes / the upper goes offline ─► dropped (no NOTIFY: the upper re-subscribes)

No sockets, no clock: `now` comes in; the shell sends the NOTIFY requests it is given (through
the endpoint, which adds the Via) and calls `expire(now)` at `next_timer()`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.cascade import answers
from adapters.cascade.registration import UplinkConfig
from gateway.gb.items import CatalogItem
from gateway.gb.manscdp import Manscdp
from gateway.sip.errors import SipParseError
from gateway.sip.message import Headers, Request, new_tag

_INF = float("inf")


class Verdict(enum.StrEnum):
    SUBSCRIBED = "subscribed"
    REFRESHED = "refreshed"
    UNSUBSCRIBED = "unsubscribed"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class SubscribeAnswer:
    """What to answer a SUBSCRIBE: `status`, and for a 2xx the headers and body of the 200."""

    verdict: Verdict
    status: int
    reason: str = ""
    to_tag: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(slots=True)
class CatalogSubscription:
    call_id: str
    upper_tag: str  # the upper's From tag: the To tag of our NOTIFYs
    our_tag: str
    event: str  # the Event header, echoed on every NOTIFY (with its id)
    target: str  # the upper's Contact URI: the NOTIFY Request-URI
    expires_at: float
    cseq: int = 0


class Subscriptions:
    """Catalog subscriptions of one upper."""

    def __init__(self, config: UplinkConfig, *, max_expires: int = 86400) -> None:
        self.config = config
        self.max_expires = max_expires
        self.dialogs: dict[str, CatalogSubscription] = {}
        self._sn = 0

    def __len__(self) -> int:
        return len(self.dialogs)

    def on_subscribe(self, request: Request, msg: Manscdp | None, now: float) -> SubscribeAnswer:
        """Decide a SUBSCRIBE from the upper (`msg`: its parsed MANSCDP body, None when it has none)."""
        event = (request.headers.get("Event") or "").strip()
        package = event.split(";", 1)[0].strip().lower()
        if (msg is not None and msg.cmd_type != "Catalog") or (msg is None and package != "catalog"):
            return SubscribeAnswer(Verdict.REFUSED, 489, "subscribe_unsupported")  # Bad Event
        raw = (request.headers.get("Expires") or "").strip()
        if raw and not raw.isdigit():
            return SubscribeAnswer(Verdict.REFUSED, 400, "subscribe_bad_expires")
        expires = min(int(raw) if raw else 3600, self.max_expires)
        call_id = request.call_id
        tag = request.to.tag
        known = self.dialogs.get(call_id)
        if tag and (known is None or known.our_tag != tag):
            return SubscribeAnswer(Verdict.REFUSED, 481, "subscribe_no_dialog")
        sn = msg.sn if msg is not None else 0
        if expires == 0:
            self.dialogs.pop(call_id, None)
            return SubscribeAnswer(Verdict.UNSUBSCRIBED, 200, to_tag=tag or new_tag(),
                                   headers=(("Expires", "0"), ("Event", event)))
        if known is not None:
            known.expires_at = now + expires
            known.target = _contact_uri(request) or known.target
            verdict = Verdict.REFRESHED
        else:
            known = CatalogSubscription(call_id=call_id, upper_tag=request.from_.tag or "", our_tag=new_tag(),
                                        event=event or "Catalog", expires_at=now + expires,
                                        target=_contact_uri(request) or self.config.request_uri)
            self.dialogs[call_id] = known
            verdict = Verdict.SUBSCRIBED
        return SubscribeAnswer(verdict, 200, to_tag=known.our_tag,
                               headers=(("Expires", str(expires)), ("Event", known.event),
                                        ("Contact", self.config.contact),
                                        ("Content-Type", "Application/MANSCDP+xml")),
                               body=answers.subscribe_ok(self.config.our_id, sn, self.config.charset))

    def notifies(self, changes: Sequence[CatalogItem], now: float, per_message: int = 50) -> list[Request]:
        """NOTIFY requests carrying `changes` (at most `per_message` items each) to every live
        subscription; none when nothing changed or nobody listens."""
        self.expire(now)
        if not changes:
            return []
        step = max(1, per_message)
        out = []
        for sub in self.dialogs.values():
            for i in range(0, len(changes), step):
                self._sn = self._sn % 1_000_000 + 1
                body = answers.catalog_notify(self.config.our_id, self._sn, changes[i:i + step], self.config.charset)
                out.append(self._notify(sub, body, now))
        return out

    def expire(self, now: float) -> list[str]:
        gone = [cid for cid, sub in self.dialogs.items() if sub.expires_at <= now]
        for cid in gone:
            del self.dialogs[cid]
        return gone

    def clear(self) -> int:
        """Drop every subscription (the upper went offline, or we stop)."""
        n = len(self.dialogs)
        self.dialogs.clear()
        return n

    def next_timer(self) -> float | None:
        at = min((s.expires_at for s in self.dialogs.values()), default=_INF)
        return None if at == _INF else at

    def _notify(self, sub: CatalogSubscription, body: bytes, now: float) -> Request:
        c = self.config
        sub.cseq += 1
        h = Headers()
        h.add("From", f"<sip:{c.our_id}@{c.our_domain}>;tag={sub.our_tag}")
        to = f"<sip:{c.upper_id}@{c.upper_domain}>"
        h.add("To", f"{to};tag={sub.upper_tag}" if sub.upper_tag else to)
        h.add("Call-ID", sub.call_id)
        h.add("CSeq", f"{sub.cseq} NOTIFY")
        h.add("Max-Forwards", "70")
        h.add("Contact", c.contact)
        h.add("Event", sub.event)
        h.add("Subscription-State", f"active;expires={max(0, int(sub.expires_at - now))}")
        h.add("User-Agent", c.user_agent)
        h.add("Content-Type", "Application/MANSCDP+xml")
        h.add("Content-Length", str(len(body)))
        return Request(method="NOTIFY", uri=sub.target, headers=h, body=body)


def _contact_uri(request: Request) -> str:
    """The Contact header's URI (`<sip:…>` unwrapped), "" when absent or unparsable."""
    try:
        value = (request.headers.get("Contact") or "").strip()
    except SipParseError:
        return ""
    value = value[1:].split(">", 1)[0] if value.startswith("<") else value.split(";", 1)[0]
    return value if value.lower().startswith(("sip:", "sips:")) else ""
