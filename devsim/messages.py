"""Wire helpers for the device swarm: pre-formatted requests, a fast response peek, digest, paging.

The swarm sends thousands of requests per second from one Python process, so requests are
built from string templates (one `%` format, one encode) rather than through `Headers`, and
responses to our own requests are matched by peeking at the status code and the top Via
branch with `bytes.find` — the full parser (`gateway.sip.message.parse_message`) is only used
for the rare responses that carry something we need (401 challenges) and for requests the
gateway sends us. Everything here is pure: no sockets, no clock.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.gb.items import CatalogItem
from gateway.gb.manscdp import build_catalog_response

_gw_authorization: Callable[..., str] | None
try:  # the SIP engineers' digest client; a private copy below until it lands
    from gateway.sip.digest import authorization as _gw_authorization
except ImportError:  # pragma: no cover - depends on what has landed
    _gw_authorization = None

CATALOG_PAGE = 4  # items per Response/Catalog packet, as real NVRs do to stay under the MTU (§4.4)
USER_AGENT = "gbgate-sim/1.0"

_counter = itertools.count(1)
_RUN = secrets.token_hex(3)


def new_branch() -> str:
    """Unique per transaction, RFC 3261 magic cookie first; a counter is cheaper than randomness."""
    return f"z9hG4bK{_RUN}{next(_counter):x}"


def new_call_id(host: str) -> str:
    return f"{_RUN}{next(_counter):x}{os.getpid():x}@{host}"


def new_tag() -> str:
    return f"{secrets.randbits(31):d}"  # decimal tags, as Hikvision writes them (§2.2)


_REGISTER = (
    "REGISTER sip:%(server_id)s@%(domain)s SIP/2.0\r\n"
    "Via: SIP/2.0/%(transport)s %(lhost)s:%(lport)d;rport;branch=%(branch)s\r\n"
    "From: <sip:%(dev)s@%(domain)s>;tag=%(tag)s\r\n"
    "To: <sip:%(dev)s@%(domain)s>\r\n"
    "Call-ID: %(call_id)s\r\n"
    "CSeq: %(cseq)d REGISTER\r\n"
    "Contact: <sip:%(dev)s@%(lhost)s:%(lport)d>\r\n"
    "%(auth)s"
    "Max-Forwards: 70\r\n"
    "User-Agent: " + USER_AGENT + "\r\n"
    "Expires: %(expires)d\r\n"
    "Content-Length: 0\r\n\r\n"
)

_MESSAGE = (
    "MESSAGE sip:%(server_id)s@%(domain)s SIP/2.0\r\n"
    "Via: SIP/2.0/%(transport)s %(lhost)s:%(lport)d;rport;branch=%(branch)s\r\n"
    "From: <sip:%(dev)s@%(domain)s>;tag=%(tag)s\r\n"
    "To: <sip:%(server_id)s@%(domain)s>\r\n"
    "Call-ID: %(call_id)s\r\n"
    "CSeq: %(cseq)d MESSAGE\r\n"
    "Content-Type: Application/MANSCDP+xml\r\n"
    "Max-Forwards: 70\r\n"
    "User-Agent: " + USER_AGENT + "\r\n"
    "Content-Length: %(length)d\r\n\r\n"
)

# Byte-for-byte what gateway.gb.manscdp.build_keepalive writes (a test checks it parses the same);
# formatted directly because the keepalive is the swarm's hot path.
_KEEPALIVE_BODY = (
    '<?xml version="1.0" encoding="%s"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
    "<SN>%d</SN>\r\n<DeviceID>%s</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
)


@dataclass(frozen=True, slots=True)
class Local:
    """Where the swarm sends from: what goes in Via and Contact."""

    transport: str  # "UDP" | "TCP"
    host: str
    port: int
    server_id: str
    domain: str


def register_request(
    local: Local, dev: str, *, tag: str, call_id: str, cseq: int, expires: int, branch: str,
    authorization: str | None = None,
) -> bytes:
    """REGISTER as a Hikvision-style IPC sends it (§3.2); `authorization` is the header value."""
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return (_REGISTER % {
        "server_id": local.server_id, "domain": local.domain, "transport": local.transport,
        "lhost": local.host, "lport": local.port, "branch": branch, "dev": dev, "tag": tag,
        "call_id": call_id, "cseq": cseq, "expires": expires, "auth": auth,
    }).encode()


def message_request(
    local: Local, dev: str, body: bytes, *, tag: str, call_id: str, cseq: int, branch: str,
) -> bytes:
    """MESSAGE device → platform with a MANSCDP body (§4.1: new Call-ID for each)."""
    head = _MESSAGE % {
        "server_id": local.server_id, "domain": local.domain, "transport": local.transport,
        "lhost": local.host, "lport": local.port, "branch": branch, "dev": dev, "tag": tag,
        "call_id": call_id, "cseq": cseq, "length": len(body),
    }
    return head.encode() + body


def keepalive_body(dev: str, sn: int, charset: str = "GB2312") -> bytes:
    """Notify/Keepalive (§4.3)."""
    return (_KEEPALIVE_BODY % (charset, sn, dev)).encode()


def peek_response(data: bytes) -> tuple[int, str] | None:
    """(status, top-Via branch) of a response, or None if `data` is not a response we can match.

    Our Via is the only one, so the first `branch=` in the message is ours.
    """
    if not data.startswith(b"SIP/2.0 ") or len(data) < 12:
        return None
    code = data[8:11]
    if not code.isdigit():
        return None
    p = data.find(b"branch=", 12)
    if p < 0:
        return None
    p += 7
    end = p
    n = len(data)
    while end < n and data[end] not in b";,\r\n \t":
        end += 1
    return int(code), data[p:end].decode("ascii", "replace")


# --------------------------------------------------------------------------- digest (client side)

def _h(alg: str, text: str) -> str:
    fn = hashlib.sha256 if alg.upper().replace("-SESS", "") in ("SHA-256", "SHA256") else hashlib.md5
    return fn(text.encode("utf-8")).hexdigest()


def _challenge_params(value: str) -> dict[str, str]:
    """Parameters of `Digest realm="..", nonce="..", qop="auth", ...` (quote-aware split)."""
    text = value.strip()
    if text[:6].lower() == "digest":
        text = text[6:]
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " ,\t":
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            break
        key = text[i:eq].strip().lower()
        j = eq + 1
        if j < n and text[j] == '"':
            end = text.find('"', j + 1)
            end = n if end < 0 else end
            out[key] = text[j + 1:end]
            i = end + 1
        else:
            end = text.find(",", j)
            end = n if end < 0 else end
            out[key] = text[j:end].strip()
            i = end + 1
    return out


def _private_authorization(challenge: str, *, method: str, uri: str, username: str, password: str) -> str:
    """RFC 2617/7616 client answer (§3.3 formulas); qop=auth when offered, nc=00000001."""
    p = _challenge_params(challenge)
    alg = p.get("algorithm", "MD5")
    realm, nonce = p.get("realm", ""), p.get("nonce", "")
    ha1 = _h(alg, f"{username}:{realm}:{password}")
    ha2 = _h(alg, f"{method}:{uri}")
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        nc, cnonce = "00000001", secrets.token_hex(8)
        resp = _h(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        parts += [f'response="{resp}"', f"algorithm={alg}", "qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        parts += [f'response="{_h(alg, f"{ha1}:{nonce}:{ha2}")}"', f"algorithm={alg}"]
    if "opaque" in p:
        parts.append(f'opaque="{p["opaque"]}"')
    return "Digest " + ", ".join(parts)


def authorization(challenge: str, *, method: str, uri: str, username: str, password: str) -> str:
    """The Authorization header value answering a WWW-Authenticate challenge."""
    if _gw_authorization is not None:
        return str(_gw_authorization(challenge, method=method, uri=uri, username=username, password=password))
    return _private_authorization(challenge, method=method, uri=uri, username=username, password=password)


# --------------------------------------------------------------------------- catalog paging

def channel_items(device_id: str, channels: Iterable[Any], *, manufacturer: str, model: str,
                  civil_code: str) -> list[CatalogItem]:
    """CatalogItems for a device's channels; accepts CatalogItem, objects with id/name, or pairs."""
    out: list[CatalogItem] = []
    for ch in channels:
        if isinstance(ch, CatalogItem):
            out.append(ch)
            continue
        if isinstance(ch, tuple | list):
            cid, name = str(ch[0]), str(ch[1])
        else:
            cid = str(getattr(ch, "id", None) or ch.device_id)
            name = str(getattr(ch, "name", cid))
        out.append(CatalogItem(
            device_id=cid, name=name, manufacturer=manufacturer, model=model, owner="0",
            civil_code=civil_code, address="sim", parental=0, parent_id=device_id, safety_way=0,
            register_way=1, secrecy=0, status="ON", ptz_type=3,
        ))
    return out


def catalog_pages(device_id: str, sn: int, items: Sequence[CatalogItem], *, page_size: int = CATALOG_PAGE,
                  charset: str = "GB2312") -> list[bytes]:
    """Response/Catalog bodies of at most `page_size` items each, every one with SumNum = total.

    No channels is one page with SumNum 0 (the gateway then clears the device's channels, §4.4).
    """
    total = len(items)
    if total == 0:
        return [build_catalog_response(device_id, sn, 0, [], charset)]
    return [build_catalog_response(device_id, sn, total, items[i:i + page_size], charset)
            for i in range(0, total, page_size)]


def channel_id(device_id: str, index: int) -> str:
    """A camera-channel ID (type 131) derived from the device ID: same centre, serial × 32 + index.

    A platform-sized device (more than 32 channels) numbers the rest from 5,000,000 up, 100,000
    per device serial (mod 50), so a 5,000-channel platform has 5,000 distinct IDs."""
    if not (len(device_id) == 20 and device_id.isdigit()):
        return f"{device_id[:10]}131{index % 10_000_000:07d}"
    serial = int(device_id[13:])
    base = serial * 32 + index if index < 32 else 5_000_000 + (serial % 50) * 100_000 + index % 100_000
    return f"{device_id[:10]}131{base % 10_000_000:07d}"
