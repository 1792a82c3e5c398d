"""`gbgate source add/list/remove/import` (issue 14 #3): admission, redaction, audit, sealed password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

CH = "34020000001310000501"
OTHER = "34020000001310000502"
PASSWORD = "Sup3r-s3cret-rtsp"


def gbgate(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """tests/gateway/cli/test_commands.py's helper, with this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBGATE_")}
    env.update(GBGATE_DATA_DIR=str(tmp), GBGATE_DATABASE__URL=f"sqlite:///{tmp / 'cli.db'}",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p))
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-sources")


def test_source_add_list_remove_import(tmp: Path) -> None:
    url = f"rtsp://admin:{PASSWORD}@192.168.50.7:554/Streaming/Channels/101"
    refused = gbgate(tmp, "source", "add", CH, url)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "NOT_ADMITTED" in refused.stderr and PASSWORD not in refused.stderr + refused.stdout
    assert gbgate(tmp, "whitelist", "add", CH, "--password", "x", "--ip", "192.168.50.0/24").returncode == 0
    wrong_host = gbgate(tmp, "source", "add", CH, f"rtsp://admin:{PASSWORD}@10.1.1.1/x")
    assert wrong_host.returncode == 2 and "SOURCE_NOT_ALLOWED" in wrong_host.stderr
    bad_id = gbgate(tmp, "source", "add", "3402", url)
    assert bad_id.returncode == 2 and "channel_id" in bad_id.stderr

    added = gbgate(tmp, "source", "add", CH, url, "--mode", "always_on", "--name", "gate")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"{CH} always_on rtsp://admin:***@192.168.50.7:554/Streaming/Channels/101"
    listed = gbgate(tmp, "source", "list")
    assert CH in listed.stdout and "admin:***@" in listed.stdout and PASSWORD not in listed.stdout
    as_json = gbgate(tmp, "source", "list", "--json")
    assert '"has_password": true' in as_json.stdout and PASSWORD not in as_json.stdout

    csv_file = tmp / "sources.csv"
    csv_file.write_text(f"channel_id,url,mode,name\n{OTHER},rtsp://192.168.50.8/live,on_demand,two\n"
                        f"{CH}9,rtsp://192.168.50.9/live,,bad id\n", encoding="utf-8")
    gbgate(tmp, "whitelist", "add", OTHER, "--password", "x", "--ip", "192.168.50.8")
    imported = gbgate(tmp, "source", "import", str(csv_file))
    assert imported.returncode == 1 and "imported 1 sources, 1 refused" in imported.stdout
    assert "line 3" in imported.stderr

    audit = gbgate(tmp, "audit", "list", "--limit", "50").stdout
    assert "source_refused" in audit and "source_add" in audit
    assert gbgate(tmp, "source", "remove", CH).returncode == 0
    assert gbgate(tmp, "source", "remove", CH).returncode == 2
    assert "source_remove" in gbgate(tmp, "audit", "list").stdout
    assert gbgate(tmp, "audit", "verify").returncode == 0
    assert PASSWORD.encode() not in (tmp / "cli.db").read_bytes()
