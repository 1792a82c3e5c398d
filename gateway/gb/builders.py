"""MANSCDP encoders (our notes §4): bodies as bytes in the declared charset.

The declaration defaults to GB2312 and the bytes are gb18030-encoded (identical for
GB2312 characters; rarer ones still survive); "UTF-8" is supported. Every text value
is XML-escaped. `gateway.gb.manscdp` decodes everything written here.
"""

from collections.abc import Iterable, Mapping, Sequence

from gateway.gb.charset import encoding_for_output
from gateway.gb.items import CatalogItem, item_lines
from gateway.gb.messages import AlarmStatus, Root
from gateway.gb.xmltext import ExtraValue, check_name, element_xml, escape


def build_message(
    root: Root | str,
    cmd_type: str,
    sn: int,
    device_id: str,
    *,
    charset: str = "GB2312",
    fields: Mapping[str, ExtraValue] | None = None,
    body_lines: Sequence[str] = (),
) -> bytes:
    """Any MANSCDP document: envelope, then `fields` in order, then pre-built `body_lines`."""
    root_name = check_name(Root(root).value if isinstance(root, Root) else str(root))
    declared, codec = encoding_for_output(charset)
    lines = [
        f'<?xml version="1.0" encoding="{declared}"?>',
        f"<{root_name}>",
        f"<CmdType>{escape(cmd_type)}</CmdType>",
        f"<SN>{int(sn)}</SN>",
        f"<DeviceID>{escape(device_id)}</DeviceID>",
    ]
    for name, value in (fields or {}).items():
        element_xml(name, value, lines)
    lines.extend(body_lines)
    lines.append(f"</{root_name}>")
    lines.append("")
    return "\r\n".join(lines).encode(codec, errors="replace")


def build_query(
    cmd_type: str,
    sn: int,
    device_id: str,
    *,
    charset: str = "GB2312",
    extra: Mapping[str, ExtraValue] | None = None,
) -> bytes:
    """Query/<cmd_type> (§4.1), e.g. Catalog, DeviceInfo, RecordInfo with `extra` filters."""
    return build_message(Root.QUERY, cmd_type, sn, device_id, charset=charset, fields=extra)


def build_control(
    cmd_type: str,
    sn: int,
    device_id: str,
    *,
    charset: str = "GB2312",
    extra: Mapping[str, ExtraValue] | None = None,
) -> bytes:
    """Control/<cmd_type> (§4.8), e.g. DeviceControl with `{"PTZCmd": "A50F…"}`."""
    return build_message(Root.CONTROL, cmd_type, sn, device_id, charset=charset, fields=extra)


def build_keepalive(
    device_id: str,
    sn: int,
    status: str = "OK",
    charset: str = "GB2312",
    info_device_ids: Iterable[str] = (),
) -> bytes:
    """Notify/Keepalive (§4.3); `info_device_ids` become `<Info><DeviceID>…` entries."""
    body: list[str] = []
    ids = list(info_device_ids)
    if ids:
        body.append("<Info>")
        body.extend(f"<DeviceID>{escape(i)}</DeviceID>" for i in ids)
        body.append("</Info>")
    return build_message(
        Root.NOTIFY, "Keepalive", sn, device_id, charset=charset, fields={"Status": status}, body_lines=body
    )


def _device_list(items: Sequence[CatalogItem]) -> list[str]:
    body = [f'<DeviceList Num="{len(items)}">']
    for item in items:
        item_lines(item, body)
    body.append("</DeviceList>")
    return body


def build_catalog_response(
    device_id: str, sn: int, sum_num: int, items: Sequence[CatalogItem], charset: str = "GB2312"
) -> bytes:
    """One Response/Catalog page: `SumNum` is the total, `DeviceList Num` this page (§4.4)."""
    return build_message(
        Root.RESPONSE,
        "Catalog",
        sn,
        device_id,
        charset=charset,
        fields={"SumNum": int(sum_num)},
        body_lines=_device_list(items),
    )


def build_catalog_notify(device_id: str, sn: int, items: Sequence[CatalogItem], charset: str = "GB2312") -> bytes:
    """Notify/Catalog change notification (§4.15); set each item's `event`."""
    return build_message(
        Root.NOTIFY,
        "Catalog",
        sn,
        device_id,
        charset=charset,
        fields={"SumNum": len(items)},
        body_lines=_device_list(items),
    )


def _present(pairs: Iterable[tuple[str, object]]) -> dict[str, ExtraValue]:
    return {k: str(v) for k, v in pairs if v is not None}


def build_device_info_response(
    device_id: str,
    sn: int,
    *,
    name: str | None = None,
    manufacturer: str | None = None,
    model: str | None = None,
    firmware: str | None = None,
    channel_count: int | None = None,
    device_type: str | None = None,
    result: str = "OK",
    charset: str = "GB2312",
) -> bytes:
    """Response/DeviceInfo (§4.5)."""
    fields = _present(
        [
            ("DeviceName", name),
            ("Result", result),
            ("DeviceType", device_type),
            ("Manufacturer", manufacturer),
            ("Model", model),
            ("Firmware", firmware),
            ("Channel", channel_count),
        ]
    )
    return build_message(Root.RESPONSE, "DeviceInfo", sn, device_id, charset=charset, fields=fields)


def build_device_status_response(
    device_id: str,
    sn: int,
    *,
    online: bool = True,
    status: str = "OK",
    encode: str | None = "ON",
    record: str | None = "OFF",
    device_time: str | None = None,
    alarms: Sequence[AlarmStatus] = (),
    reason: str | None = None,
    result: str = "OK",
    charset: str = "GB2312",
) -> bytes:
    """Response/DeviceStatus (§4.6)."""
    fields = _present(
        [
            ("Result", result),
            ("Online", "ONLINE" if online else "OFFLINE"),
            ("Status", status),
            ("Reason", reason),
            ("DeviceTime", device_time),
            ("Encode", encode),
            ("Record", record),
        ]
    )
    body = [f'<Alarmstatus Num="{len(alarms)}">']
    for alarm in alarms:
        item: dict[str, ExtraValue] = {"DeviceID": alarm.device_id}
        if alarm.duty_status:
            item["DutyStatus"] = alarm.duty_status
        element_xml("Item", item, body)
    body.append("</Alarmstatus>")
    return build_message(Root.RESPONSE, "DeviceStatus", sn, device_id, charset=charset, fields=fields, body_lines=body)


def build_response_result(cmd_type: str, sn: int, device_id: str, result: str = "OK", charset: str = "GB2312") -> bytes:
    """Response/<cmd_type> carrying only `<Result>` (DeviceControl, Alarm, DeviceConfig…)."""
    return build_message(Root.RESPONSE, cmd_type, sn, device_id, charset=charset, fields={"Result": result})
