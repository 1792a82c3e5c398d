"""MANSCDP parsing against vectors in tests/data/manscdp (GB2312 bytes, lying declarations, attacks)."""

import time
from pathlib import Path

import pytest

from gateway.gb import manscdp
from gateway.gb.charset import decode_body, decode_with
from gateway.gb.errors import GbError, HostileXml, ManscdpError
from gateway.gb.manscdp import AlarmStatus, Root, parse

DATA = Path(__file__).parents[2] / "data" / "manscdp"


def raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_vectors_are_really_gb2312_bytes():
    body = raw("catalog_page1_gb2312.xml")
    assert "大门入口".encode("gb2312") in body
    assert "大门入口".encode() not in body
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")


def test_keepalive():
    msg = parse(raw("keepalive_gb2312.xml"))
    assert msg.root is Root.NOTIFY
    assert (msg.cmd_type, msg.sn, msg.device_id) == ("Keepalive", 43, "44010600001320000101")
    assert msg.charset == "gb18030"
    ka = manscdp.keepalive(msg)
    assert ka == manscdp.Keepalive("44010600001320000101", 43, "OK", ())


def test_keepalive_with_faulty_subdevices_and_padded_sn():
    ka = manscdp.keepalive(parse(raw("keepalive_info.xml")))
    assert ka.sn == 44
    assert ka.status == "ERROR"
    assert ka.info_device_ids == ("44010600001310000003", "44010600001310000004")


def test_fields_and_case_insensitive_get():
    msg = parse(raw("control_ptz.xml"))
    assert msg.root is Root.CONTROL
    assert msg.fields["PTZCmd"] == "A50F01080080003D"
    assert msg.get("ptzcmd") == "A50F01080080003D"
    assert msg.get("PTZCMD") == "A50F01080080003D"
    assert msg.get("Nope") is None
    assert msg.get("Nope", "x") == "x"
    info = msg.find("INFO")
    assert info is not None and info.findtext("ControlPriority") == "5"


def test_catalog_page_gb2312():
    page = manscdp.catalog_response(parse(raw("catalog_page1_gb2312.xml")))
    assert (page.device_id, page.sn, page.sum_num, page.skipped) == ("44010600001180000001", 271834, 4, 0)
    first, second = page.items
    assert first.device_id == "44010600001310000001"
    assert first.name == "大门入口"
    assert first.manufacturer == "Dahua"
    assert first.model == "IPC-HFW2433"
    assert first.owner == "0"
    assert first.civil_code == "440106"
    assert first.address == "Gate 1"
    assert first.parental == 0
    assert first.parent_id == "44010600001180000001"
    assert (first.safety_way, first.register_way, first.secrecy) == (0, 1, 0)
    assert (first.ip_address, first.port) == ("192.168.1.201", 37777)
    assert first.status == "ON"
    assert (first.longitude, first.latitude) == (113.3612, 23.1247)
    assert first.ptz_type == 3
    assert first.extra == {"Info/DownloadSpeed": "1/2/4/8"}
    assert second.name == "停车场球机"
    assert second.status == "OFF"
    assert second.ptz_type == 1
    assert second.safety_way is None


def test_status_normalised():
    p2 = manscdp.catalog_response(parse(raw("catalog_page2_gb2312.xml")))
    p3 = manscdp.catalog_response(parse(raw("catalog_page3_gb2312.xml")))
    assert p2.items[0].status == "ON"  # ONLINE
    assert p3.items[1].status == "OFF"  # OFFLINE


def test_catalog_utf8():
    msg = parse(raw("catalog_utf8.xml"))
    assert msg.charset == "utf-8"
    names = [i.name for i in manscdp.catalog_response(msg).items]
    assert names == ["大门入口", "停车场球机"]


def test_no_declaration_uses_preferred_gb18030():
    msg = parse(raw("catalog_no_declaration_gb.xml"))
    assert msg.charset == "gb18030"
    assert manscdp.catalog_response(msg).items[0].name == "大门入口"


def test_lying_utf8_declaration_falls_back_to_gb18030():
    msg = parse(raw("catalog_decl_utf8_body_gb2312.xml"))
    assert msg.charset == "gb18030"
    assert manscdp.catalog_response(msg).items[0].name == "停车场球机"


def test_lying_gb_declaration_falls_back_to_utf8():
    msg = parse(raw("catalog_decl_gb2312_body_utf8.xml"))
    assert msg.charset == "utf-8"
    assert manscdp.catalog_response(msg).items[0].name == "停车场球机"


def test_lying_gb_declaration_ambiguous_needs_charset_hint():
    body = raw("catalog_decl_gb2312_body_utf8_ambiguous.xml")
    # Without a hint the declaration wins and the name is mojibake (sniffing is unreliable, §4.2).
    assert manscdp.catalog_response(parse(body)).items[0].name != "大门入口"
    msg = parse(body, charset_hint="UTF-8")
    assert msg.charset == "utf-8"
    assert manscdp.catalog_response(msg).items[0].name == "大门入口"


def test_charset_hint_gb_overrides_utf8_declaration():
    body = raw("catalog_decl_utf8_body_gb2312.xml")
    msg = parse(body, charset_hint="GB2312")
    assert msg.charset == "gb18030"


def test_decode_body_variants():
    assert decode_body("<a>大</a>".encode("gb2312")) == "<a>大</a>"
    assert decode_body("<a>大</a>".encode(), preferred="UTF-8") == "<a>大</a>"
    assert decode_with(b"\xef\xbb\xbf<a>\xe5\xa4\xa7</a>") == ("<a>大</a>", "utf-8")
    # undecodable in both: gb18030 with replacement, never an exception
    text, codec = decode_with(b"<a>\xff\xff\x80</a>")
    assert codec == "gb18030" and "\ufffd" in text


def test_tree_nodes_and_case_insensitive_items():
    page = manscdp.catalog_response(parse(raw("catalog_tree_nodes.xml")))
    region, group, org, odd = page.items
    assert (region.device_id, region.name) == ("440106", "天河区")
    assert group.parent_id == "44010600002000000001"
    assert org.business_group_id == "44010600002150000001"
    assert odd.device_id == "44010600001310000009"
    assert odd.name == "Lower case"
    assert odd.status == "ON"
    assert odd.ptz_type == 2
    assert odd.port is None
    assert odd.extra == {"Port": "n/a", "CertNum": "ABC123", "Info/RoomType": "1"}


def test_item_without_device_id_is_skipped_and_counted():
    page = manscdp.catalog_response(parse(raw("catalog_item_without_deviceid.xml")))
    assert [i.device_id for i in page.items] == ["44010600001310000001"]
    assert page.skipped == 1
    assert page.sum_num == 2


def test_sumnum_zero():
    page = manscdp.catalog_response(parse(raw("catalog_sumnum0.xml")))
    assert (page.sum_num, page.items, page.skipped) == (0, [], 0)


def test_catalog_notify_events():
    msg = parse(raw("catalog_notify.xml"))
    assert msg.root is Root.NOTIFY
    items = manscdp.catalog_notify(msg)
    assert [(i.device_id[-1], i.event) for i in items] == [("2", "OFF"), ("5", "ADD"), ("1", "DEL")]
    assert items[1].name == "新增通道" and items[1].status == "ON"


def test_hikvision_bare_ampersand():
    item = manscdp.catalog_response(parse(raw("hikvision_bare_amp.xml"))).items[0]
    assert item.name == "A&B 大门 & 大 R&D"


def test_hikvision_address_with_lt_is_repaired():
    item = manscdp.catalog_response(parse(raw("hikvision_address_lt.xml"))).items[0]
    assert item.address == "Floor <3 east"
    assert item.name == "大门入口"


def test_hikvision_address_broken_still_parses():
    item = manscdp.catalog_response(parse(raw("hikvision_address_broken.xml"))).items[0]
    assert item.name == "大门入口"
    assert item.status == "ON"


def test_device_info():
    info = manscdp.device_info(parse(raw("device_info.xml")))
    assert info == manscdp.DeviceInfo(
        device_id="44010600001180000001",
        sn=518842,
        result="OK",
        name="三楼录像机",
        device_type="NVR",
        manufacturer="Dahua",
        model="DH-NVR4216",
        firmware="V4.001.0000000.2",
        channel_count=16,
    )


def test_device_status():
    st = manscdp.device_status(parse(raw("device_status.xml")))
    assert st.online is True
    assert (st.result, st.status, st.encode, st.record) == ("OK", "OK", "ON", "ON")
    assert st.device_time == "2024-06-01T08:12:40"
    assert st.alarms == (AlarmStatus("44010600001340000001", "OFFDUTY"),)


def test_query_catalog():
    msg = parse(raw("query_catalog.xml"))
    assert msg.root is Root.QUERY and msg.cmd_type == "Catalog" and msg.sn == 271834


def test_wrong_decoder_refused():
    with pytest.raises(ManscdpError, match="Unexpected CmdType"):
        manscdp.device_info(parse(raw("keepalive_gb2312.xml")))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("unknown_root.xml", "Unsupported root"),
        ("missing_sn.xml", "Missing SN"),
        ("missing_cmdtype.xml", "Missing CmdType"),
        ("missing_deviceid.xml", "Missing DeviceID"),
        ("truncated.xml", "Malformed XML"),
    ],
)
def test_refusals_carry_short_reason(name, reason):
    with pytest.raises(ManscdpError) as info:
        parse(raw(name))
    assert info.value.reason == reason
    assert not isinstance(info.value, HostileXml)


def test_unsupported_root_keeps_the_senders_tag_out_of_the_reason():
    """The reason becomes a SIP reason phrase and a metric label: a sender must not choose its text."""
    body = b'<?xml version="1.0"?><Evil_' + b"x" * 200 + b"><CmdType>Keepalive</CmdType></Evil_" + b"x" * 200 + b">"
    with pytest.raises(ManscdpError) as info:
        parse(body)
    assert info.value.reason == "Unsupported root"
    assert info.value.detail is not None and info.value.detail.startswith("<Evil_x") and len(info.value.detail) <= 42


def test_comments_and_cdata_parse_and_other_declarations_are_refused():
    """Plain bodies (comments and CDATA included) take the C parser; any other `<!` declaration
    goes through defusedxml and is refused, never expanded."""
    ok = (b'<?xml version="1.0"?><Notify><!-- fw 5.4 --><CmdType>Keepalive</CmdType><SN>7</SN>'
          b"<DeviceID>34020000001320000001</DeviceID><Status><![CDATA[OK]]></Status></Notify>")
    msg = parse(ok)
    assert (msg.cmd_type, msg.sn, msg.get("Status")) == ("Keepalive", 7, "OK")
    for decl in (b"<!NOTATION n SYSTEM 'file:///etc/passwd'>", b"<!ELEMENT Notify ANY>", b"<!ATTLIST a b CDATA 'c'>"):
        bad = b'<?xml version="1.0"?>' + decl + ok.split(b"?>", 1)[1]
        with pytest.raises(ManscdpError):
            parse(bad)
    # an undeclared entity is never resolved: the bare-& repair keeps it as literal text
    odd = parse(ok.replace(b"<![CDATA[OK]]>", b"&custom;"))
    assert odd.get("Status") == "&custom;"


@pytest.mark.parametrize("name", ["entity_bomb.xml", "external_entity.xml", "doctype_only.xml"])
def test_hostile_xml_refused_without_expansion(name):
    started = time.perf_counter()
    with pytest.raises(HostileXml) as info:
        parse(raw(name))
    assert time.perf_counter() - started < 0.5  # nothing was expanded
    assert isinstance(info.value, ManscdpError)
    assert info.value.reason == "Hostile XML refused"
    assert "passwd" not in str(info.value)


def test_hostile_xml_caught_by_defusedxml_layer_too():
    # Bypass the cheap pre-check: the parser itself must refuse the DTD.
    from gateway.gb.manscdp import _parse_text

    with pytest.raises(HostileXml):
        _parse_text(raw("entity_bomb.xml").decode())


def test_invalid_sn_and_size_limits():
    body = raw("keepalive_gb2312.xml")
    with pytest.raises(ManscdpError, match="Invalid SN"):
        parse(body.replace(b"<SN>43</SN>", b"<SN>4x3</SN>"))
    with pytest.raises(ManscdpError, match="Body too large"):
        parse(body, max_size=len(body) - 1)
    with pytest.raises(ManscdpError, match="Empty body"):
        parse(b" \r\n")


def test_namespaced_root_accepted():
    body = b'<Notify xmlns="urn:x"><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>1</DeviceID></Notify>'
    msg = parse(body)
    assert msg.root is Root.NOTIFY and msg.fields["CmdType"] == "Keepalive"


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x01\x02",
        b"<",
        b"<Notify>",
        b"<?xml version='1.0' encoding='GB2312'?><Notify><SN>1</Notify>",
        b"<Notify><CmdType>K</CmdType><SN>99999999999999999999999</SN><DeviceID>1</DeviceID></Notify>",
        b"\xff\xfe<\x00N\x00",
    ],
)
def test_garbage_raises_only_package_errors(body):
    with pytest.raises(ManscdpError):
        parse(body)


def test_trailing_data_after_root_refused_not_crashing():
    body = raw("keepalive_gb2312.xml") + b"<Extra/>"
    with pytest.raises(GbError):
        parse(body)


def test_trailing_nul_padding_tolerated():
    msg = parse(raw("keepalive_gb2312.xml") + b"\x00\x00\r\n")
    assert msg.sn == 43


def test_device_status_offline_and_unknown_online():
    body = raw("device_status.xml")
    assert manscdp.device_status(parse(body.replace(b"ONLINE", b"OFFLINE"))).online is False
    assert manscdp.device_status(parse(body.replace(b"<Online>ONLINE", b"<Online>maybe"))).online is None


def test_keepalive_info_case_insensitive():
    body = raw("keepalive_info.xml").replace(b"<DeviceID>44010600001310000003</DeviceID>", b"<deviceid>X1</deviceid>")
    assert manscdp.keepalive(parse(body)).info_device_ids == ("X1", "44010600001310000004")
