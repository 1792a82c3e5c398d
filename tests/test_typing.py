"""The strictly typed packages stay strict: mypy (configured in pyproject.toml) finds nothing.

Strict covers the sans-IO cores (sip, gb), media, outputs, health, the task set, the adapters and the
whitelist; the interfaces (api, cli, console) and reports are checked with the default settings
only because their aiohttp/SQL glue is typed loosely upstream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRICT = ["gateway/sip", "gateway/gb", "gateway/media", "gateway/media_workers", "gateway/outputs", "gateway/health",
          "gateway/tasks.py", "adapters", "whitelist"]

pytest.importorskip("mypy", reason="mypy (the test extra) is not installed")


@pytest.mark.timeout(300)
def test_strict_packages_type_check_clean(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *STRICT],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout
