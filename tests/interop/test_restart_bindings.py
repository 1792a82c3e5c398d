"""Issue 16 #1: a gateway killed with SIGKILL and started again keeps its cameras' registrations.

A real `python -m gateway serve` subprocess; sipp cameras register, the gateway is SIGKILLed and
restarted, and the cameras send only keepalives from the port they registered from:
camera 1 (Expires 3600) → 200 and online again; camera 2, whose registration (Expires 2) ran out
while the gateway was down → 404 and recorded offline from its expiry.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.interop.conftest import SIPP_DIR, free_port, require_tool
from tests.interop.test_sipp_signalling import auth

CAM1, CAM2 = "34020000001320000831", "34020000001320000832"
PW = "Cam-pass-83x"
ROOT = Path(__file__).resolve().parents[2]


class Served:
    """One `gbgate serve` subprocess on fixed ports and a database that outlives it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.sip_port, self.http_port = free_port(), free_port()
        self.db = tmp_path / "gbgate.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GBGATE_")}
        self.env.update({
            "PYTHONPATH": str(ROOT),
            "GBGATE_SIP__PORT": str(self.sip_port),
            "GBGATE_HTTP__PORT": str(self.http_port),
            "GBGATE_DATABASE__URL": f"sqlite:///{self.db}",
            "GBGATE_DATA_DIR": str(tmp_path),
            "GBGATE_HEALTH__JOURNAL_PATH": str(tmp_path / "journal" / "health.log"),
            "GBGATE_HEALTH__FSYNC_INTERVAL": "0.02",
            "GBGATE_SIP__REGISTER_EXPIRES_MIN": "1",
            "GBGATE_SIP__QUERY_ON_REGISTER": "false",
        })
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def cli(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", *args, env=self.env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", env=self.env, cwd=self.tmp,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
            assert line, "gateway exited during start"
            if b"gbgate serving" in line:
                self._drain = asyncio.create_task(self._read_rest(self.proc.stdout))
                return

    @staticmethod
    async def _read_rest(stream: asyncio.StreamReader) -> None:
        """Keep reading the log so a chatty gateway never blocks on a full pipe."""
        while await stream.readline():
            pass

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.proc = None

    def query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.db) as conn:
            return list(conn.execute(sql, args))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    s = Served(tmp_path)
    yield s
    if s.proc is not None:
        await s.kill()


async def sipp(served: Served, scenario: str, row: list[str], local_port: int, tmp_path: Path) -> str:
    """Run one sipp call from 127.0.0.1:local_port; returns its message trace, asserts success."""
    inf = tmp_path / f"{scenario}-{local_port}.csv"
    inf.write_text("SEQUENTIAL\n" + ";".join(row) + "\n")
    proc = await asyncio.create_subprocess_exec(
        require_tool("sipp"), f"127.0.0.1:{served.sip_port}", "-sf", str(SIPP_DIR / scenario), "-inf", str(inf),
        "-m", "1", "-t", "u1", "-i", "127.0.0.1", "-p", str(local_port), "-nostdin", "-trace_msg",
        "-timeout", "15s", "-recv_timeout", "5000", cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await asyncio.wait_for(proc.communicate(), 30)
    trace = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*_messages.log"))
    for p in tmp_path.glob("*_messages.log"):
        p.unlink()
    assert proc.returncode == 0, trace[-3000:]
    return trace


def raw_keepalive(served: Served, device_id: str, local_port: int) -> bytes:
    """One keepalive MESSAGE from 127.0.0.1:local_port over a plain UDP socket; the raw answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", local_port))
        s.settimeout(5)
        body = (f'<?xml version="1.0"?><Notify><CmdType>Keepalive</CmdType><SN>9</SN>'
                f"<DeviceID>{device_id}</DeviceID><Status>OK</Status></Notify>").encode()
        head = (f"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};rport;branch=z9hG4bKka{local_port}\r\n"
                f"From: <sip:{device_id}@3402000000>;tag=c2\r\nTo: <sip:34020000002000000001@3402000000>\r\n"
                f"Call-ID: ka-{local_port}\r\nCSeq: 1 MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        s.sendto(head.encode() + body, ("127.0.0.1", served.sip_port))
        return s.recv(65536)


async def poll(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_keepalive_after_sigkill_restart_is_accepted_and_expired_binding_is_offline(
        served: Served, tmp_path: Path) -> None:
    await served.cli("whitelist", "add", CAM1, "--password", PW)
    await served.cli("whitelist", "add", CAM2, "--password", PW)
    await served.start()
    port1, port2 = free_port(), free_port()
    await sipp(served, "reg_expires.xml", [CAM1, auth(CAM1, PW), "3600"], port1, tmp_path)
    await sipp(served, "reg_expires.xml", [CAM2, auth(CAM2, PW), "2"], port2, tmp_path)
    await poll(lambda: len(served.query("SELECT device_id FROM device_binding")) == 2)
    rows = dict(served.query("SELECT device_id, expires_at FROM device_binding"))
    assert set(rows) == {CAM1, CAM2}

    await served.kill()  # no orderly stop: nothing is written on the way down
    await asyncio.sleep(2.5)  # CAM2's registration runs out meanwhile
    await served.start()

    # camera 1 never re-registers: its keepalive from the registered address is accepted
    trace = await sipp(served, "keepalive_only.xml", [CAM1, ""], port1, tmp_path)
    assert "SIP/2.0 200" in trace
    await poll(lambda: served.query("SELECT online FROM device WHERE id = ?", CAM1) == [(1,)])

    # only from exactly the registered address: the same camera ID from another port is refused
    assert raw_keepalive(served, CAM1, free_port()).startswith(b"SIP/2.0 404")

    # camera 2 expired while we were down: refused, and offline from its expiry in the ledger
    answer = raw_keepalive(served, CAM2, port2)
    assert answer.startswith(b"SIP/2.0 404"), answer[:80]
    assert served.query("SELECT online FROM device WHERE id = ?", CAM2) == [(0,)]
    assert served.query("SELECT device_id FROM device_binding") == [(CAM1,)]

    def ledger(subject: str) -> list[tuple[object, ...]]:
        return served.query("SELECT state, cause, ts FROM health_event WHERE subject = ? ORDER BY ts", subject)

    await poll(lambda: any(r[0] == "offline" for r in ledger(f"device:{CAM2}")), 10)
    offline = [r for r in ledger(f"device:{CAM2}") if r[0] == "offline"]
    assert offline[-1][1] == "registration_expired"
    registered = served.query("SELECT ts FROM health_event WHERE subject = ? AND state = 'online'", f"device:{CAM2}")
    assert abs(float(offline[-1][2]) - (float(registered[0][0]) + 2)) < 1.0  # from its expiry, not the restart
    await poll(lambda: ledger(f"device:{CAM1}")[-1][0] == "online", 10)
