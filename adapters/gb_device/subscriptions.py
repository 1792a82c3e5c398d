"""Catalog subscriptions to lower platforms (our notes §4.15). Sans-IO: no sockets, no clock.

A platform (type 200) that accepts `SUBSCRIBE` with `Event: Catalog` pushes per-channel changes
(ON/OFF/VLOST/DEFECT/ADD/DEL/UPDATE) as NOTIFYs instead of being polled. The subscription is a
dialog: refreshes keep the Call-ID, our From tag and the `;id=`, take the To tag from the 200 and
CSeq + 1, and go out before expiry. A refused or unanswered SUBSCRIBE is retried with back-off; a
platform that says it does not know the method or the event package (405/489/501) is not asked
again until it registers anew; 481 (the dialog is gone) starts a fresh subscription.
The device shell turns each `SubscribeAction` into a request and feeds the answer back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

#: What we ask for; the platform's 200 may grant less (it is obeyed).
DEFAULT_EXPIRES = 3600
#: Refresh this long before expiry (at most half the granted time); WVP's minimum period is 30 s.
REFRESH_MARGIN = 300.0
MIN_EXPIRES = 30
RETRY_FIRST = 30.0
RETRY_MAX = 600.0
#: Answers that say the platform does not do catalog subscriptions at all.
UNSUPPORTED = frozenset({405, 489, 501})


class SubState(StrEnum):
    WANTED = "wanted"  # to be sent (first time or after a failure's back-off)
    SENDING = "sending"  # a SUBSCRIBE is in flight
    ACTIVE = "active"  # granted until `expires_at`; refreshed at `due_at`
    UNSUPPORTED = "unsupported"  # the platform refused the method or the package: no more tries


@dataclass(slots=True)
class Subscription:
    device_id: str
    call_id: str
    from_tag: str
    event_id: int
    state: SubState = SubState.WANTED
    cseq: int = 0
    to_tag: str | None = None
    due_at: float = 0.0
    expires_at: float | None = None
    failures: int = 0


@dataclass(frozen=True, slots=True)
class SubscribeAction:
    """One SUBSCRIBE to send: in the dialog when `to_tag` is set."""

    device_id: str
    call_id: str
    from_tag: str
    to_tag: str | None
    cseq: int
    expires: int
    event_id: int


class CatalogSubscriptions:
    """Every platform's catalog subscription: what to send when, and what an answer means."""

    def __init__(self, new_dialog: Callable[[], tuple[str, str, int]], *, expires: int = DEFAULT_EXPIRES) -> None:
        """`new_dialog()` gives a fresh (Call-ID, From tag, Event id) for each new dialog."""
        self.new_dialog = new_dialog
        self.expires = max(MIN_EXPIRES, expires)
        self._subs: dict[str, Subscription] = {}

    def __len__(self) -> int:
        return len(self._subs)

    def get(self, device_id: str) -> Subscription | None:
        return self._subs.get(device_id)

    def want(self, device_id: str, now: float) -> None:
        """Subscribe to `device_id` from now on (a fresh dialog; any older one is forgotten)."""
        call_id, from_tag, event_id = self.new_dialog()
        self._subs[device_id] = Subscription(device_id, call_id, from_tag, event_id, due_at=now)

    def drop(self, device_id: str) -> Subscription | None:
        """The platform went offline (its subscription died with it) or was removed."""
        return self._subs.pop(device_id, None)

    def due(self, now: float) -> list[SubscribeAction]:
        """SUBSCRIBEs to send now (each subscription marked in flight until its answer)."""
        out = []
        for sub in self._subs.values():
            if sub.state in (SubState.WANTED, SubState.ACTIVE) and now >= sub.due_at:
                sub.state = SubState.SENDING
                sub.cseq += 1
                out.append(SubscribeAction(sub.device_id, sub.call_id, sub.from_tag, sub.to_tag, sub.cseq,
                                           self.expires, sub.event_id))
        return out

    def on_answer(self, device_id: str, call_id: str, status: int, now: float, *, to_tag: str | None = None,
                  expires: int | None = None) -> SubState | None:
        """The final answer to the SUBSCRIBE of dialog `call_id` (0: no answer). Returns the new state."""
        sub = self._subs.get(device_id)
        if sub is None or sub.call_id != call_id or sub.state is not SubState.SENDING:
            return None  # an answer to a dialog we have since dropped or replaced
        if 200 <= status < 300:
            granted = self.expires if expires is None else expires
            if granted <= 0:
                return self._retry(sub, now)  # granted nothing: as a failure
            sub.state, sub.failures = SubState.ACTIVE, 0
            sub.to_tag = sub.to_tag or to_tag
            sub.expires_at = now + granted
            sub.due_at = now + max(granted / 2, granted - REFRESH_MARGIN)
            return sub.state
        if status in UNSUPPORTED:
            sub.state = SubState.UNSUPPORTED
            return sub.state
        if status == 481:  # the platform forgot the dialog: the next SUBSCRIBE opens a new one at once
            sub.call_id, sub.from_tag, sub.event_id = self.new_dialog()
            sub.to_tag, sub.expires_at, sub.cseq = None, None, 0
            if sub.failures == 0:
                sub.failures, sub.state, sub.due_at = 1, SubState.WANTED, now
                return sub.state
        return self._retry(sub, now)

    def _retry(self, sub: Subscription, now: float) -> SubState:
        sub.failures += 1
        sub.state = SubState.WANTED
        # the first retry (30 s) comes well before a refreshed subscription lapses (margin 300 s)
        sub.due_at = now + min(RETRY_MAX, RETRY_FIRST * 2 ** min(sub.failures - 1, 10))
        return sub.state
