"""Building the requests the gateway sends as a UAC (MESSAGE queries, INVITE, BYE).

One place knows our From/Via/Contact conventions (gb28181.md §2.2): a random tag and Call-ID
per out-of-dialog request, a global CSeq counter (as WVP), Via with rport.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from gateway.sip.message import Headers, Request, new_branch, new_call_id, new_tag


@dataclass(slots=True)
class LocalIdentity:
    """Who we are on the wire."""

    sip_id: str
    domain: str
    host: str
    port: int
    user_agent: str

    @property
    def from_uri(self) -> str:
        return f"sip:{self.sip_id}@{self.domain}"

    @property
    def contact(self) -> str:
        return f"<sip:{self.sip_id}@{self.host}:{self.port}>"


class RequestFactory:
    """Makes out-of-dialog and in-dialog requests from our identity."""

    def __init__(self, me: LocalIdentity) -> None:
        self.me = me
        self._cseq = itertools.count(1)

    def next_cseq(self) -> int:
        return next(self._cseq)

    def request(
        self,
        method: str,
        target_id: str,
        host: str,
        port: int,
        *,
        transport: str = "udp",
        body: bytes = b"",
        content_type: str | None = None,
        call_id: str | None = None,
        from_tag: str | None = None,
        to_tag: str | None = None,
        cseq: int | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> Request:
        uri = f"sip:{target_id}@{host}:{port}"
        headers = Headers()
        headers.add("Via", f"SIP/2.0/{transport.upper()} {self.me.host}:{self.me.port};rport;branch={new_branch()}")
        headers.add("From", f"<{self.me.from_uri}>;tag={from_tag or new_tag()}")
        headers.add("To", f"<{uri}>" + (f";tag={to_tag}" if to_tag else ""))
        headers.add("Call-ID", call_id or new_call_id(self.me.host))
        headers.add("CSeq", f"{cseq if cseq is not None else self.next_cseq()} {method}")
        headers.add("Max-Forwards", "70")
        if method in ("INVITE", "SUBSCRIBE", "REGISTER"):
            headers.add("Contact", self.me.contact)
        headers.add("User-Agent", self.me.user_agent)
        for name, value in extra or ():
            headers.add(name, value)
        if content_type:
            headers.add("Content-Type", content_type)
        headers.add("Content-Length", str(len(body)))
        return Request(method=method, uri=uri, headers=headers, body=body)

    def manscdp(self, target_id: str, host: str, port: int, body: bytes, *, transport: str = "udp") -> Request:
        return self.request(
            "MESSAGE", target_id, host, port, transport=transport, body=body, content_type="Application/MANSCDP+xml"
        )
