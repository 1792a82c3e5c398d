"""A stop signal to the whole process group — Ctrl-C in a terminal, `timeout`, systemd stopping
the service's cgroup — stops `gbgate serve` with its SIP and media workers in order: main closes
the workers' links, nobody is reported crashed or restarted, every process exits, exit code 0.
(Before, the workers died of the signal first and main logged "media worker … exited with -15;
restarting" in the middle of its shutdown.)"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.interop.test_restart_bindings import Served

pytestmark = [pytest.mark.interop]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_group_stop_signal_stops_main_and_workers_in_order(tmp_path: Path, sig: signal.Signals) -> None:
    served = Served(tmp_path)
    env = {**served.env, "GBGATE_SIP__WORKERS": "2", "GBGATE_MEDIA__WORKERS": "2"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", env=env, cwd=tmp_path, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    log: list[bytes] = []
    try:
        while not any(b"gbgate serving" in line for line in log):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, b"".join(log).decode(errors="replace")
            log.append(line)
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(children) == 4  # two SIP workers, two media workers
        os.killpg(proc.pid, sig)  # the whole group, as a terminal or systemd would
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        log.append(rest)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    text = b"".join(log).decode(errors="replace")
    assert proc.returncode == 0, text
    assert "exited with" not in text and "restarting" not in text and "Traceback" not in text, text
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
