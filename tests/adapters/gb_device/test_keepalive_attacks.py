"""Keepalives an attacker sends in the plain shape the fast paths read (gateway/sip/fastpath.py,
gateway/gb/keepalive_fast.py): none is answered 200 or touches presence, in one process
(router → GbDeviceAdapter.fast_keepalive, else the full path) or in a SIP worker (datagram_hook:
forwarded to main raw). In one process the full path then refuses each as it always has: an
unregistered device and another address than the binding get 404, a body in another device's name
403, hostile XML 400, unexpanded.
"""

from __future__ import annotations

import asyncio
import tempfile

import pytest

from gateway.app.sip_ipc import Kind
from gateway.gb import builders
from gateway.sip.events import Peer
from tests.adapters.gb_device.test_fast_paths import BOUND, FRESH, REALM, REVOKED, UNKNOWN, A, endpoint_path, make_rig
from tests.gateway import test_sip_worker_fast as worker_rig

BILLION_LAUGHS = (b'<?xml version="1.0"?>\r\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                  b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\r\n'
                  b"<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n<DeviceID>&lol2;</DeviceID>\r\n</Notify>\r\n")
EXTERNAL_ENTITY = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                   b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>" + A.encode() + b"</DeviceID>"
                   b"<Status>&e;</Status></Notify>")


def keepalive(device: str, peer: Peer, body: bytes, *, branch: str = "1") -> bytes:
    head = [f"MESSAGE sip:34020000002000000001@{REALM} SIP/2.0",
            f"Via: SIP/2.0/UDP {peer.host}:{peer.port};rport;branch=z9hG4bK-atk-{branch}",
            "Max-Forwards: 70", f"From: <sip:{device}@{REALM}>;tag=atk{branch}",
            f"To: <sip:34020000002000000001@{REALM}>", f"Call-ID: atk-{branch}@x", "CSeq: 20 MESSAGE",
            "Content-Type: Application/MANSCDP+xml", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


OTHER_PORT = Peer("udp", BOUND.host, BOUND.port + 1, None)
OTHER_HOST = Peer("udp", "198.51.100.9", BOUND.port, None)
# (name, device in From, source, body, the full path's status line, the counter it bumps)
ATTACKS = [
    ("unknown device", UNKNOWN, BOUND, builders.build_keepalive(UNKNOWN, 1), b"404 Device Not Registered",
     "refused:not_registered"),
    ("approved, not registered", FRESH, BOUND, builders.build_keepalive(FRESH, 1), b"404 Device Not Registered",
     "refused:not_registered"),
    ("another port than the binding", A, OTHER_PORT, builders.build_keepalive(A, 1), b"404 Device Not Registered",
     "refused:binding_mismatch"),
    ("another host than the binding", A, OTHER_HOST, builders.build_keepalive(A, 1), b"404 Device Not Registered",
     "refused:binding_mismatch"),
    ("revoked", REVOKED, BOUND, builders.build_keepalive(REVOKED, 1), b"403 ", "refused:REVOKED"),
    ("body in another device's name", A, BOUND, builders.build_keepalive(FRESH, 1), b"403 ",
     "refused:foreign_device_id"),
    ("body ID differs in case", A, BOUND, builders.build_keepalive(A.replace("0", "O", 1), 1), b"403 ",
     "refused:foreign_device_id"),
    ("body ID a prefix of the sender", A, BOUND, builders.build_keepalive(A[:-1], 1), b"403 ",
     "refused:foreign_device_id"),
    ("billion laughs", A, BOUND, BILLION_LAUGHS, b"400 ", "refused:bad_manscdp:"),
    ("external entity", A, BOUND, EXTERNAL_ENTITY, b"400 ", "refused:bad_manscdp:"),
]


@pytest.mark.parametrize(("name", "device", "peer", "body", "status", "counter"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_one_process_refuses_as_the_full_path_always_did(name: str, device: str, peer: Peer, body: bytes,
                                                          status: bytes, counter: str) -> None:
    async def run() -> None:
        rig = make_rig(1e9)
        before = rig.adapter.presence.get(device)
        seen = before.last_seen if before is not None else None
        taken, _kept, sent = endpoint_path(rig, keepalive(device, peer, body), peer)
        assert not taken, "the fast path answered an attack"
        assert sent is not None and sent.startswith(b"SIP/2.0 " + status), sent
        assert any(k.startswith(counter) for k, v in rig.adapter.stats.items() if v), dict(rig.adapter.stats)
        assert rig.adapter.stats["manscdp:Notify:Keepalive"] == 0
        after = rig.adapter.presence.get(device)  # (a revoked device is unregistered, as always)
        assert after is None or after.last_seen == seen
        assert b"root:" not in sent and b"lollol" not in sent
        await rig.adapter._tasks.close()

    asyncio.run(run())


@pytest.mark.parametrize(("name", "device", "peer", "body", "status", "counter"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_a_sip_worker_leaves_every_attack_to_main(name: str, device: str, peer: Peer, body: bytes, status: bytes,
                                                  counter: str) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as d:
            rig = worker_rig.make_rig(worker_rig.FastWorker, d, 10**9, 65536)
            # the worker knows the same bindings as the one-process rig (A and REVOKED bound here)
            data = keepalive(device, peer, body)
            worker_rig.receive(rig, data, peer)
            assert rig.endpoint.out == [], "a worker answered an attack"
            assert rig.link.sent[-1] == (Kind.FORWARD, peer.host, peer.port, data)
            assert not any(m[0] == Kind.KEEPALIVE for m in rig.link.sent)
            assert rig.worker.stats["manscdp:Notify:Keepalive"] == 0

    asyncio.run(run())


def test_the_plain_keepalive_is_still_answered_fast() -> None:
    """The control: the same request from the bound device takes the fast path (200)."""
    async def run() -> None:
        rig = make_rig(1e9)
        taken, _kept, sent = endpoint_path(rig, keepalive(A, BOUND, builders.build_keepalive(A, 1)), BOUND)
        assert taken and sent is not None and sent.startswith(b"SIP/2.0 200 OK\r\n")
        await rig.adapter._tasks.close()

    asyncio.run(run())
