"""reg_auth.xml's REGISTERs and keepalive.xml's MESSAGE as sipp fills them in, for benches that feed
the gateway without sipp (the same header order and values the anchor runs send)."""

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


KEEPALIVE_BODY = ('<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
                  "<SN>%d</SN>\r\n<DeviceID>%s</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n")


def keepalive_message(dev: str, i: int, *, realm: str = "3402000000", host: str = "127.0.0.1", port: int = 5061,
                      pid: int = 4242) -> bytes:
    """keepalive.xml's MESSAGE as sipp `pid` sends it from host:port for its call i (fresh branch,
    tag and Call-ID per call)."""
    body = KEEPALIVE_BODY % (i, dev)
    return (f"MESSAGE sip:34020000002000000001@{realm} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK-{pid}-{i}-0\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{dev}@{realm}>;tag={pid}SIPpTag00{i}\r\n"
            f"To: <sip:34020000002000000001@{realm}>\r\n"
            f"Call-ID: {i}-{pid}@{host}\r\n"
            f"CSeq: 20 MESSAGE\r\n"
            f"Content-Type: Application/MANSCDP+xml\r\n"
            f"User-Agent: sipp-gb28181-ipc\r\n"
            f"Content-Length:   {len(body)}\r\n\r\n{body}").encode()
