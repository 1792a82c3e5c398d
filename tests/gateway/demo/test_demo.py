"""`gbgate demo` as a user runs it: a subprocess that reaches "8 of 8 online" and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.interop.conftest import free_port


def test_demo_reaches_8_of_8_online(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update({"GBGATE_SIP__PORT": str(free_port()), "GBGATE_HTTP__PORT": str(free_port())})
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--duration", "60"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 45
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("8 of 8 online") and "8 channels" in line:
                break
        else:
            raise AssertionError("demo did not get 8 of 8 online in time:\n" + "".join(lines))
        assert any(line.startswith("8 of 8 online, 8 channels") for line in lines), "".join(lines)
        text = "".join(lines)
        assert "/live/34020000001310000001.flv?token=gbg_" in text
        assert "API token: gbg_" in text
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert (tmp_path / "gbgate-data" / "gbgate.db").exists()
