"""A header scan and a response template for the requests that arrive thousands of times a
second (keepalive MESSAGE, the first REGISTER of a login), sans-IO.

`scan(data)` accepts only the plain shape devices send: ASCII head, CRLF line ends, a request line
`METHOD sip:… SIP/2.0`, each header once, in its long form, spelt as RFC 3261 spells it, as
`Name: value` with nothing odd in the value (only Content-Length and the other uncopied
headers may pad the colon with spaces, as sipp's [len] does), one Via (no comma) with a plain sent-by and plain
params, From/To as `<sip:user@host>` (From with a tag, To without), Content-Length equal to the
body. Anything else — compact forms, folding, duplicates, several Vias, display names, unknown
headers, a To tag, trailing bytes — returns None and the caller takes the full parser. So the scan
never has to be as liberal as `parse_message`; it only has to agree with it where it says yes.

Only requests answered statelessly are worth scanning: a keepalive and a REGISTER without
credentials (its challenge). A REGISTER with credentials is declined at once — its answer (200,
or 403 after the digest work) is kept in a transaction against retransmissions, which is the full
path's job — so a login costs one scan, not two.

`respond(scan, …)` builds the answer `make_response` + `TransactionLayer.respond` + `serialize`
would build for it, byte for byte (tests/gateway/sip/test_fastpath.py checks that with
generated requests): the request's Via/From/To/Call-ID/CSeq lines in their order, the top Via
stamped with received/rport (RFC 3581), the To tagged with `stateless_tag`'s value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable
from dataclasses import dataclass

from .message import reason_phrase
from .transaction import MAGIC

MAX_SIZE = 4096  # bigger datagrams are not keepalives or first REGISTERs: full parser
METHODS = frozenset({"REGISTER", "MESSAGE"})
#: The headers the scan understands (spelt as RFC 3261 does); any other name means the full parser.
_NAMES = frozenset({"Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Contact", "Expires", "User-Agent",
                    "Content-Type", "Content-Length", "Authorization"})
_COPIED = frozenset({"Via", "From", "To", "Call-ID", "CSeq"})  # what a response repeats (RFC 3261 §8.2.6)
_REQUEST_LINE = re.compile(r"(REGISTER|MESSAGE) (sip:[A-Za-z0-9.@:_\-]{1,128}) SIP/2\.0\r\n")
# the header block: the request line, then `Name:<1-8 spaces>value` lines of printable ASCII, the
# value neither empty nor ending in a blank, at most 1024 characters
_VALUE = r"[!-~](?:[ -~]{0,1022}[!-~])?"
_HEAD = re.compile(r"[!-~][ -~]{0,200}(?:\r\n[A-Za-z\-]{2,14}: {1,8}" + _VALUE + r"){1,32}\Z")
_FIELD = re.compile(r"\r\n([A-Za-z\-]{2,14}):( {1,8})(" + _VALUE + ")")
_VIA = re.compile(
    r"SIP/2\.0/(UDP|TCP) ([0-9]{1,3}(?:\.[0-9]{1,3}){3}|[a-z0-9](?:[a-z0-9.\-]{0,62}[a-z0-9])?)"
    r":([1-9][0-9]{0,4})((?:;[a-z]{1,16}(?:=[A-Za-z0-9.\-_]{1,64})?){0,8})\Z"
)
_FROM = re.compile(r"<sip:([0-9A-Za-z]{1,32})@[A-Za-z0-9.\-]{1,64}(?::[1-9][0-9]{0,4})?>;tag=([A-Za-z0-9.\-_]{1,64})\Z")
_TO = re.compile(r"<sip:[0-9A-Za-z]{1,32}@[A-Za-z0-9.\-]{1,64}(?::[1-9][0-9]{0,4})?>\Z")
_CALL_ID = re.compile(r"[A-Za-z0-9.\-_@:!%*+~]{1,128}\Z")
_CSEQ = re.compile(r"([0-9]{1,9}) (REGISTER|MESSAGE)\Z")


@dataclass(frozen=True, slots=True)
class FastAnswer:
    """A fast handler took the request: send `data` (status `status`), or nothing when `status`
    is None (a source the flood guard ignores: the endpoint then holds an unanswered transaction
    for it, as the full path does, so its retransmissions are absorbed, not judged again)."""

    status: int | None
    data: bytes = b""


@dataclass(slots=True)
class Scan:
    """What the scan found in a plain request; `lines` are the copied header lines in order.
    (Not frozen: a frozen dataclass's __init__ costs a microsecond more per request.)"""

    method: str
    uri: str
    lines: list[tuple[str, str]]
    headers: dict[str, str]
    from_user: str
    from_tag: str
    cseq: int
    via_transport: str
    via_host: str
    via_port: int
    via_params: tuple[str, ...]
    via_names: tuple[str, ...]  # each param's name, in order (all different)
    branch: str | None
    body: bytes

    def get(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def server_key(self) -> Hashable:
        """The key `transaction.server_key` gives the parsed request (RFC 3261 §17.2.3)."""
        b = self.branch
        if b and b.startswith(MAGIC) and len(b) > len(MAGIC):
            return ("s", b, self.via_host, self.via_port, self.method)
        return ("s2543", self.headers["Call-ID"], self.cseq, self.method, self.from_tag)


def scan(data: bytes) -> Scan | None:
    """The request in `data` if it has the plain shape (module docstring), else None."""
    if len(data) > MAX_SIZE:
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    if not head.isascii() or (data.startswith(b"REGISTER ") and b"\r\nAuthorization:" in head):
        return None  # a REGISTER with credentials is answered statefully (its 200): full path
    text = head.decode("ascii")
    # one C pass checks the whole block, one more cuts it into (name, padding, value)
    if _HEAD.match(text) is None:
        return None
    m = _REQUEST_LINE.match(text)
    if m is None:
        return None
    method, uri = m.groups()
    found = _FIELD.findall(text)
    headers = {name: value for name, _pad, value in found}
    if len(headers) != len(found) or not headers.keys() <= _NAMES:
        return None  # a repeated or unknown header
    # a response repeats these lines as they came: only `Name: value` keeps the template exact
    lines = [(name, value) for name, pad, value in found if name in _COPIED and pad == " "]
    if len(lines) != 5:
        return None
    body = data[end + 4 :]
    cl = headers.get("Content-Length")
    if cl is None or not cl.isdigit() or len(cl) > 5 or int(cl) != len(body):
        return None
    mf = headers.get("Max-Forwards")
    if mf is not None and not (mf.isdigit() and len(mf) <= 3 and int(mf) <= 255):
        return None
    cs = _CSEQ.match(headers["CSeq"])
    fm = _FROM.match(headers["From"])
    vm = _VIA.match(headers["Via"])
    if cs is None or cs.group(2) != method or fm is None or vm is None or _TO.match(headers["To"]) is None:
        return None
    if _CALL_ID.match(headers["Call-ID"]) is None:
        return None
    transport, host, port, ptail = vm.groups()
    params = tuple(ptail.split(";")[1:])
    names = tuple([p.partition("=")[0] for p in params])
    if len(set(names)) != len(names) or int(port) > 65535:
        return None
    branch = next((p[7:] for p in params if p.startswith("branch=")), None)
    if branch is None and "branch" in names:
        return None  # a valueless branch: let the full parser judge it
    return Scan(method, uri, lines, headers, fm.group(1), fm.group(2), int(cs.group(1)), transport, host, int(port),
                params, names, branch, body)


def stateless_tag(s: Scan) -> str:
    """`message.stateless_tag` of the same request."""
    h = s.headers
    seed = "\x00".join((h["Call-ID"], h["From"], h["CSeq"], h["Via"]))
    return hashlib.blake2s(seed.encode("ascii"), digest_size=5).hexdigest()


def _stamped_via(s: Scan, received: tuple[str, int]) -> str:
    """`Via: ` + `message.with_received` of the scanned Via, from the pieces the scan already cut
    (the scan's Via is always the plain shape `with_received` splices; tests check they agree)."""
    host, port = received
    names = s.via_names
    out = [f"rport={port}" if n == "rport" else f"received={host}" if n == "received" else p
           for n, p in zip(names, s.via_params, strict=True)]
    if "rport" not in names:
        out.append(f"rport={port}")
    if "received" not in names:
        out.append(f"received={host}")
    return f"Via: SIP/2.0/{s.via_transport} {s.via_host}:{s.via_port};" + ";".join(out)


def respond(s: Scan, status: int, received: tuple[str, int], *, to_tag: str, reason: str | None = None,
            extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The wire bytes of the answer (see the module docstring); no body."""
    out = [f"SIP/2.0 {status} {reason if reason is not None else reason_phrase(status)}"]
    for name, value in s.lines:
        if name == "Via":
            out.append(_stamped_via(s, received))
        elif name == "To":
            out.append(f"To: {value};tag={to_tag}")
        else:
            out.append(f"{name}: {value}")
    out.extend(f"{name}: {value}" for name, value in extra)
    out.append("Content-Length: 0\r\n\r\n")
    return "\r\n".join(out).encode("utf-8", "surrogateescape")
