"""Fixtures for interop tests: a real gateway in-process and real peers (sipp, ffprobe, chromium).

A missing peer skips the test on a developer machine but fails it in CI (CI=true), where
.ci/run installs every peer: interop is required, not optional.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.config import Settings, load_settings

SIPP_DIR = Path(__file__).resolve().parents[1] / "data" / "sipp"


def free_port() -> int:
    """A free UDP+TCP port on loopback for a peer that cannot bind port 0 itself."""
    import socket

    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (installed by .ci/run)")
        pytest.skip(f"{name} is not installed")
    return path


def gateway_settings(tmp_path: Path, **overrides: str) -> Settings:
    env = {
        "GBGATE_SIP__PORT": "0",
        "GBGATE_HTTP__PORT": "0",
        "GBGATE_DATABASE__URL": f"sqlite:///{tmp_path / 'gbgate.db'}",
        "GBGATE_HEALTH__JOURNAL_PATH": str(tmp_path / "journal" / "health.log"),
        "GBGATE_HEALTH__FSYNC_INTERVAL": "0.02",
        "GBGATE_SIP__QUERY_TIMEOUT": "3",
        "GBGATE_SIP__CATALOG_IDLE_TIMEOUT": "1",
        "GBGATE_DATA_DIR": str(tmp_path),
        # one process unless a test asks for workers: the worker path has its own interop tests
        # (test_media_workers, continuity, unregister), and the demo and `serve` tests run the default
        "GBGATE_MEDIA__WORKERS": "1",
    }
    env.update(overrides)
    return load_settings(env=env)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(gateway_settings(tmp_path))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def whitelist(gw: Gateway, device_id: str, password: str, **fields: Any) -> None:
    from whitelist.model import Credential, Entry, EntryStatus

    assert gw.services is not None
    realm = gw.settings.sip.domain
    entry = Entry(
        device_id=device_id,
        status=EntryStatus.APPROVED,
        credential=Credential.from_password(device_id, realm, password),
        **fields,
    )
    await gw.services.admission.store.save_entry(entry, actor="test", action="add")
    await gw.services.admission.sync()


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    messages: str


async def run_sipp(
    gw: Gateway,
    scenario: str,
    rows: list[list[str]],
    tmp_path: Path,
    *,
    transport: str = "u1",
    timeout: float = 20.0,
    calls: int | None = None,
    extra: list[str] | None = None,
    local_ip: str = "127.0.0.1",
    done: asyncio.Event | None = None,
) -> SippResult:
    """Run a sipp scenario from tests/data/sipp against the gateway; rows become the injection file.

    `done` (camera_register_wait.xml): once the test sets it, its camera stops waiting for the
    gateway's queries and sends its final keepalive at once instead of after the full 6 s."""
    sipp = require_tool("sipp")
    inf = tmp_path / f"{scenario}.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(";".join(r) + "\n" for r in rows))
    trace = tmp_path / "sipp"
    trace.mkdir(exist_ok=True)
    port = gw.endpoint.udp_port if transport.startswith("u") else gw.endpoint.tcp_port  # type: ignore[union-attr]
    sipp_port = free_port()
    args = [
        sipp, f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / scenario), "-inf", str(inf),
        "-m", str(calls if calls is not None else len(rows)), "-t", transport,
        "-i", local_ip, "-p", str(sipp_port),
        "-nostdin", "-trace_msg", "-trace_err", "-timeout", f"{int(timeout)}s", "-recv_timeout", "8000",
        "-max_recv_loops", "1000", "-r", "20",
        *(extra or []),
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=trace, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    ender = None
    if done is not None:
        assert len(rows) == 1, "the end-of-wait INFO is for one camera"
        ender = asyncio.create_task(_end_wait(done, f"1-{proc.pid}@{local_ip}", local_ip, sipp_port,
                                              tcp=not transport.startswith("u")))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout + 10)
    finally:
        if ender is not None:
            ender.cancel()
    messages = "".join(p.read_text(errors="replace") for p in trace.glob("*_messages.log"))
    for p in trace.glob("*"):
        p.unlink()
    return SippResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"), messages)


async def _end_wait(done: asyncio.Event, call_id: str, host: str, port: int, *, tcp: bool = False) -> None:
    """run_sipp's side task: the INFO goes only once the test has done its work."""
    await done.wait()
    if not tcp:
        end_sipp_wait(call_id, host, port)
        return
    _reader, writer = await asyncio.open_connection(host, port)  # sipp -t t1 listens on its port too
    try:
        writer.write(_info(call_id, host, port, "TCP"))
        await writer.drain()
        await asyncio.Future()  # open until sipp is done (run_sipp cancels this task)
    finally:
        writer.close()


def end_sipp_wait(call_id: str, host: str, port: int) -> None:
    """An INFO in a sipp call (the first one's Call-ID is `1-<sipp pid>@<local ip>`): a scenario waiting
    in that call with `<recv request="INFO" timeout=... ontimeout=...>` goes on at once."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(_info(call_id, host, port, "UDP"), (host, port))


def _info(call_id: str, host: str, port: int, transport: str) -> bytes:
    return (f"INFO sip:camera@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bK-end-wait\r\n"
            f"From: <sip:test@127.0.0.1>;tag=end-wait\r\nTo: <sip:camera@{host}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
