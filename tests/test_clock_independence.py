"""The date-sensitive suites pass whatever the wall clock says (issue 9).

Reports, tickets, notices and policy versions take "now" from an injected clock; a test that read
the wall clock instead would pass on the day it was written and fail on another. This runs those
suites again under libfaketime (Debian `faketime`) on two awkward days: New Year's Day just after
midnight, and a leap day late in the evening (also the last day of its month). Monotonic time is left
alone so event-loop timers behave. Tests that spawn other programs (Chromium, a killed gateway)
are left out: the preloaded library follows them into those children and breaks their waits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = [
    "tests/gateway/reports",
    "tests/gateway/api",
    "tests/gateway/cli/test_ops.py",
    "tests/gateway/health",
    "tests/whitelist",
]
SPAWNING = [
    "tests/gateway/reports/test_report_render.py::test_chromium_renders_the_html_report",
    "tests/gateway/health/test_journal_crash.py",
]
#: New Year's Day just after midnight; a leap day late in the evening (the last day of its month,
#: so a month boundary, a year's 366th day and "tomorrow" being another month all at once).
DAYS = ["2028-01-01 00:05:00", "2028-02-29 23:30:00"]

pytestmark = [
    pytest.mark.requires("faketime"),
    pytest.mark.skipif(bool(os.environ.get("GBGATE_FAKED_CLOCK")), reason="already inside a faked clock"),
]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("day", DAYS)
def test_date_sensitive_suites_pass_on_another_day(day: str) -> None:
    env = {**os.environ, "FAKETIME_DONT_FAKE_MONOTONIC": "1", "GBGATE_FAKED_CLOCK": day, "TZ": "UTC"}
    ignore = [a for path in SPAWNING for a in (("--deselect", path) if "::" in path else ("--ignore", path))]
    proc = subprocess.run(
        ["faketime", "-f", f"@{day}", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-o", "addopts=--import-mode=importlib", *ignore, *SUITES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=880,
    )
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, f"with the clock at {day}:\n{tail}"
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
