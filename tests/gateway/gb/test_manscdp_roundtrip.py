"""Encoders and decoders agree: what build_* writes, parse + the typed decoder reads back."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.gb import manscdp
from gateway.gb.errors import GbError
from gateway.gb.items import CatalogItem
from gateway.gb.manscdp import AlarmStatus, Root, parse

CHARSETS = ["GB2312", "UTF-8", "GBK", "GB18030"]
DEV = "44010600001180000001"

# Chinese (GB2312 range), Latin, digits, XML specials; no control chars; stripped, non-empty.
_alphabet = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.sampled_from("&<>\"'；，。（）"),
)
text = st.text(_alphabet, min_size=1, max_size=24).map(str.strip).filter(bool)
any_text = (
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
        min_size=1,
        max_size=24,
    )
    .map(str.strip)
    .filter(bool)
)
digits = st.text("0123456789", min_size=1, max_size=20)
opt = st.none() | text
opt_int = st.none() | st.integers(0, 65535)
opt_float = st.none() | st.floats(-180, 180, allow_nan=False, allow_infinity=False)
extra_key = st.sampled_from(["CertNum", "EndTime", "Info/DownloadSpeed", "Info/RoomType", "Foo/Bar"])

items = st.builds(
    CatalogItem,
    device_id=digits,
    name=opt,
    manufacturer=opt,
    model=opt,
    owner=opt,
    civil_code=st.none() | digits,
    block=opt,
    address=opt,
    parental=st.none() | st.integers(0, 1),
    parent_id=st.none() | digits,
    safety_way=opt_int,
    register_way=opt_int,
    secrecy=st.none() | st.integers(0, 1),
    ip_address=opt,
    port=opt_int,
    status=st.sampled_from([None, "ON", "OFF"]),
    longitude=opt_float,
    latitude=opt_float,
    ptz_type=st.none() | st.integers(1, 7),
    event=st.sampled_from([None, "ON", "OFF", "ADD", "DEL", "UPDATE", "VLOST"]),
    business_group_id=st.none() | digits,
    extra=st.dictionaries(extra_key, text, max_size=3),
)


@settings(max_examples=150)
@given(st.lists(items, max_size=5), st.integers(0, 2**31), st.sampled_from(CHARSETS), st.integers(0, 99))
def test_catalog_round_trip(page_items, sn, charset, extra_sum):
    body = manscdp.build_catalog_response(DEV, sn, len(page_items) + extra_sum, page_items, charset=charset)
    msg = parse(body)
    assert msg.root is Root.RESPONSE
    page = manscdp.catalog_response(msg)
    assert (page.device_id, page.sn, page.sum_num) == (DEV, sn, len(page_items) + extra_sum)
    assert page.items == page_items


@given(st.lists(items, min_size=1, max_size=3))
def test_catalog_notify_round_trip(page_items):
    body = manscdp.build_catalog_notify(DEV, 5, page_items)
    msg = parse(body)
    assert msg.root is Root.NOTIFY
    assert manscdp.catalog_notify(msg) == page_items


@given(any_text, st.sampled_from(["UTF-8", "GB18030"]))
def test_any_unicode_name_round_trips_in_utf8_and_gb18030(name, charset):
    it = CatalogItem(device_id="1", name=name)
    body = manscdp.build_catalog_response(DEV, 1, 1, [it], charset=charset)
    assert manscdp.catalog_response(parse(body)).items == [it]


def test_gb2312_body_bytes_are_gb2312():
    body = manscdp.build_catalog_response(DEV, 1, 1, [CatalogItem(device_id="1", name="大门入口")])
    assert body.startswith(b'<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n')
    assert "大门入口".encode("gb2312") in body
    body.decode("gb2312")  # strictly GB2312 when the text is
    utf = manscdp.build_catalog_response(
        DEV, 1, 1, [CatalogItem(device_id="1", name="大门入口")], charset="utf-8"
    )
    assert utf.startswith(b'<?xml version="1.0" encoding="UTF-8"?>') and "大门入口".encode() in utf


@given(text, digits, st.integers(0, 10**9), st.sampled_from(CHARSETS), st.lists(digits, max_size=3))
def test_keepalive_round_trip(status, device_id, sn, charset, info):
    msg = parse(manscdp.build_keepalive(device_id, sn, status, charset, info_device_ids=info))
    assert manscdp.keepalive(msg) == manscdp.Keepalive(device_id, sn, status.upper(), tuple(info))


@given(opt, opt, opt, opt, opt, st.none() | st.integers(0, 512), st.sampled_from(CHARSETS))
def test_device_info_round_trip(name, dtype, manu, model, fw, channels, charset):
    body = manscdp.build_device_info_response(
        DEV,
        9,
        name=name,
        device_type=dtype,
        manufacturer=manu,
        model=model,
        firmware=fw,
        channel_count=channels,
        charset=charset,
    )
    assert manscdp.device_info(parse(body)) == manscdp.DeviceInfo(
        DEV, 9, "OK", name, dtype, manu, model, fw, channels
    )


@given(
    st.booleans(),
    st.sampled_from(["OK", "ERROR"]),
    st.sampled_from([None, "ON", "OFF"]),
    st.sampled_from([None, "ON", "OFF"]),
    st.none() | st.just("2024-06-01T08:12:40"),
    st.lists(
        st.builds(AlarmStatus, digits, st.sampled_from([None, "ONDUTY", "OFFDUTY", "ALARM"])), max_size=3
    ),
    st.none() | text,
)
def test_device_status_round_trip(online, status, encode, record, when, alarms, reason):
    body = manscdp.build_device_status_response(
        DEV,
        3,
        online=online,
        status=status,
        encode=encode,
        record=record,
        device_time=when,
        alarms=alarms,
        reason=reason,
    )
    st_ = manscdp.device_status(parse(body))
    assert st_ == manscdp.DeviceStatus(
        DEV, 3, "OK", online, status, encode, record, when, tuple(alarms), reason
    )


def test_query_with_nested_extra_and_control():
    body = manscdp.build_query(
        "RecordInfo",
        620017,
        "44010600001310000003",
        extra={
            "StartTime": "2024-06-01T00:00:00",
            "EndTime": "2024-06-01T23:59:59",
            "Secrecy": 0,
            "Type": "all",
        },
    )
    msg = parse(body)
    assert msg.root is Root.QUERY and msg.cmd_type == "RecordInfo"
    assert msg.fields == {
        "CmdType": "RecordInfo",
        "SN": "620017",
        "DeviceID": "44010600001310000003",
        "StartTime": "2024-06-01T00:00:00",
        "EndTime": "2024-06-01T23:59:59",
        "Secrecy": "0",
        "Type": "all",
    }
    ctl = parse(
        manscdp.build_control(
            "DeviceControl", 1, DEV, extra={"PTZCmd": "A50F0100000000B5", "Info": {"ControlPriority": 5}}
        )
    )
    assert ctl.root is Root.CONTROL and ctl.get("ptzcmd") == "A50F0100000000B5"
    info = ctl.find("Info")
    assert info is not None and info.findtext("ControlPriority") == "5"


def test_response_result_and_escaping():
    msg = parse(manscdp.build_response_result("DeviceControl", 733112, DEV, "ERROR"))
    assert (msg.root, msg.cmd_type, msg.sn, msg.get("Result")) == (
        Root.RESPONSE,
        "DeviceControl",
        733112,
        "ERROR",
    )
    weird = parse(manscdp.build_query("A&B<C>", 1, "x<y>&z"))
    assert weird.cmd_type == "A&B<C>" and weird.device_id == "x<y>&z"


def test_encoder_refuses_bad_charset_and_element_names():
    with pytest.raises(GbError):
        manscdp.build_query("Catalog", 1, DEV, charset="latin-1")
    with pytest.raises(GbError):
        manscdp.build_query("Catalog", 1, DEV, extra={"bad name": "x"})
    with pytest.raises(GbError):
        manscdp.build_query("Catalog", 1, DEV, extra={"<x>": "x"})


def test_illegal_xml_characters_dropped_not_fatal():
    body = manscdp.build_catalog_response(DEV, 1, 1, [CatalogItem(device_id="1", name="a\x00b\x1fc")])
    assert manscdp.catalog_response(parse(body)).items[0].name == "abc"
