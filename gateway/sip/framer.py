"""Message framing: UDP datagrams and the TCP byte stream (RFC 3261 §18.3, RFC 5626 §4.4.1).

Sans-IO. A datagram is one message (or a CRLF keep-alive). On a stream, a message is its
header block (up to the first blank line; LF-only tolerated, gb28181 §2.1) plus exactly
Content-Length body bytes (mandatory on TCP; absent means 0). CRLFCRLF between messages is a
keep-alive ping the caller answers with CRLF. The buffer is bounded by `max_message`; any
violation that loses the framing raises a fatal SipParseError and the caller closes the
connection. Scanning uses bytes.find and one regex over the header block, never a byte loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import MessageTooLarge, SipParseError
from .message import Request, Response, parse_message


@dataclass(frozen=True, slots=True)
class MessageBytes:
    """One complete framed message, ready for parse_message()."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A CRLFCRLF keep-alive; answer with a single CRLF (RFC 5626 §4.4.1)."""


FramerEvent = MessageBytes | Ping

_CL = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.M | re.I)


def parse_datagram(data: bytes, *, max_size: int = 65536) -> Request | Response | None:
    """Parse one UDP datagram; None for a keep-alive made only of CR/LF (RFC 5626 §3.5.1)."""
    if not data.strip(b"\r\n"):
        return None
    return parse_message(data, max_size=max_size)


def content_length(head: bytes | bytearray, *, fatal: bool = True) -> int:
    """Content-Length of a header block; 0 when absent. Raises when it is unusable."""
    found = _CL.findall(head)
    if not found:
        return 0
    if len(found) > 1:
        raise SipParseError("Multiple Content-Length", fatal=fatal)
    v = found[0]
    if not v.isdigit() or len(v) > 9:
        raise SipParseError("Bad Content-Length", fatal=fatal)
    return int(v)


class StreamFramer:
    """Split a TCP byte stream into messages; feed() any chunks, get events back."""

    __slots__ = ("_buf", "_need", "_scan", "max_message")

    def __init__(self, max_message: int = 65536) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._scan = 0  # where the search for the blank line resumes
        self._need = -1  # total size of the message being read, once its head is known

    def feed(self, data: bytes) -> list[FramerEvent]:
        buf = self._buf
        buf += data
        events: list[FramerEvent] = []
        while buf:
            if self._need < 0:
                if buf[0] in (13, 10):  # CR/LF between messages: pings, or stray line ends
                    rest = buf.lstrip(b"\r\n")
                    lead = bytes(buf[: len(buf) - len(rest)])
                    pings = lead.count(b"\r\n\r\n")
                    events.extend(Ping() for _ in range(pings))
                    if rest:
                        del buf[: len(lead)]
                    else:
                        # Keep a possible partial ping; drop anything already counted.
                        keep = lead[lead.rfind(b"\r\n\r\n") + 4 :] if pings else lead
                        buf[:] = keep[-3:]
                        break
                    self._scan = 0
                head_end = self._find_head_end()
                if head_end < 0:
                    if len(buf) > self.max_message:
                        raise MessageTooLarge("Header block too large")
                    self._scan = max(0, len(buf) - 2)
                    break
                size = head_end + content_length(memoryview(buf)[:head_end].tobytes())
                if size > self.max_message:
                    raise MessageTooLarge("Message too large")
                self._need = size
            if len(buf) < self._need:
                break
            events.append(MessageBytes(bytes(buf[: self._need])))
            del buf[: self._need]
            self._need = -1
            self._scan = 0
        return events

    def _find_head_end(self) -> int:
        """Index just past the blank line ending the header block, or -1."""
        buf = self._buf
        a = buf.find(b"\n\r\n", self._scan)
        b = buf.find(b"\n\n", self._scan)
        if a < 0:
            return -1 if b < 0 else b + 2
        if b < 0 or a < b:
            return a + 3
        return b + 2

    @property
    def buffered(self) -> int:
        return len(self._buf)
