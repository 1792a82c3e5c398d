"""reg_auth.xml's REGISTERs as sipp fills them in, for in-process benches that feed the gateway
without sipp (the same header order and values the anchor runs send)."""

from __future__ import annotations


def reg_auth_register(dev: str, cseq: int, auth: str | None, *, branch: str, tag: str, call_id: str,
                      realm: str = "3402000000", host: str = "127.0.0.1", port: int = 5061) -> bytes:
    """One REGISTER of reg_auth.xml: the first (auth None) or the one carrying the digest."""
    lines = [
        f"REGISTER sip:34020000002000000001@{realm} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};rport;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:{dev}@{realm}>;tag={tag}",
        f"To: <sip:{dev}@{realm}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{dev}@{host}:{port}>",
    ]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    lines += ["Expires: 3600", "User-Agent: sipp-gb28181-ipc", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()
