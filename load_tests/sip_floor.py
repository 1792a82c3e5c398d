"""The floor of a CPython SIP server on this machine: a bare uvloop UDP responder.

    python -m load_tests.sip_floor --port 5099

It answers the anchor's scenarios with no checks and no state: a REGISTER without credentials
gets a 401 with a fixed challenge, one with credentials a 200, a MESSAGE a 200 — each response
made from the request's Via/From/To/Call-ID/CSeq lines with one `bytes.split`. What it costs per
request is what any Python asyncio server pays before doing any work (the event loop's wakeup,
one recvfrom, one sendto, the bytes in and out), so `bench_sip_anchor --floor` can show how much
of gbgate's cost is its own work and how far a target ratio against Kamailio is reachable at all.
Not a SIP server: never point a device at it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import cast

_COPIED = (b"Via:", b"From:", b"To:", b"Call-ID:", b"CSeq:")
_CHALLENGE = b'WWW-Authenticate: Digest realm="3402000000", nonce="0123456789abcdef", algorithm=MD5, qop="auth"'


def answer(data: bytes) -> bytes | None:
    """The response to `data`, or None for anything that is not a REGISTER or MESSAGE."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.split(b"\r\n")
    if lines[0].startswith(b"REGISTER "):
        auth = any(line.startswith(b"Authorization:") for line in lines)
        status = b"SIP/2.0 200 OK" if auth else b"SIP/2.0 401 Unauthorized"
    elif lines[0].startswith(b"MESSAGE "):
        auth, status = True, b"SIP/2.0 200 OK"
    else:
        return None
    out = [status]
    for line in lines[1:]:
        if line.startswith(_COPIED):
            out.append(line + b";tag=floor" if line.startswith(b"To:") else line)
    if not auth:
        out.append(_CHALLENGE)
    out.append(b"Content-Length: 0\r\n\r\n")
    return b"\r\n".join(out)


class _Responder(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = answer(data)
        if out is not None:
            self.transport.sendto(out, addr)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(_Responder, local_addr=("127.0.0.1", port))
    print(f"sip_floor PID {os.getpid()} on 127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # the shipped loop is uvloop; asyncio's is slower, so this floor is then lower
        asyncio.run(_serve(args.port))
    else:
        uvloop.run(_serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
