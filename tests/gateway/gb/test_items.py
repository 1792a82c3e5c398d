"""Catalog `<Item>` decoding: known fields typed, the rest kept in `extra`, hostile tag floods bounded."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

from hypothesis import given
from hypothesis import strategies as st

from gateway.gb import items
from gateway.gb.items import item_from_element


def test_known_fields_info_and_unknown_children() -> None:
    elem = fromstring(
        "<Item><DeviceID>34020000001310000001</DeviceID><name>东门</name><Status>online</Status>"
        "<Port>n/a</Port><Info><PTZType>1</PTZType><DownloadSpeed>1/2/4</DownloadSpeed></Info>"
        "<Vendor><Code>7</Code></Vendor><Odd>x</Odd></Item>")
    item = item_from_element(elem)
    assert item is not None
    assert (item.device_id, item.name, item.status, item.port, item.ptz_type) == (
        "34020000001310000001", "东门", "ON", None, 1)
    assert item.extra == {"Port": "n/a", "Info/DownloadSpeed": "1/2/4", "Vendor/Code": "7", "Odd": "x"}


def test_a_flood_of_distinct_tags_is_decoded_but_not_remembered() -> None:
    """Tags are the sender's: the per-tag classification cache stays bounded."""
    junk = "".join(f"<T{i}>v</T{i}>" for i in range(2000))
    item = item_from_element(fromstring(f"<Item><DeviceID>34020000001310000001</DeviceID>{junk}</Item>"))
    assert item is not None and len(item.extra) == 2000 and item.extra["T1999"] == "v"
    assert len(items._TAGS) <= items._TAGS_MAX


@given(st.sampled_from(["DeviceID", "deviceid", "DEVICEID", "{urn:x}DeviceID"]), st.sampled_from(["Name", "NAME"]))
def test_tag_case_and_namespace_do_not_matter(id_tag: str, name_tag: str) -> None:
    close = id_tag.split("}")[-1]
    ns = ' xmlns:n="urn:x"' if id_tag.startswith("{") else ""
    open_tag = f"n:{close}" if ns else close
    elem = fromstring(f"<Item{ns}><{open_tag}>34020000001310000009</{open_tag}><{name_tag}>a</{name_tag}></Item>")
    item = item_from_element(elem)
    assert item is not None and (item.device_id, item.name) == ("34020000001310000009", "a")
