"""The upper's Catalog subscription, sans-IO on a fake clock: 200 with Expires echoed and Result OK,
refresh in the dialog, Expires 0, NOTIFYs in the dialog with each change's <Event>, expiry."""

from __future__ import annotations

from adapters.cascade.subscription import Subscriptions, Verdict
from gateway.gb import manscdp
from gateway.gb.items import CatalogItem
from gateway.sip.message import Request, parse_message
from tests.adapters.cascade.test_uplink import UPPER, US, config

CAM = "44010600001310000001"


def subscribe(expires: int | None = 3600, *, to_tag: str = "", call_id: str = "sub1", cseq: int = 1,
              cmd: str = "Catalog", event: str = "Catalog;id=4821") -> tuple[Request, manscdp.Manscdp]:
    body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>{cmd}</CmdType>\r\n<SN>902</SN>\r\n'
            f"<DeviceID>{US}</DeviceID>\r\n</Query>\r\n").encode()
    head = (f"SUBSCRIBE sip:{US}@4401060000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKs{cseq}\r\n"
            f"From: <sip:{UPPER}@4400000000>;tag=upt\r\n"
            f"To: <sip:{US}@4401060000>{';tag=' + to_tag if to_tag else ''}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:{UPPER}@127.0.0.1:5070>\r\n"
            f"Event: {event}\r\n{f'Expires: {expires}' + chr(13) + chr(10) if expires is not None else ''}"
            f"Content-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n")
    msg = parse_message(head.encode() + body)
    assert isinstance(msg, Request)
    return msg, manscdp.parse(msg.body)


def test_a_catalog_subscribe_is_answered_with_expires_and_result_ok_and_kept() -> None:
    subs = Subscriptions(config())
    answer = subs.on_subscribe(*subscribe(600), 100.0)
    assert (answer.verdict, answer.status) == (Verdict.SUBSCRIBED, 200)
    headers = dict(answer.headers)
    assert headers["Expires"] == "600" and headers["Event"] == "Catalog;id=4821"
    body = manscdp.parse(answer.body)
    assert (body.root.value, body.cmd_type, body.sn, body.get("Result")) == ("Response", "Catalog", 902, "OK")
    (sub,) = subs.dialogs.values()
    assert (sub.call_id, sub.upper_tag, sub.our_tag, sub.target) == ("sub1", "upt", answer.to_tag,
                                                                     f"sip:{UPPER}@127.0.0.1:5070")
    assert subs.next_timer() == 700.0


def test_notifies_carry_the_events_in_the_dialog_batched() -> None:
    subs = Subscriptions(config())
    tag = subs.on_subscribe(*subscribe(600), 100.0).to_tag
    changes = [CatalogItem(device_id=f"4401060000131000000{i}", event="OFF") for i in range(5)]
    first, second = subs.notifies(changes, 160.0, per_message=3)
    for n, request in enumerate((first, second), start=1):
        assert request.method == "NOTIFY" and request.uri == f"sip:{UPPER}@127.0.0.1:5070"
        assert request.call_id == "sub1" and request.cseq == (n, "NOTIFY")
        assert request.from_.tag == tag and request.to.tag == "upt"
        assert request.headers.get("Event") == "Catalog;id=4821"
        assert request.headers.get("Subscription-State") == "active;expires=540"
    body = manscdp.parse(first.body)
    assert (body.root.value, body.cmd_type, body.device_id) == ("Notify", "Catalog", US)
    assert b"<SumNum>3</SumNum>" in first.body and first.body.count(b"<Event>OFF</Event>") == 3
    assert second.body.count(b"<Event>OFF</Event>") == 2
    assert subs.notifies([], 170.0) == []


def test_refresh_extends_and_expires_zero_or_time_ends_the_subscription() -> None:
    subs = Subscriptions(config())
    tag = subs.on_subscribe(*subscribe(60), 0.0).to_tag
    refreshed = subs.on_subscribe(*subscribe(120, to_tag=tag, cseq=2), 50.0)
    assert (refreshed.verdict, refreshed.to_tag, subs.next_timer()) == (Verdict.REFRESHED, tag, 170.0)
    assert len(subs) == 1
    assert subs.on_subscribe(*subscribe(60, to_tag="someone-else", cseq=3), 60.0).status == 481
    gone = subs.on_subscribe(*subscribe(0, to_tag=tag, cseq=4), 60.0)
    assert (gone.verdict, gone.status, dict(gone.headers)["Expires"]) == (Verdict.UNSUBSCRIBED, 200, "0")
    assert len(subs) == 0 and subs.next_timer() is None
    subs.on_subscribe(*subscribe(60, call_id="sub2"), 100.0)
    assert subs.notifies([CatalogItem(device_id=CAM, event="ON")], 161.0) == []  # expired: nobody left
    assert len(subs) == 0


def test_other_subscriptions_are_refused_and_offline_clears() -> None:
    subs = Subscriptions(config())
    assert subs.on_subscribe(*subscribe(cmd="MobilePosition", event="presence"), 0.0).status == 489
    assert subs.on_subscribe(*subscribe(), 0.0).status == 200
    assert subs.clear() == 1 and len(subs) == 0
