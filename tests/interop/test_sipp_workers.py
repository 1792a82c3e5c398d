"""SIP on every core, end to end: the signalling interop runs with `sip.workers` 1 and 2, and the
attacks that several processes could open (issue 15): a lockout budget per device, not per worker."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from tests.interop.conftest import gateway_settings, run_sipp
from tests.interop.conftest import whitelist as whitelist_on_main

pytestmark = [pytest.mark.interop]

CAM = "34020000001320000101"
PASSWORD = "12345678"
REALM = "3402000000"
ANSWERS = Path(__file__).parents[1] / "data" / "sipp" / "camera_answers.xml"


async def whitelist(gw: Gateway, device_id: str, password: str, **fields: object) -> None:
    """Whitelist on main; with workers, wait until every worker has it too (it is pushed, not polled)."""
    await whitelist_on_main(gw, device_id, password, **fields)
    if gw.sip_workers is not None:
        await gw.sip_workers.barrier()


def auth(device_id: str, password: str) -> str:
    return f"[authentication username={device_id} password={password}]"


@pytest.fixture(params=[1, 2], ids=["workers1", "workers2"])
async def gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_settings(tmp_path, GBGATE_SIP__WORKERS=str(request.param)))
    await g.start()
    try:
        yield g
    finally:
        await g.stop()


async def eventually(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.mark.requires("sipp")
async def test_register_and_keepalive(gw: Gateway, tmp_path: Path) -> None:
    await whitelist(gw, CAM, PASSWORD, name="东门")
    result = await run_sipp(gw, "reg_keepalive.xml", [[CAM, auth(CAM, PASSWORD)]], tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.messages[-3000:]
    assert "SIP/2.0 401" in result.messages and "Date: " in result.messages
    adapter = gw.adapter
    assert adapter is not None
    await eventually(lambda: adapter.stats["manscdp:Notify:Keepalive"] == 1)  # workers report every 0.2 s
    rec = adapter.presence.get(CAM)
    assert rec is not None and rec.online and rec.last_keepalive is not None
    assert adapter.stats["auth:ok"] == 1
    if gw.sip_workers is not None:
        assert adapter.stats["workers:register"] == 2  # both REGISTERs were a worker's, none main's
    await gw.services.repo.flush()  # type: ignore[union-attr]
    events = [e.kind for e in await gw.services.repo.events(CAM)]  # type: ignore[union-attr]
    assert "registered" in events


@pytest.mark.requires("sipp")
async def test_catalog_through_workers(gw: Gateway, tmp_path: Path) -> None:
    """Main's queries go out from the shared port; the device's answers come back through a worker."""
    await whitelist(gw, CAM, PASSWORD)
    done = asyncio.Event()  # set: the camera's final keepalive without its full wait
    sipp_run = asyncio.create_task(run_sipp(gw, "camera_register_wait.xml", [[CAM, auth(CAM, PASSWORD)]], tmp_path,
                                            extra=["-oocsf", str(ANSWERS)], done=done))
    svc = gw.services
    assert svc is not None
    deadline = asyncio.get_running_loop().time() + 12
    while len(await svc.repo.list_channels(CAM)) != 2:
        assert asyncio.get_running_loop().time() < deadline, "catalog not synced"
        await asyncio.sleep(0.1)
    done.set()
    result = await sipp_run
    assert result.returncode == 0, result.stdout[-2000:] + result.messages[-3000:]


# ---------------------------------------------------------------------- attacks across workers
def worker_of(port: int, workers: int) -> int:
    """Which worker the steering program (gateway/sip/reuseport.py) sends 127.0.0.1:port to."""
    return ((((0x7F000001 ^ port) * 0x9E3779B1) & 0xFFFFFFFF) >> 16) % workers + 1


def client_sockets(count: int, workers: int) -> list[socket.socket]:
    """UDP sockets on 127.0.0.1 whose ports alternate over the workers (1, 2, 1, 2, …)."""
    out: list[socket.socket] = []
    while len(out) < count:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        if workers > 1 and worker_of(s.getsockname()[1], workers) != len(out) % workers + 1:
            s.close()
            continue
        s.setblocking(False)
        out.append(s)
    return out


def register(sock: socket.socket, server: int, cseq: int, authorization: str | None = None,
             call_id: str = "attack-1") -> bytes:
    port = sock.getsockname()[1]
    lines = [
        f"REGISTER sip:34020000002000000001@{REALM} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-{port}-{cseq}",
        "Max-Forwards: 70",
        f"From: <sip:{CAM}@{REALM}>;tag=t{port}",
        f"To: <sip:{CAM}@{REALM}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{CAM}@127.0.0.1:{port}>",
        "Expires: 3600",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    data = ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()
    sock.sendto(data, ("127.0.0.1", server))
    return data


async def answer(sock: socket.socket) -> str:
    """The next response (the gateway's own requests to a device that logged in are skipped)."""
    async with asyncio.timeout(5):
        while True:
            text = (await asyncio.get_running_loop().sock_recv(sock, 65535)).decode()
            if text.startswith("SIP/2.0 "):
                return text


def digest_for(challenge: str, password: str) -> str:
    from gateway.sip import digest

    www = re.search(r"WWW-Authenticate: (.*)\r\n", challenge)
    assert www is not None, challenge
    return digest.authorization(www.group(1), method="REGISTER", uri=f"sip:34020000002000000001@{REALM}",
                                username=CAM, password=password)


async def attempt(sock: socket.socket, server: int, password: str, cseq: int) -> str:
    register(sock, server, cseq)
    challenge = await answer(sock)
    assert challenge.startswith("SIP/2.0 401"), challenge
    register(sock, server, cseq + 1, digest_for(challenge, password))
    return await answer(sock)


async def test_lockout_budget_is_per_device_not_per_worker(gw: Gateway) -> None:
    """Five wrong passwords from ports spread over the workers lock the ID everywhere: the right
    password is then refused from either worker (a device does not get N × max_failures)."""
    await whitelist(gw, CAM, PASSWORD)
    workers = gw.sip_workers.count if gw.sip_workers is not None else 1
    server = gw.sip_port
    socks = client_sockets(7, workers)
    try:
        budget = gw.settings.whitelist.max_failures
        for i in range(budget):
            got = await attempt(socks[i], server, "wrong", 10 * i)
            assert got.startswith("SIP/2.0 403"), got
        for sock in socks[budget:]:  # one on each worker
            got = await attempt(sock, server, PASSWORD, 100)
            assert got.startswith("SIP/2.0 403"), got
        adapter = gw.adapter
        assert adapter is not None
        await eventually(lambda: adapter.stats["refused:LOCKED_ID"] == 2)
        assert adapter.stats["auth:failed"] == budget
        assert adapter.presence.get(CAM) is None
    finally:
        for s in socks:
            s.close()


async def test_replayed_authorization_is_refused(gw: Gateway) -> None:
    """A captured REGISTER with its Authorization, played back from its own port (its worker) or
    from a port of the other worker, is challenged again, never admitted."""
    await whitelist(gw, CAM, PASSWORD)
    workers = gw.sip_workers.count if gw.sip_workers is not None else 1
    server = gw.sip_port
    socks = client_sockets(2, workers)
    try:
        register(socks[0], server, 1)
        challenge = await answer(socks[0])
        captured = register(socks[0], server, 2, digest_for(challenge, PASSWORD))
        assert (await answer(socks[0])).startswith("SIP/2.0 200")
        replay = captured.replace(b"branch=z9hG4bK-", b"branch=z9hG4bK-replay-")  # a new transaction
        for sock in socks:
            sock.sendto(replay, ("127.0.0.1", server))
            got = await answer(sock)
            assert got.startswith("SIP/2.0 401"), got
        adapter = gw.adapter
        assert adapter is not None
        await eventually(lambda: adapter.stats["auth:replay"] + adapter.stats["auth:nonce_invalid"] == 2)
    finally:
        for s in socks:
            s.close()


def test_a_nonce_is_good_only_at_the_worker_that_issued_it(tmp_path: Path) -> None:
    """The replay guard is per process, so nonces are bound to it (gateway/app/sip_worker.py
    `worker_secret`): a REGISTER answering worker 1's challenge is challenged by worker 2 — even
    from the same source, which only happens when the kernel's choice changes (a worker restart)."""
    from gateway.app.sip_worker import SipWorker
    from gateway.sip.events import Peer
    from gateway.sip.message import parse_message
    from whitelist.decide import Policy
    from whitelist.model import Credential, Entry, EntryStatus

    settings = gateway_settings(tmp_path)
    policy = Policy([Entry(device_id=CAM, status=EntryStatus.APPROVED,
                           credential=Credential.from_password(CAM, REALM, PASSWORD))])

    class NoLink:
        def send(self, *args: object) -> None:
            pass

    one, two = (SipWorker(i, settings, policy, NoLink(), clock=lambda: 999.0) for i in (1, 2))  # type: ignore[arg-type]
    peer = Peer("udp", "127.0.0.1", 40000)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        first = parse_message(register(sock, 9, 1))
        from adapters.gb_device.registrar import Accept, Challenge

        challenge = one.registrar.admit(first, peer, 1000.0)
        assert isinstance(challenge, Challenge)
        authorization = digest_for(f"WWW-Authenticate: {challenge.www_authenticate}\r\n", PASSWORD)
        second = register(sock, 9, 2, authorization)
        assert isinstance(two.registrar.admit(parse_message(second), peer, 1000.0), Challenge)
        assert isinstance(one.registrar.admit(parse_message(second), peer, 1000.0), Accept)
    finally:
        sock.close()


def keepalive(sock: socket.socket, server: int, sn: int) -> None:
    port = sock.getsockname()[1]
    body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>{sn}</SN>\r\n'
            f"<DeviceID>{CAM}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n").encode()
    head = "\r\n".join([
        f"MESSAGE sip:34020000002000000001@{REALM} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-ka-{port}-{sn}",
        "Max-Forwards: 70", f"From: <sip:{CAM}@{REALM}>;tag=k{port}", f"To: <sip:34020000002000000001@{REALM}>",
        f"Call-ID: ka-{sn}", "CSeq: 20 MESSAGE", "Content-Type: Application/MANSCDP+xml",
        f"Content-Length: {len(body)}", "", ""])
    sock.sendto(head.encode() + body, ("127.0.0.1", server))


async def test_killed_workers_are_restarted_with_the_bindings(tmp_path: Path) -> None:
    """Both workers killed: main serves alone meanwhile, starts them again, gives them its bindings;
    the registered device's keepalive and its next REGISTER are answered as before."""
    import os
    import signal

    gw = Gateway(gateway_settings(tmp_path, GBGATE_SIP__WORKERS="2"))
    await gw.start()
    sock = client_sockets(1, 1)[0]
    try:
        await whitelist(gw, CAM, PASSWORD)
        server = gw.sip_port
        assert (await attempt(sock, server, PASSWORD, 1)).startswith("SIP/2.0 200")
        workers, adapter = gw.sip_workers, gw.adapter
        assert workers is not None and adapter is not None
        old = workers.pids()
        for pid in old:
            os.kill(pid, signal.SIGKILL)  # children this test's gateway started
        # whoever holds the port now answers; what sat in a killed worker's socket is lost, so the
        # device retransmits (RFC 3261 §17.1.2.2, Timer E) like any UDP UA
        for _ in range(10):
            keepalive(sock, server, 1)
            try:
                async with asyncio.timeout(0.5):
                    reply = await answer(sock)
                break
            except TimeoutError:
                continue
        assert reply.startswith("SIP/2.0 200")
        await eventually(lambda: adapter.stats["workers:restarted"] == 2
                         and all(w.ready.is_set() for w in workers.workers))
        assert not set(workers.pids()) & set(old)
        await workers.barrier()
        keepalive(sock, server, 2)
        assert (await answer(sock)).startswith("SIP/2.0 200")
        assert (await attempt(sock, server, PASSWORD, 5)).startswith("SIP/2.0 200")
        rec = adapter.presence.get(CAM)
        assert rec is not None and rec.online and rec.port == sock.getsockname()[1]
    finally:
        sock.close()
        await gw.stop()
