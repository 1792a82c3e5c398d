"""Issue 10 #5 over TCP: a sipp camera registered on one TCP connection; a neighbour on the same
host opens another connection and sends MESSAGEs in the camera's name. They are refused like an
unregistered device's and the camera's binding (its connection) is not moved."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.app import Gateway
from gateway.gb import builders
from tests.interop.conftest import run_sipp, whitelist
from tests.interop.test_sipp_signalling import auth, wait_for

CAM = "34020000001320000841"
PW = "Cam-pass-841"


async def test_message_on_another_tcp_connection_does_not_move_the_binding(gateway: Gateway, tmp_path: Path) -> None:
    await whitelist(gateway, CAM, PW)
    answers = Path(__file__).parents[1] / "data" / "sipp" / "camera_answers.xml"
    done = asyncio.Event()  # set: the camera's final keepalive without its full wait
    camera = asyncio.create_task(run_sipp(gateway, "camera_register_wait.xml", [[CAM, auth(CAM, PW)]], tmp_path,
                                          transport="t1", extra=["-oocsf", str(answers)], done=done))
    adapter = gateway.adapter
    assert adapter is not None and gateway.endpoint is not None

    async def registered() -> bool:
        return CAM in adapter.presence

    await wait_for(registered, 10)
    rec = adapter.presence.get(CAM)
    assert rec is not None and rec.transport == "tcp"
    before = (rec.host, rec.port, rec.conn_id)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.endpoint.tcp_port)
    try:
        local = writer.get_extra_info("sockname")
        body = builders.build_keepalive(CAM, 99)
        head = (f"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP {local[0]}:{local[1]};rport;branch=z9hG4bKnb1\r\n"
                f"From: <sip:{CAM}@3402000000>;tag=nb\r\nTo: <sip:34020000002000000001@3402000000>\r\n"
                f"Call-ID: neighbour-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode() + body)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert status.startswith(b"SIP/2.0 404"), status
    rec = adapter.presence.get(CAM)
    assert rec is not None and (rec.host, rec.port, rec.conn_id) == before
    assert adapter.stats["refused:binding_mismatch"] == 1

    async def catalog_in() -> bool:
        return adapter.stats["catalog:complete"] >= 1

    # the camera answered the catalog on its connection, so it has taken its REGISTER's 200 there and
    # waits for the INFO (on another connection to it) that ends its stay
    await wait_for(catalog_in, 10)
    done.set()
    result = await camera
    assert result.returncode == 0, result.messages[-3000:]
