"""Small helpers for reading and writing MANSCDP XML text.

Element-name case is unreliable in the wild (WVP itself sends `<info>`), so optional
elements are looked up case-insensitively (our notes §4.2). Writers escape every text
value and drop characters XML 1.0 cannot carry.
"""

import re
from collections.abc import Iterator, Mapping
from typing import TypeAlias
from xml.etree.ElementTree import Element

from gateway.gb.errors import GbError

#: Nested element content for writers: text, a number, or child elements in order.
ExtraValue: TypeAlias = "str | int | Mapping[str, ExtraValue]"

_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")


def local_name(tag: object) -> str:
    """Tag without any `{namespace}` prefix."""
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]


def children(elem: Element, name: str) -> Iterator[Element]:
    """Direct children called `name`, compared case-insensitively."""
    want = name.lower()
    for child in elem:
        if local_name(child.tag).lower() == want:
            yield child


def find_child(elem: Element, name: str) -> Element | None:
    """First direct child called `name` (case-insensitive)."""
    return next(children(elem, name), None)


def text_of(elem: Element | None) -> str:
    """Element text, stripped (values arrive padded, e.g. `<Secrecy> 0 </Secrecy>`)."""
    if elem is None or elem.text is None:
        return ""
    return elem.text.strip()


def child_text(elem: Element, name: str) -> str | None:
    """Stripped text of the first child `name`, None if absent or empty."""
    value = text_of(find_child(elem, name))
    return value or None


def escape(text: str) -> str:
    """Escape for element content; drop characters XML 1.0 forbids."""
    text = _ILLEGAL.sub("", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def check_name(name: str) -> str:
    """Refuse element names that would produce a broken document (a local bug)."""
    if not _NAME.match(name):
        raise GbError(f"invalid XML element name {name!r}")
    return name


def element_xml(name: str, value: ExtraValue, out: list[str]) -> None:
    """Append `<name>value</name>` (nested for mappings) to `out`, one element per line."""
    check_name(name)
    if isinstance(value, Mapping):
        out.append(f"<{name}>")
        for key, sub in value.items():
            element_xml(key, sub, out)
        out.append(f"</{name}>")
    else:
        out.append(f"<{name}>{escape(str(value))}</{name}>")


def flatten(elem: Element, prefix: str, out: dict[str, str]) -> None:
    """Record the text of `elem`'s descendants under `prefix/Tag[/Sub]` paths (first wins)."""
    for child in elem:
        path = f"{prefix}{local_name(child.tag)}"
        if len(child):
            flatten(child, path + "/", out)
        else:
            out.setdefault(path, text_of(child))


def unflatten(paths: Mapping[str, str]) -> dict[str, ExtraValue]:
    """Inverse of `flatten`: `{"Info/PTZType": "1"}` → `{"Info": {"PTZType": "1"}}`."""
    tree: dict[str, ExtraValue] = {}
    for path, value in paths.items():
        node = tree
        parts = path.split("/")
        for part in parts[:-1]:
            sub = node.get(part)
            if not isinstance(sub, dict):
                sub = {}
                node[part] = sub
            node = sub
        node.setdefault(parts[-1], value)
    return tree
