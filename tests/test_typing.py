"""mypy (configured in pyproject.toml) finds nothing in the typed packages.

Strict covers the sans-IO cores (sip, gb), media, outputs, health, the task set, the adapters and the
whitelist: the packages on pyproject.toml's strict list. The store, the reports and the device
simulator are not on that list, so they are checked with the default settings it leaves them: what
they must not regress is mostly the SQL typing (a model attribute used in an expression outside
`sqlmodel.col` is typed as its Python value: a bool where a clause is due, a str without `in_`),
and the defaults catch that. The interfaces (api, cli, console) are not checked here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRICT = ["gateway/sip", "gateway/gb", "gateway/media", "gateway/media_workers", "gateway/outputs", "gateway/health",
          "gateway/tasks.py", "adapters", "whitelist"]
DEFAULT = ["gateway/store", "gateway/reports", "devsim"]

pytest.importorskip("mypy", reason="mypy (the test extra) is not installed")


@pytest.mark.timeout(300)
def test_strict_packages_type_check_clean(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *STRICT],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout


@pytest.mark.timeout(300)
def test_default_checked_packages_type_check_clean(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *DEFAULT],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success: no issues found" in proc.stdout
