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

Only requests answered statelessly are worth scanning by default: a keepalive and a REGISTER
without credentials (its challenge). A REGISTER with credentials is declined at once unless the
caller asks for it (`credentials`): its answer (200, or 403 after the digest work) is kept in a
transaction against retransmissions (`FastAnswer.keep`, or held until a login is durable).

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
from operator import itemgetter

from .message import reason_phrase, stamped_params
from .transaction import MAGIC

MAX_SIZE = 4096  # bigger datagrams are not keepalives or first REGISTERs: full parser
METHODS = frozenset({"REGISTER", "MESSAGE"})
_HOST = r"[A-Za-z0-9.\-]{1,64}(?::[1-9][0-9]{0,4})?"
_VALUE = r"[!-~](?:[ -~]{0,1022}[!-~])?"  # printable ASCII, neither empty nor ending in a blank
# The whole header block in one C pass: the request line, then 1-32 lines, each one of the
# headers the scan understands (spelt as RFC 3261 does) in the shape it accepts. Each line sets
# one top-level group, so a repeated header leaves fewer groups set than there are lines (the
# caller counts); the structured values (Via, From, To, Call-ID, CSeq) are cut in the same pass.
# The copied headers take exactly one space after the colon (the template repeats them as
# `Name: value`); the others 1-8 (sipp's [len] pads Content-Length).
_HEAD = re.compile(
    r"(REGISTER|MESSAGE) (sip:[A-Za-z0-9.@:_\-]{1,128}) SIP/2\.0(?:\r\n(?:"
    r"Via: (SIP/2\.0/(UDP|TCP) ([0-9]{1,3}(?:\.[0-9]{1,3}){3}|[a-z0-9](?:[a-z0-9.\-]{0,62}[a-z0-9])?)"
    r":([1-9][0-9]{0,4})((?:;[a-z]{1,16}(?:=[A-Za-z0-9.\-_]{1,64})?){0,8}))"
    r"|From: (<sip:([0-9A-Za-z]{1,32})@" + _HOST + r">;tag=([A-Za-z0-9.\-_]{1,64}))"
    r"|To: (<sip:[0-9A-Za-z]{1,32}@" + _HOST + r">)"
    r"|Call-ID: ([A-Za-z0-9.\-_@:!%*+~]{1,128})"
    r"|CSeq: (([0-9]{1,9}) (REGISTER|MESSAGE))"
    r"|Content-Length: {1,8}([0-9]{1,5})"
    r"|Max-Forwards: {1,8}([0-9]{1,3})"
    r"|Content-Type: {1,8}(" + _VALUE + r")"
    r"|User-Agent: {1,8}(" + _VALUE + r")"
    r"|Contact: {1,8}(" + _VALUE + r")"
    r"|Expires: {1,8}(" + _VALUE + r")"
    r"|Authorization: {1,8}(" + _VALUE + r")"
    r")){1,32}+\Z"  # possessive: each pass is one whole line, nothing to give back
)
#: The headers the scan understands (spelt as RFC 3261 does), in the pattern's order; any other
#: name means the full parser. `_VALUES` picks each one's whole value out of the match's groups.
NAMES = ("Via", "From", "To", "Call-ID", "CSeq", "Content-Length", "Max-Forwards", "Content-Type", "User-Agent",
         "Contact", "Expires", "Authorization")
_INDEX = {name: i for i, name in enumerate(NAMES)}
_VALUES = itemgetter(2, 7, 10, 11, 12, 15, 16, 17, 18, 19, 20, 21)
_RPORT_BRANCH: tuple[str, ...] = ("rport", "branch")


@dataclass(slots=True)
class FastAnswer:
    """A fast handler took the request: send `data` (status `status`), or nothing yet when
    `status` is None — a source the flood guard ignores, or an answer that waits for something
    (a new login's durable online event; the handler sends it with `SipEndpoint.respond_raw`): the
    endpoint then holds an unanswered transaction for it, as the full path does, so its
    retransmissions are absorbed, not judged again. (Not frozen, as Scan: one is made per
    answered request.)"""

    status: int | None
    data: bytes = b""
    #: a final answer the endpoint keeps in a server transaction for Timer J (RFC 3261 §17.2.2),
    #: as the full path keeps a 200 to a REGISTER with credentials: a retransmission gets these
    #: bytes again and is not judged twice (False: answered statelessly)
    keep: bool = False


@dataclass(slots=True)
class Scan:
    """What the scan found in a plain request; `lines` are the copied header lines in order,
    `values` each of `NAMES`'s value (None: absent). (Not frozen: a frozen dataclass's __init__
    costs a microsecond more per request.)"""

    method: str
    uri: str
    lines: list[tuple[str, str]]
    values: tuple[str | None, ...]
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
        i = _INDEX.get(name)
        return None if i is None else self.values[i]

    @property
    def headers(self) -> dict[str, str]:
        """The headers present, by name (built on each call: handlers on the hot path use get())."""
        return {name: v for name, v in zip(NAMES, self.values, strict=True) if v is not None}

    @property
    def server_key(self) -> Hashable:
        """The key `transaction.server_key` gives the parsed request (RFC 3261 §17.2.3)."""
        b = self.branch
        if b and b.startswith(MAGIC) and len(b) > len(MAGIC):
            return ("s", b, self.via_host, self.via_port, self.method)
        return ("s2543", self.values[3], self.cseq, self.method, self.from_tag)


def scan(data: bytes, *, credentials: bool = False) -> Scan | None:
    """The request in `data` if it has the plain shape (module docstring), else None.
    `credentials`: scan a REGISTER with credentials too (main and the SIP workers answer logins
    and refreshes from the scan: adapters/gb_device/scanned.py)."""
    if len(data) > MAX_SIZE:
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    if not head.isascii():
        return None
    if not credentials and data.startswith(b"REGISTER ") and b"\r\nAuthorization:" in head:
        return None  # a REGISTER with credentials is not offered: full path
    text = head.decode("ascii")
    m = _HEAD.match(text)
    if m is None:
        return None
    g = m.groups()
    values = _VALUES(g)
    via, from_, to, call_id, cseq, cl, mf = values[:7]
    if via is None or from_ is None or to is None or call_id is None or cseq is None or cl is None:
        return None
    # every line set one header's group: fewer set than lines means one came twice
    if len(values) - values.count(None) != text.count("\r\n"):
        return None
    method = g[0]
    body = data[end + 4 :]
    if int(cl) != len(body) or g[14] != method or (mf is not None and int(mf) > 255):
        return None
    port = int(g[5])
    if port > 65535:
        return None
    ptail = g[6]
    params: tuple[str, ...]
    names: tuple[str, ...]
    branch: str | None
    if ptail.startswith(";rport;branch=") and ptail.count(";") == 2:  # the usual Via params, cut at once
        params, names, branch = ("rport", ptail[7:]), _RPORT_BRANCH, ptail[14:]
    else:
        params = tuple(ptail[1:].split(";")) if ptail else ()
        names = tuple([p.partition("=")[0] for p in params])
        if len(set(names)) != len(names):
            return None
        branch = None
        if "branch" in names:
            branch = params[names.index("branch")][7:] or None
            if branch is None:
                return None  # a valueless branch: let the full parser judge it
    # the copied lines in the request's order, as the full path keeps them
    lines = [("Via", via), ("From", from_), ("To", to), ("Call-ID", call_id), ("CSeq", cseq)]
    starts = m.start(3), m.start(8), m.start(11), m.start(12), m.start(13)
    if not starts[0] < starts[1] < starts[2] < starts[3] < starts[4]:
        lines = [line for _, line in sorted(zip(starts, lines, strict=True))]
    return Scan(method, g[1], lines, values, g[8], g[9], int(g[13]), g[3], g[4], port, params, names, branch, body)


def stateless_tag(s: Scan) -> str:
    """`message.stateless_tag` of the same request."""
    v = s.values
    seed = "\x00".join((v[3], v[1], v[4], v[0]))  # type: ignore[arg-type]  # all present in a Scan
    return hashlib.blake2s(seed.encode("ascii"), digest_size=5).hexdigest()


def _stamped_via(s: Scan, host: str, port: int) -> str:
    """`Via: ` + `message.with_received` of the scanned Via, from the pieces the scan already cut
    (the scan's Via is always the plain shape `with_received` splices; tests check they agree)."""
    names, params = s.via_names, s.via_params
    if names == _RPORT_BRANCH:  # what sipp and most cameras send: one format, no loop
        return f"Via: SIP/2.0/{s.via_transport} {s.via_host}:{s.via_port};rport={port};{params[1]};received={host}"
    return f"Via: SIP/2.0/{s.via_transport} {s.via_host}:{s.via_port};" + stamped_params(names, params, (host, port))


def respond(s: Scan, status: int, received: tuple[str, int], *, to_tag: str, reason: str | None = None,
            extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The wire bytes of the answer (see the module docstring); no body."""
    via = _stamped_via(s, *received)
    tail = "".join([f"{name}: {value}\r\n" for name, value in extra]) if extra else ""
    phrase = reason if reason is not None else reason_phrase(status)
    lines = s.lines
    if lines[0][0] == "Via" and lines[2][0] == "To" and lines[1][0] == "From" and lines[3][0] == "Call-ID":
        # the usual order (RFC 3261's own examples): one format
        return (f"SIP/2.0 {status} {phrase}\r\n{via}\r\nFrom: {lines[1][1]}\r\nTo: {lines[2][1]};tag={to_tag}\r\n"
                f"Call-ID: {lines[3][1]}\r\nCSeq: {lines[4][1]}\r\n{tail}Content-Length: 0\r\n\r\n"
                ).encode("utf-8", "surrogateescape")
    out = [f"SIP/2.0 {status} {phrase}"]
    for name, value in lines:
        if name == "Via":
            out.append(via)
        elif name == "To":
            out.append(f"To: {value};tag={to_tag}")
        else:
            out.append(f"{name}: {value}")
    return ("\r\n".join(out) + "\r\n" + tail + "Content-Length: 0\r\n\r\n").encode("utf-8", "surrogateescape")
