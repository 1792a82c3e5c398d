"""A fast path for the one MANSCDP message that arrives hundreds of times a second: Keepalive.

20,000 devices at a 60 s heartbeat are 333 keepalives/s; building a hardened XML parser for each
costs more than everything else on the path. A keepalive body is tiny and flat, so it is matched
here against a strict shape — `<Notify>` with only flat text children, CmdType Keepalive, ASCII
values, no `<!` (DTD, entity, comment) and no `&` — and anything else returns None so the caller
falls back to the full, defusedxml-based `manscdp.parse`. Hostile input therefore never takes
this path.

Most bodies have the exact layout every device we know sends (CmdType, SN, DeviceID, an optional
Status, in that order, nothing else); `_PLAIN` reads those in one pass. What it accepts is a strict
subset of what the general shape accepts, with the same result (tests/gateway/gb/test_keepalive_fast.py).
"""

from __future__ import annotations

import re

from gateway.gb.manscdp import Keepalive

_MAX = 1024
_SHAPE = re.compile(
    rb"\A\s*(?:<\?xml[^>]{0,80}\?>)?\s*<Notify>\s*((?:<([A-Za-z]{1,32})>[ -;=-~]{0,64}</\2>\s*){3,8})</Notify>\s*\Z"
)
_CHILD = re.compile(rb"<([A-Za-z]{1,32})>([ -;=-~]{0,64})</\1>")
# the usual layout: no `&`, `<!` or `>` inside the declaration, bare values, NULs only at the end
_PLAIN = re.compile(
    rb"\s*(?:<\?xml[ -%'-;=?-~]{0,80}\?>)?\s*<Notify>\s*<CmdType>Keepalive</CmdType>\s*<SN>([0-9]{1,18})</SN>\s*"
    rb"<DeviceID>([0-9A-Za-z]{1,32})</DeviceID>\s*(?:<Status>([A-Za-z]{1,16})</Status>\s*)?</Notify>\s*\x00*\Z"
)


def quick_keepalive(body: bytes) -> Keepalive | None:
    """The Keepalive in `body` if it has the plain shape devices send, else None (use manscdp.parse)."""
    m = _PLAIN.match(body) if len(body) <= _MAX else None
    if m is not None:
        sn, device_id, status = m.groups()
        return Keepalive(device_id.decode("ascii"), int(sn), status.decode("ascii").upper() if status else None, ())
    return _general(body)


def _general(body: bytes) -> Keepalive | None:
    """quick_keepalive for any flat layout (children in any order, padded values, other children)."""
    if len(body) > _MAX or b"<!" in body or b"&" in body:
        return None
    m = _SHAPE.match(body.rstrip(b"\x00"))
    if m is None:
        return None
    fields: dict[bytes, bytes] = {}
    for name, value in _CHILD.findall(m.group(1)):
        key = name.lower()
        if key in fields:
            return None  # repeated element: let the full parser decide
        fields[key] = value.strip()
    if fields.get(b"cmdtype") != b"Keepalive":
        return None
    sn, device_id = fields.get(b"sn", b""), fields.get(b"deviceid", b"")
    if not sn.isdigit() or not device_id:
        return None
    status = fields.get(b"status")
    return Keepalive(device_id.decode("ascii"), int(sn), status.decode("ascii").upper() if status else None, ())


def is_plain_keepalive(content_type: str | None, body: bytes, sender: str) -> bool:
    """A MANSCDP-typed body with the plain Keepalive shape naming `sender` (the From user): what
    the SIP fast paths (one process and SIP workers) may answer without the full parse."""
    if content_type is None or "manscdp" not in content_type.lower():
        return False
    m = _PLAIN.match(body) if len(body) <= _MAX else None
    if m is not None:
        return m.group(2) == sender.encode("ascii", "replace")
    quick = _general(body)
    return quick is not None and quick.device_id == sender
