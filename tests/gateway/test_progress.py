"""Progress for long CLI operations (issue 15): stderr only, on a terminal or with --progress."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from gateway.progress import ProgressLine

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_line_overwrites_itself_is_throttled_and_ends_with_newline() -> None:
    out, clock = io.StringIO(), Clock()
    p = ProgressLine(out, "import", enabled=True, interval=0.1, clock=clock)
    p("reading list.csv", 0, 0)
    p("writing", 10, 100)                    # same instant: throttled
    clock.t = 0.2
    p("writing", 50, 100)
    p("writing", 100, 100)                   # the final count is always shown
    p.finish()
    assert out.getvalue() == ("\rimport: reading list.csv\rimport: writing 50/100 (50%)"
                              "\rimport: writing 100/100 (100%)\n")


def test_disabled_and_not_a_terminal_print_nothing() -> None:
    out = io.StringIO()
    p = ProgressLine.for_stream(out, "import")            # StringIO is not a TTY
    p("writing", 1, 1)
    p.finish()
    assert out.getvalue() == ""
    forced = ProgressLine.for_stream(out, "import", force=True)
    forced("writing", 1, 1)
    forced.finish()
    assert out.getvalue() == "\rimport: writing 1/1 (100%)\n"


def _gbgate(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBGATE_")}
    env.update(GBGATE_DATA_DIR=str(tmp), GBGATE_DATABASE__URL=f"sqlite:///{tmp / 'cli.db'}",
               PYTHONPATH=str(ROOT))                 # this checkout's code, whatever is installed
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=60)


def test_cli_import_stdout_unchanged_progress_on_stderr(tmp_path: Path) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text("device_id,name,password\n" + "".join(
        f"3402000000132000010{i},cam {i},pw{i}\n" for i in range(3)), encoding="utf-8")
    quiet = _gbgate(tmp_path, "whitelist", "import", str(csv))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "imported 3 entries (3 approved)\n" and quiet.stderr == ""
    shown = _gbgate(tmp_path, "whitelist", "import", str(csv), "--progress")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "imported 3 entries (3 approved)\n"
    assert "import: writing 3/3 (100%)" in shown.stderr and shown.stderr.endswith("\n")
    verify = _gbgate(tmp_path, "audit", "verify")
    assert verify.returncode == 0 and verify.stdout == "audit chain OK: 2 records\n"
