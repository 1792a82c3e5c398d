"""mypy (configured in pyproject.toml) finds nothing in the strictly typed packages.

Strict covers the sans-IO cores (sip, gb), media, outputs, health, the task set, the store, the
reports, the adapters, the whitelist and the device simulator: the packages on pyproject.toml's
strict list. In the store and the reports what must not regress is mostly the SQL typing (a model
attribute used in an expression outside `sqlmodel.col` is typed as its Python value: a bool where a
clause is due, a str without `in_`). The interfaces (api, cli, console) are not checked here: their
aiohttp glue is typed loosely upstream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRICT = ["gateway/sip", "gateway/gb", "gateway/media", "gateway/media_workers", "gateway/outputs", "gateway/health",
          "gateway/tasks.py", "gateway/store", "gateway/reports", "adapters", "whitelist", "devsim"]

pytest.importorskip("mypy", reason="mypy (the test extra) is not installed")


@pytest.mark.timeout(300)
def test_strict_packages_type_check_clean(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *STRICT],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout

