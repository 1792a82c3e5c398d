"""Catalog items (目录 `<Item>`, our notes §4.4): one decoder and one writer.

Known fields become typed attributes; every other child (and every `Info` child we do
not model) is kept in `extra` under its path ("Info/DownloadSpeed") so a catalog can
be forwarded upward (cascade, §7.3) without losing anything. A known field whose text
cannot be converted (e.g. `<Port>n/a</Port>`) is also kept raw in `extra`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element

from gateway.gb.xmltext import ExtraValue, element_xml, flatten, local_name, text_of, unflatten

_ON = frozenset({"ON", "ONLINE", "OK", "TRUE", "1"})
_OFF = frozenset({"OFF", "OFFLINE", "ERROR", "FALSE", "0"})


def normalise_status(raw: str | None) -> str | None:
    """`ON`/`OFF` from the variants seen in the wild (ONLINE, OFFLINE, OK…); None if unknown."""
    if not raw:
        return None
    up = raw.strip().upper()
    if up in _ON:
        return "ON"
    if up in _OFF:
        return "OFF"
    return None


def _int(raw: str) -> int | None:
    text = raw.strip()
    body = text[1:] if text[:1] in "+-" else text
    if body.isascii() and body.isdigit():
        return int(text)
    return None


def _float(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _upper(raw: str) -> str | None:
    return raw.strip().upper() or None


def _str(raw: str) -> str | None:
    return raw or None


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogItem:
    """One catalog node: region, group, device or channel (§4.4 item fields)."""

    device_id: str
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    civil_code: str | None = None
    block: str | None = None
    address: str | None = None
    parental: int | None = None
    parent_id: str | None = None
    safety_way: int | None = None
    register_way: int | None = None
    secrecy: int | None = None
    ip_address: str | None = None
    port: int | None = None
    status: str | None = None  # normalised "ON" / "OFF"
    longitude: float | None = None
    latitude: float | None = None
    ptz_type: int | None = None  # Info/PTZType
    event: str | None = None  # catalog notifications: ON/OFF/VLOST/DEFECT/ADD/DEL/UPDATE
    business_group_id: str | None = None  # Info/BusinessGroupID (also accepted outside Info)
    extra: dict[str, str] = field(default_factory=dict)


# Element name → (attribute, converter). Order is the order we write (§4.4 example).
_DIRECT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DeviceID": ("device_id", _str),
    "Event": ("event", _upper),
    "Name": ("name", _str),
    "Manufacturer": ("manufacturer", _str),
    "Model": ("model", _str),
    "Owner": ("owner", _str),
    "CivilCode": ("civil_code", _str),
    "Block": ("block", _str),
    "Address": ("address", _str),
    "Parental": ("parental", _int),
    "ParentID": ("parent_id", _str),
    "SafetyWay": ("safety_way", _int),
    "RegisterWay": ("register_way", _int),
    "Secrecy": ("secrecy", _int),
    "IPAddress": ("ip_address", _str),
    "Port": ("port", _int),
    "Status": ("status", normalise_status),
    "Longitude": ("longitude", _float),
    "Latitude": ("latitude", _float),
}
_INFO: dict[str, tuple[str, Callable[[str], Any]]] = {
    "PTZType": ("ptz_type", _int),
    "BusinessGroupID": ("business_group_id", _str),
}
_DIRECT_LOWER = {k.lower(): (k, v) for k, v in _DIRECT.items()}
_INFO_LOWER = {k.lower(): (k, v) for k, v in _INFO.items()}


def _take(
    values: dict[str, Any], extra: dict[str, str], key: str, raw: str, spec: tuple[str, Callable[[str], Any]]
) -> None:
    attr, convert = spec
    if attr in values:
        return  # first occurrence wins
    value = convert(raw) if raw else None
    if value is None and raw:
        extra.setdefault(key, raw)  # unconvertible: keep the text
    values[attr] = value


_Spec = tuple[str, Callable[[str], Any]]
_Known = tuple[str, _Spec]  # (canonical tag, (attribute, converter))
#: Raw tag → (local name, lower-case local name, known direct/Info field). Tags repeat on every item
#: of a catalog, so each is classified once; bounded, because the tags are the sender's.
_TAGS: dict[object, tuple[str, str, _Known | None]] = {}
_TAGS_MAX = 512


def _classify(tag: object) -> tuple[str, str, _Known | None]:
    cached = _TAGS.get(tag)
    if cached is not None:
        return cached
    local = local_name(tag)
    low = local.lower()
    found = (local, low, _DIRECT_LOWER.get(low) or _INFO_LOWER.get(low))
    if len(_TAGS) < _TAGS_MAX:
        _TAGS[tag] = found
    return found


def item_from_element(elem: Element) -> CatalogItem | None:
    """Decode one `<Item>`; None when it has no DeviceID (such items are skipped, §4.4)."""
    values: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for child in elem:
        tag, low, known = _classify(child.tag)
        nested = len(child)
        if low == "info" and nested:
            for sub in child:
                subtag, sublow, _ = _classify(sub.tag)
                info = _INFO_LOWER.get(sublow)
                if info and not len(sub):
                    _take(values, extra, f"Info/{info[0]}", text_of(sub), info[1])
                elif len(sub):
                    flatten(sub, f"Info/{subtag}/", extra)
                else:
                    extra.setdefault(f"Info/{subtag}", text_of(sub))
            continue
        if known and not nested:
            _take(values, extra, known[0], text_of(child), known[1])
        elif nested:
            flatten(child, tag + "/", extra)
        else:
            extra.setdefault(tag, text_of(child))
    if not values.get("device_id"):
        return None
    return CatalogItem(**values, extra=extra)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def item_lines(item: CatalogItem, out: list[str]) -> None:
    """Append the `<Item>…</Item>` lines for `item` to `out` (text escaped)."""
    out.append("<Item>")
    for name, (attr, _conv) in _DIRECT.items():
        value = getattr(item, attr)
        if value is not None and name not in item.extra:
            element_xml(name, _fmt(value), out)
    info: dict[str, ExtraValue] = {}
    for name, (attr, _conv) in _INFO.items():
        value = getattr(item, attr)
        if value is not None and f"Info/{name}" not in item.extra:
            info[name] = _fmt(value)
    tree = unflatten(item.extra)
    extra_info = tree.pop("Info", None)
    for name, value in tree.items():
        element_xml(name, value, out)
    if isinstance(extra_info, dict):
        info.update(extra_info)
    elif isinstance(extra_info, str) and extra_info and not info:
        element_xml("Info", extra_info, out)
    if info:
        element_xml("Info", info, out)
    out.append("</Item>")
