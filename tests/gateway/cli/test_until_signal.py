"""`until_signal`: a stop signal that arrives as soon as the "ready" line is out stops cleanly.

Each case runs in its own interpreter: without the fix the signal would meet Python's defaults
(KeyboardInterrupt, or death by SIGTERM), which must not hit the test runner itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import asyncio, os, signal, sys
from gateway.cli.common import until_signal

def on_ready():
    print("ready", flush=True)
    os.kill(os.getpid(), signal.{sig})  # as a supervisor that reads the ready line at once

asyncio.run(asyncio.wait_for(until_signal(on_ready=on_ready), 5))
print("stopped", flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_sent_the_moment_ready_is_printed_stops_cleanly(sig: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(sig=sig)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.split() == ["ready", "stopped"]
