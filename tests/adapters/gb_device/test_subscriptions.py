"""Catalog subscriptions to lower platforms, sans-IO: when to send, refresh, retry, give up."""

from __future__ import annotations

import itertools

from adapters.gb_device.subscriptions import REFRESH_MARGIN, RETRY_FIRST, CatalogSubscriptions, SubState

PLAT = "34020000002000000101"


def subs(expires: int = 3600) -> CatalogSubscriptions:
    n = itertools.count(1)

    def new_dialog() -> tuple[str, str, int]:
        k = next(n)
        return f"call-{k}", f"tag-{k}", k

    return CatalogSubscriptions(new_dialog, expires=expires)


def test_subscribe_then_refresh_in_the_dialog_before_expiry() -> None:
    s = subs()
    assert s.due(0.0) == []
    s.want(PLAT, 100.0)
    [first] = s.due(100.0)
    assert (first.call_id, first.from_tag, first.to_tag, first.cseq) == ("call-1", "tag-1", None, 1)
    assert first.expires == 3600
    assert s.due(100.5) == []  # in flight: not sent twice
    assert s.on_answer(PLAT, "call-1", 200, 101.0, to_tag="dev", expires=1800) is SubState.ACTIVE
    sub = s.get(PLAT)
    assert sub is not None and sub.expires_at == 1901.0
    assert sub.due_at == 101.0 + 1800 - REFRESH_MARGIN  # granted less than asked: obeyed
    assert s.due(sub.due_at - 1) == []
    [refresh] = s.due(sub.due_at)
    # same Call-ID, From tag and event id; the To tag from the 200; CSeq + 1
    assert (refresh.call_id, refresh.from_tag, refresh.to_tag, refresh.cseq, refresh.event_id) == (
        "call-1", "tag-1", "dev", 2, first.event_id)


def test_short_grant_refreshes_at_half_time() -> None:
    s = subs()
    s.want(PLAT, 0.0)
    s.due(0.0)
    s.on_answer(PLAT, "call-1", 200, 0.0, to_tag="d", expires=60)
    assert s.get(PLAT).due_at == 30.0  # type: ignore[union-attr]


def test_failure_backs_off_and_unsupported_gives_up() -> None:
    s = subs()
    s.want(PLAT, 0.0)
    s.due(0.0)
    assert s.on_answer(PLAT, "call-1", 0, 1.0) is SubState.WANTED  # no answer
    assert s.due(1.0 + RETRY_FIRST - 0.1) == []
    assert len(s.due(1.0 + RETRY_FIRST)) == 1
    assert s.on_answer(PLAT, "call-1", 500, 40.0) is SubState.WANTED
    assert s.get(PLAT).due_at == 40.0 + 2 * RETRY_FIRST  # type: ignore[union-attr]
    s.due(1000.0)
    assert s.on_answer(PLAT, "call-1", 489, 1001.0) is SubState.UNSUPPORTED
    assert s.due(1e9) == []  # never asked again until it registers anew (want)


def test_481_opens_a_new_dialog_and_stale_answers_are_ignored() -> None:
    s = subs()
    s.want(PLAT, 0.0)
    s.due(0.0)
    s.on_answer(PLAT, "call-1", 200, 0.0, to_tag="d", expires=3600)
    [refresh] = s.due(3300.0)
    assert refresh.to_tag == "d"
    assert s.on_answer(PLAT, "call-1", 481, 3300.5) is SubState.WANTED
    [fresh] = s.due(3300.5)
    assert (fresh.call_id, fresh.to_tag, fresh.cseq) == ("call-2", None, 1)
    assert s.on_answer(PLAT, "call-1", 200, 3301.0, to_tag="x") is None  # the old dialog's late answer
    assert s.on_answer(PLAT, "call-2", 481, 3301.0) is SubState.WANTED
    assert s.due(3301.0) == []  # a second 481 in a row backs off instead of looping


def test_offline_platform_is_dropped() -> None:
    s = subs()
    s.want(PLAT, 0.0)
    [action] = s.due(0.0)
    assert s.drop(PLAT) is not None
    assert s.on_answer(PLAT, action.call_id, 200, 1.0) is None
    assert s.due(1e9) == [] and len(s) == 0
