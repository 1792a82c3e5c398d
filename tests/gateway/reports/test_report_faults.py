"""Ticket workflow table, and which faults open tickets."""

from __future__ import annotations

import pytest
import scenario as S

from gateway.reports.errors import TicketError
from gateway.reports.faults import (
    TRANSITIONS,
    Ticket,
    TicketAction,
    TicketStatus,
    apply_action,
    ticket_id,
    tickets_to_open,
)
from gateway.reports.ledger import build_ledger
from gateway.reports.period import parse_period

T = Ticket("T20261110-0001", S.C1, "V1", "S1", "offline", S.L(11, 10, 10))
NOW = S.L(11, 10, 18)


def test_happy_path_keeps_history() -> None:
    t, h1 = apply_action(
        T, "answer", actor="vendor:V1", now=S.L(11, 10, 11), cause=" 光纤被挖断 ", expected_repair_ts=S.L(11, 10, 16)
    )
    assert (t.status, t.vendor_cause, h1.from_status, h1.to_status) == (
        TicketStatus.vendor_answered,
        "光纤被挖断",
        TicketStatus.open,
        TicketStatus.vendor_answered,
    )
    t, h2 = apply_action(t, TicketAction.repair, actor="vendor:V1", now=NOW, repaired_ts=S.L(11, 10, 15, 30))
    assert t.status is TicketStatus.repaired and t.repaired_ts == S.L(11, 10, 15, 30)
    t, h3 = apply_action(t, "recover", actor="system", now=NOW, repaired_ts=S.L(11, 10, 15))
    assert t.recovered_ts == S.L(11, 10, 15) and t.status is TicketStatus.repaired
    t, h4 = apply_action(t, "confirm", actor="station:S1", now=NOW)
    assert t.status is TicketStatus.confirmed and t.confirmed_ts == NOW
    assert [h.action for h in (h1, h2, h3, h4)] == ["answer", "repair", "recover", "confirm"]
    with pytest.raises(TicketError):  # confirmed is final
        apply_action(t, "answer", actor="vendor:V1", now=NOW, cause="again")


def test_dispute_loop() -> None:
    t, _ = apply_action(T, "repair", actor="vendor:V1", now=NOW)
    t, h = apply_action(t, "dispute", actor="station:S1", now=NOW, reason="画面仍模糊")
    assert t.status is TicketStatus.disputed and h.detail == {"reason": "画面仍模糊"}
    t, _ = apply_action(t, "answer", actor="vendor:V1", now=NOW, cause="更换镜头")
    assert t.status is TicketStatus.vendor_answered


@pytest.mark.parametrize("status", list(TicketStatus))
@pytest.mark.parametrize("action", list(TicketAction))
def test_every_pair_is_in_the_table_or_refused(status: TicketStatus, action: TicketAction) -> None:
    ticket = Ticket("T1", S.C1, "V1", "S1", "offline", S.L(11, 10, 10), status)
    kw = {"cause": "x", "reason": "y"}
    if (status, action) in TRANSITIONS:
        new, h = apply_action(ticket, action, actor="a", now=NOW, **kw)  # type: ignore[arg-type]
        assert new.status is TRANSITIONS[(status, action)] is h.to_status
    else:
        with pytest.raises(TicketError):
            apply_action(ticket, action, actor="a", now=NOW, **kw)  # type: ignore[arg-type]


def test_bad_actions() -> None:
    with pytest.raises(TicketError):
        apply_action(T, "answer", actor="v", now=NOW, cause="  ")
    with pytest.raises(TicketError):
        apply_action(T, "answer", actor="v", now=NOW, cause="x", expected_repair_ts=S.L(11, 1))
    with pytest.raises(TicketError):
        apply_action(T, "repair", actor="v", now=NOW, repaired_ts=NOW + 10)  # in the future
    with pytest.raises(TicketError):
        apply_action(T, "fly", actor="v", now=NOW)
    t, _ = apply_action(T, "repair", actor="v", now=NOW)
    with pytest.raises(TicketError):
        apply_action(t, "dispute", actor="s", now=NOW, reason="")


def test_ticket_id_and_tickets_to_open() -> None:
    from datetime import date

    assert ticket_id(date(2026, 11, 27), 7) == "T20261127-0007"
    period = parse_period("2026-12-01", now=S.L(12, 1, 9))
    ledger = build_ledger(S.EVENTS, S.CONTRACT, period)
    due = tickets_to_open(ledger, S.CONTRACT, [])
    # C4 has had no video since 30 Nov 22:00 but this ledger starts on 1 Dec: since = ledger start
    assert [(e.channel_id, e.state, e.ongoing) for e in due] == [(S.C4, "no_video", True)]
    # its ticket of 30 Nov 22:00 (before this ledger, not recovered) is the same fault
    mine = Ticket("T1", S.C4, "V2", "S2", "no_video", S.L(11, 30, 22))
    assert tickets_to_open(ledger, S.CONTRACT, [mine]) == []
    assert tickets_to_open(ledger, S.CONTRACT, [], min_duration_s=10 * 3600) == []
