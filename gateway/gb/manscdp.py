"""MANSCDP XML codec (our notes §4): parse untrusted bodies, decode typed messages, build bodies.

Parsing is hardened: any DTD, entity declaration or external entity raises HostileXml
before anything is expanded (defusedxml with `forbid_dtd`). Hikvision quirks from
§4.2 are repaired: bare `&` is escaped, and a stray `<` inside `<Address>` is escaped
(falling back to dropping the Address lines, as WVP does).

The encoders live in `gateway.gb.builders` and the message types in `gateway.gb.messages`;
both are re-exported here so callers need only this module. Every decoder reads back
what the matching encoder wrote.
"""

import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError, XMLParser

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from gateway.gb.builders import (
    build_catalog_notify,
    build_catalog_response,
    build_control,
    build_device_info_response,
    build_device_status_response,
    build_keepalive,
    build_message,
    build_query,
    build_response_result,
)
from gateway.gb.charset import decode_body, decode_with
from gateway.gb.errors import HostileXml, ManscdpError
from gateway.gb.items import CatalogItem, item_from_element, normalise_status
from gateway.gb.messages import AlarmStatus, CatalogPage, DeviceInfo, DeviceStatus, Keepalive, Root
from gateway.gb.xmltext import child_text, children, find_child, local_name, text_of

__all__ = [
    "AlarmStatus",
    "CatalogItem",
    "CatalogPage",
    "DeviceInfo",
    "DeviceStatus",
    "Keepalive",
    "Manscdp",
    "Root",
    "build_catalog_notify",
    "build_catalog_response",
    "build_control",
    "build_device_info_response",
    "build_device_status_response",
    "build_keepalive",
    "build_message",
    "build_query",
    "build_response_result",
    "catalog_notify",
    "catalog_response",
    "decode_body",
    "device_info",
    "device_status",
    "keepalive",
    "parse",
]

MAX_BODY = 65536

_BARE_AMP = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)")
_HOSTILE = re.compile(r"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
#: Any markup declaration other than a comment or CDATA: such a body goes through defusedxml.
_DECLARATION = re.compile(r"<!(?!--|\[CDATA\[)")
_DECL_TEXT = re.compile(r"\A\s*<\?xml[^>]*\?>")
_ADDRESS = re.compile(r"(<Address\b[^>]*>)(.*?)(</Address\s*>)", re.IGNORECASE | re.DOTALL)


_ROOTS = {r.value.lower(): r for r in Root}


@dataclass(slots=True)
class Manscdp:
    """A parsed MANSCDP body: envelope fields plus direct-child text.

    `fields` maps each direct child's tag (as written, first occurrence) to its stripped
    text; `get()` looks names up case-insensitively. `element` is the root for typed
    decoders; `charset` is the codec the body was decoded with.
    """

    root: Root
    cmd_type: str
    sn: int
    device_id: str
    fields: dict[str, str]
    element: Element
    charset: str
    _lower: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lower: dict[str, str] = {}
        for key, value in self.fields.items():
            lower.setdefault(key.lower(), value)
        self._lower = lower

    def get(self, name: str, default: str | None = None) -> str | None:
        """Direct child text by case-insensitive name; `default` if absent."""
        return self._lower.get(name.lower(), default)

    def find(self, name: str) -> Element | None:
        """First direct child element by case-insensitive name."""
        return find_child(self.element, name)


def _repair_address(match: re.Match[str]) -> str:
    inner = match.group(2).replace("<", "&lt;").replace(">", "&gt;")
    return match.group(1) + inner + match.group(3)


def _parse_text(text: str) -> Element:
    """A body with no markup declaration cannot declare or reference a custom entity (undefined
    entities are a ParseError), so it is parsed by the C expat tree builder — about four times
    faster than defusedxml's pure-Python one on a catalog page. Anything with `<!` other than a
    comment or CDATA takes defusedxml, which refuses DTDs and entities."""
    if _DECLARATION.search(text) is None:
        parser = XMLParser()
        parser.feed(text)
        return parser.close()
    try:
        return SafeET.fromstring(text, forbid_dtd=True)  # type: ignore[no-any-return]
    except DefusedXmlException as exc:
        raise HostileXml(type(exc).__name__) from None


def _parse_tree(text: str) -> Element:
    """Parse, retrying the Hikvision `<Address>` repairs of §4.2 on failure."""
    try:
        return _parse_text(text)
    except ParseError as first:
        error = first
    repaired = _ADDRESS.sub(_repair_address, text)
    if repaired != text:
        try:
            return _parse_text(repaired)
        except ParseError:
            pass
    dropped = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().lower().startswith("<address"))
    if dropped != text:
        try:
            return _parse_text(dropped)
        except ParseError:
            pass
    raise ManscdpError("Malformed XML", str(error)) from None


def parse(raw: bytes, *, charset_hint: str | None = None, max_size: int = MAX_BODY) -> Manscdp:
    """Parse one MANSCDP body.

    `charset_hint` is the per-device charset override (tried before the declaration).
    Raises HostileXml for DTDs/entities, ManscdpError for anything else unacceptable.
    """
    if len(raw) > max_size:
        raise ManscdpError("Body too large", f"{len(raw)} > {max_size} bytes")
    raw = raw.rstrip(b"\x00 \t\r\n")  # some firmwares pad bodies with NULs
    if not raw.strip():
        raise ManscdpError("Empty body")
    if charset_hint:
        text, used = decode_with(raw, charset_hint, override=True)
    else:
        text, used = decode_with(raw)
    if _HOSTILE.search(text):
        raise HostileXml("DTD or entity declaration")
    text = _DECL_TEXT.sub("", text, count=1)
    text = _BARE_AMP.sub("&amp;", text)
    elem = _parse_tree(text)
    tag = local_name(elem.tag)
    root = _ROOTS.get(tag.lower())
    if root is None:
        # the tag is the sender's: detail only, so reason phrases and metric labels stay a fixed set
        raise ManscdpError("Unsupported root", f"<{tag[:40]}>")
    fields: dict[str, str] = {}
    for child in elem:
        fields.setdefault(local_name(child.tag), text_of(child))
    cmd_type = child_text(elem, "CmdType")
    if not cmd_type:
        raise ManscdpError("Missing CmdType")
    sn_text = child_text(elem, "SN")
    if sn_text is None:
        raise ManscdpError("Missing SN")
    if not (sn_text.isascii() and sn_text.isdigit()) or len(sn_text) > 19:
        raise ManscdpError("Invalid SN", sn_text[:40])
    device_id = child_text(elem, "DeviceID")
    if not device_id:
        raise ManscdpError("Missing DeviceID")
    return Manscdp(
        root=root,
        cmd_type=cmd_type,
        sn=int(sn_text),
        device_id=device_id,
        fields=fields,
        element=elem,
        charset=used,
    )


# --------------------------------------------------------------------------- typed decoders


def _expect(msg: Manscdp, cmd_type: str) -> None:
    if msg.cmd_type.lower() != cmd_type.lower():
        raise ManscdpError("Unexpected CmdType", f"{msg.cmd_type!r}, expected {cmd_type}")


def _upper(value: str | None) -> str | None:
    return value.upper() if value else None


def _opt_int(msg: Manscdp, name: str) -> int | None:
    value = msg.get(name)
    if value and value.isascii() and value.isdigit():
        return int(value)
    return None


def keepalive(msg: Manscdp) -> Keepalive:
    """Decode Notify/Keepalive."""
    _expect(msg, "Keepalive")
    ids: list[str] = []
    for info in children(msg.element, "Info"):
        ids.extend(v for e in info.iter() if local_name(e.tag).lower() == "deviceid" and (v := text_of(e)))
    return Keepalive(msg.device_id, msg.sn, _upper(msg.get("Status")), tuple(ids))


def _items(msg: Manscdp) -> tuple[list[CatalogItem], int]:
    items: list[CatalogItem] = []
    skipped = 0
    for dev_list in children(msg.element, "DeviceList"):
        for node in children(dev_list, "Item"):
            item = item_from_element(node)
            if item is None:
                skipped += 1
            else:
                items.append(item)
    return items, skipped


def catalog_response(msg: Manscdp) -> CatalogPage:
    """Decode one Catalog page (Response, or a pushed Notify). Missing SumNum → items in this page."""
    _expect(msg, "Catalog")
    items, skipped = _items(msg)
    raw_sum = msg.get("SumNum")
    if raw_sum is None or raw_sum == "":
        sum_num = len(items) + skipped
    elif raw_sum.isascii() and raw_sum.isdigit():
        sum_num = int(raw_sum)
    else:
        raise ManscdpError("Invalid SumNum", raw_sum[:40])
    return CatalogPage(msg.device_id, msg.sn, sum_num, items, skipped)


def catalog_notify(msg: Manscdp) -> list[CatalogItem]:
    """Items of a Notify/Catalog change notification (§4.15), each with its `event`."""
    _expect(msg, "Catalog")
    return _items(msg)[0]


def device_info(msg: Manscdp) -> DeviceInfo:
    """Decode Response/DeviceInfo."""
    _expect(msg, "DeviceInfo")
    channels = _opt_int(msg, "Channel")
    if channels is None:
        channels = _opt_int(msg, "MaxCamera")
    return DeviceInfo(
        device_id=msg.device_id,
        sn=msg.sn,
        result=_upper(msg.get("Result")),
        name=msg.get("DeviceName") or msg.get("Name") or None,
        device_type=msg.get("DeviceType") or None,
        manufacturer=msg.get("Manufacturer") or None,
        model=msg.get("Model") or None,
        firmware=msg.get("Firmware") or None,
        channel_count=channels,
    )


def device_status(msg: Manscdp) -> DeviceStatus:
    """Decode Response/DeviceStatus (note the lower-case `s` of `Alarmstatus`, matched either way)."""
    _expect(msg, "DeviceStatus")
    state = normalise_status(msg.get("Online"))  # ONLINE/OFFLINE, also ON/OFF seen
    online = None if state is None else state == "ON"
    alarms: list[AlarmStatus] = []
    for block in children(msg.element, "Alarmstatus"):
        for node in children(block, "Item"):
            dev = child_text(node, "DeviceID")
            if dev:
                alarms.append(AlarmStatus(dev, _upper(child_text(node, "DutyStatus"))))
    return DeviceStatus(
        device_id=msg.device_id,
        sn=msg.sn,
        result=_upper(msg.get("Result")),
        online=online,
        status=_upper(msg.get("Status")),
        encode=_upper(msg.get("Encode")),
        record=_upper(msg.get("Record")),
        device_time=msg.get("DeviceTime") or None,
        alarms=tuple(alarms),
        reason=msg.get("Reason") or None,
    )
