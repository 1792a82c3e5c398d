"""A fast path for the one MANSCDP message that arrives hundreds of times a second: Keepalive.

20,000 devices at a 60 s heartbeat are 333 keepalives/s; building a hardened XML parser for each
costs more than everything else on the path. A keepalive body is tiny and flat, so it is matched
here against a strict shape — `<Notify>` with only flat text children, CmdType Keepalive, ASCII
values, no `<!` (DTD, entity, comment) and no `&` — and anything else returns None so the caller
falls back to the full, defusedxml-based `manscdp.parse`. Hostile input therefore never takes
this path.
"""

from __future__ import annotations

import re

from gateway.gb.manscdp import Keepalive

_MAX = 1024
_SHAPE = re.compile(
    rb"\A\s*(?:<\?xml[^>]{0,80}\?>)?\s*<Notify>\s*((?:<([A-Za-z]{1,32})>[ -;=-~]{0,64}</\2>\s*){3,8})</Notify>\s*\Z"
)
_CHILD = re.compile(rb"<([A-Za-z]{1,32})>([ -;=-~]{0,64})</\1>")


def quick_keepalive(body: bytes) -> Keepalive | None:
    """The Keepalive in `body` if it has the plain shape devices send, else None (use manscdp.parse)."""
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
    quick = quick_keepalive(body)
    return quick is not None and quick.device_id == sender
