"""What we answer an upper: command allow-list, shared-channel selection, paced Catalog pages."""

from __future__ import annotations

import dataclasses

import pytest

from adapters.cascade.answers import (
    Answer,
    Channel,
    Selection,
    catalog_changes,
    catalog_pages,
    decide,
    device_info,
    device_status,
    is_node,
    platform_item,
    share,
    share_items,
)
from gateway.gb import manscdp
from gateway.gb.items import CatalogItem

US = "44010600002000000001"
CAM = "44010600001310000001"


def body(root: str, cmd: str, device_id: str = US, extra: str = "") -> manscdp.Manscdp:
    return manscdp.parse(f'<?xml version="1.0" encoding="GB2312"?><{root}><CmdType>{cmd}</CmdType><SN>7</SN>'
                         f"<DeviceID>{device_id}</DeviceID>{extra}</{root}>".encode())


@pytest.mark.parametrize(("root", "cmd", "device_id", "answer", "status"), [
    ("Query", "Catalog", US, Answer.CATALOG, 200),
    ("Query", "DeviceInfo", US, Answer.DEVICE_INFO, 200),
    ("Query", "DeviceStatus", US, Answer.DEVICE_STATUS, 200),
    ("Query", "DeviceInfo", CAM, Answer.REFUSE, 404),
    ("Query", "RecordInfo", CAM, Answer.REFUSE, 403),
    ("Notify", "Keepalive", "44000000002000000001", Answer.KEEPALIVE, 200),
])
def test_queries_are_answered(root: str, cmd: str, device_id: str, answer: Answer, status: int) -> None:
    d = decide(body(root, cmd, device_id), US)
    assert (d.answer, d.status, d.security) == (answer, status, False)


@pytest.mark.parametrize(("cmd", "extra", "reason"), [
    ("DeviceControl", "<TeleBoot>Boot</TeleBoot>", "control_refused:DeviceControl"),
    ("DeviceControl", "<PTZCmd>A50F01000000000000</PTZCmd>", "control_refused:ptz"),
    ("DeviceConfig", "<BasicParam><Name>x</Name></BasicParam>", "control_refused:DeviceConfig"),
    ("DeviceUpgrade", "", "control_refused:DeviceUpgrade"),
])
def test_control_from_outside_is_refused_as_a_security_event(cmd: str, extra: str, reason: str) -> None:
    d = decide(body("Control", cmd, CAM, extra), US)
    assert (d.answer, d.status, d.reason, d.security) == (Answer.REFUSE, 403, reason, True)


def item(cid: str, parent: str | None = None, **kw: object) -> CatalogItem:
    kw.setdefault("name", f"cam {cid[-2:]}")
    kw.setdefault("status", "ON")
    return CatalogItem(device_id=cid, parent_id=parent, **kw)  # type: ignore[arg-type]


def test_only_selected_channels_are_shared_and_rooted_at_us() -> None:
    nvr = "34020000001110000001"
    items = [item("44010600001310000003", nvr), item(CAM, nvr, civil_code="440106"),
             item("44010600001310000002", CAM)]
    everything = share_items(items, US)
    assert [i.device_id for i in everything] == [CAM, "44010600001310000002", "44010600001310000003"]
    assert [i.parent_id for i in everything] == [US, CAM, US]
    assert all(i.civil_code == "440106" and i.parental == 0 for i in everything)
    picked = share_items(items, US, ["44010600001310000002", "nope"])
    assert [(i.device_id, i.parent_id) for i in picked] == [("44010600001310000002", US)]


def test_catalog_pages_carry_the_upper_sn_our_id_and_sumnum() -> None:
    items = share_items([item(f"4401060000131000000{n}") for n in range(5)], US)
    pages = [manscdp.catalog_response(manscdp.parse(p)) for p in catalog_pages(US, 4242, items, per_message=2)]
    assert [(p.sn, p.device_id, p.sum_num, len(p.items)) for p in pages] == [(4242, US, 5, 2), (4242, US, 5, 2),
                                                                              (4242, US, 5, 1)]
    assert b'encoding="GB2312"' in catalog_pages(US, 1, items)[0]
    assert len(catalog_pages(US, 1, items)) == 5  # one item per message by default (WVP)
    (empty,) = catalog_pages(US, 9, [])
    assert b'<DeviceList Num="0">' in empty and manscdp.catalog_response(manscdp.parse(empty)).sum_num == 0


def test_device_info_and_status_are_about_our_platform() -> None:
    info = manscdp.device_info(manscdp.parse(device_info(US, 3, name="gw", channels=12, firmware="1.0")))
    assert (info.device_id, info.name, info.channel_count) == (US, "gw", 12)
    status = manscdp.parse(device_status(US, 4, device_time="2026-12-03T08:00:00"))
    assert (status.cmd_type, status.sn, status.get("Online")) == ("DeviceStatus", 4, "ONLINE")


GOOD_PTZ = "A50F010800FA00B7"  # pan right, speed 0xFA (checksum OK)


def test_ptz_is_forwarded_only_when_allowed_valid_and_alone() -> None:
    ptz_only = body("Control", "DeviceControl", CAM, f"<PTZCmd>{GOOD_PTZ}</PTZCmd>")
    d = decide(ptz_only, US, allow_ptz=True)
    assert (d.answer, d.ptz_cmd) == (Answer.PTZ, GOOD_PTZ)
    assert decide(ptz_only, US).reason == "control_refused:ptz"  # off by default
    bad = decide(body("Control", "DeviceControl", CAM, "<PTZCmd>A50F010800FA00B8</PTZCmd>"), US, allow_ptz=True)
    assert (bad.answer, bad.status, bad.reason) == (Answer.REFUSE, 400, "ptz_invalid")
    smuggled = decide(body("Control", "DeviceControl", CAM, f"<PTZCmd>{GOOD_PTZ}</PTZCmd><TeleBoot>Boot</TeleBoot>"),
                      US, allow_ptz=True)
    assert (smuggled.answer, smuggled.reason, smuggled.security) == (Answer.REFUSE, "control_refused:DeviceControl",
                                                                      True)


def test_sites_vendors_and_channels_select_their_union() -> None:
    a, b, c = "34020000001310000001", "34020000001310000002", "34020000001310000003"
    listed = [Channel("34020000001320000001", item(a), site="east", vendor="kehai"),
              Channel("34020000001320000002", item(b), site="west", vendor="hik"),
              Channel("34020000001320000003", item(c), site="", vendor="")]
    assert [i.device_id for i in share(listed, US).items] == [a, b, c]  # nothing configured: all
    assert [i.device_id for i in share(listed, US, Selection(sites=frozenset({"east"}))).items] == [a]
    assert [i.device_id for i in share(listed, US, Selection(vendors=frozenset({"hik"}))).items] == [b]
    union = Selection(channels=frozenset({c}), sites=frozenset({"east"}), vendors=frozenset({"hik"}))
    assert [i.device_id for i in share(listed, US, union).items] == [a, b, c]
    assert share(listed, US, Selection(sites=frozenset({""}))).items == []  # no site is not a site


def test_colliding_channel_ids_are_shown_once_each_and_map_back() -> None:
    ch, nvr1, nvr2 = "34020000001310000001", "34020000001110000001", "34020000001110000002"
    shared = share([Channel(nvr2, item(ch, name="b")), Channel(nvr1, item(ch, name="a"))], US)
    ids = [i.device_id for i in shared.items]
    assert len(ids) == 2 and ch in ids
    (other,) = [i for i in ids if i != ch]
    assert shared.origin == {ch: (nvr1, ch), other: (nvr2, ch)}
    assert (shared.stream_key(ch), shared.stream_key(other)) == (f"{ch}@{nvr1}", f"{ch}@{nvr2}")  # each its own
    alone = share([Channel(nvr1, item("34020000001310000002"))], US)
    assert alone.stream_key("34020000001310000002") == "34020000001310000002"  # shared with local viewers
    assert {i.device_id: i.name for i in shared.items} == {ch: "a", other: "b"}


def test_catalog_changes_name_each_difference_once() -> None:
    on, off = item(CAM), item(CAM, status="OFF")
    renamed = item(CAM, name="renamed")
    new = item("44010600001310000009")
    assert catalog_changes({}, {CAM: on}) == [dataclasses.replace(on, event="ADD")]
    assert catalog_changes({CAM: on}, {}) == [CatalogItem(device_id=CAM, event="DEL")]
    assert catalog_changes({CAM: on}, {CAM: off}) == [CatalogItem(device_id=CAM, event="OFF")]
    assert catalog_changes({CAM: off}, {CAM: on}) == [CatalogItem(device_id=CAM, event="ON")]
    assert catalog_changes({CAM: on}, {CAM: renamed}) == [dataclasses.replace(renamed, event="UPDATE")]
    assert catalog_changes({CAM: on}, {CAM: on}) == []
    both = catalog_changes({CAM: on}, {CAM: off, new.device_id: new})
    assert [(i.device_id, i.event) for i in both] == [(CAM, "OFF"), (new.device_id, "ADD")]


def test_the_catalog_tree_lists_regions_and_groups_before_channels_rooted_at_us() -> None:
    lower = "34020000002000000009"  # a lower platform carrying a region, a 215, a 216 and a camera
    bg, vo, cam = "34020000002150000001", "34020000002160000001", "34020000001310000001"
    listed = [Channel(lower, item(cam, vo)), Channel(lower, item(vo, bg, business_group_id=bg)),
              Channel(lower, item(bg, "340200")), Channel(lower, item("340200")),
              Channel("34020000001320000001", item("340200"))]  # the same region under another device: once
    shared = share(listed, US).items
    assert [(i.device_id, i.parent_id) for i in shared] == [("340200", US), (bg, "340200"), (vo, bg), (cam, vo)]
    assert shared[2].business_group_id == bg and shared[3].business_group_id is None
    assert [i.parental for i in shared] == [1, 1, 1, 0]
    assert [is_node(i.device_id) for i in shared] == [True, True, True, False]
    lone = share([Channel(lower, item(vo, bg, business_group_id=bg))], US).items  # its 215 is not shared
    assert (lone[0].parent_id, lone[0].business_group_id) == (US, None)
    root = platform_item(US, "gbgate 1")
    assert (root.device_id, root.parent_id, root.civil_code, root.name) == (US, None, US[:6], "gbgate 1")
