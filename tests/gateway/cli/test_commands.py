"""The `gbgate` command as scripts use it (contract.md): outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

DEV = "34020000001320000301"


def gbgate(tmp: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBGATE_")}
    env["GBGATE_DATA_DIR"] = str(tmp)
    env["GBGATE_DATABASE__URL"] = f"sqlite:///{tmp / 'cli.db'}"
    env["GBGATE_WHITELIST__SIGNING_KEY"] = str(tmp / "keys" / "sign.pem")
    env["GBGATE_WHITELIST__SIGNING_PUB"] = str(tmp / "keys" / "sign.pub.pem")
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=tmp, env=env, capture_output=True, text=True, input=stdin,
        timeout=60,
    )


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


def test_config_show_masks_and_invalid_value_fails(tmp: Path) -> None:
    env_cfg = tmp / "g.toml"
    env_cfg.write_text('[sip]\ndefault_password = "topsecret"\n', encoding="utf-8")
    shown = gbgate(tmp, "--config", str(env_cfg), "config", "show")
    assert shown.returncode == 0 and "topsecret" not in shown.stdout and "***" in shown.stdout
    bad = tmp / "bad.toml"
    bad.write_text("[sip]\nport = 99999\n", encoding="utf-8")
    res = gbgate(tmp, "--config", str(bad), "config", "show")
    assert res.returncode != 0
    assert res.stderr.strip().count("\n") == 0 and "sip.port" in res.stderr


def test_token_create_prints_only_the_token(tmp: Path) -> None:
    res = gbgate(tmp, "token", "create", "--role", "security", "--name", "sec")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("gbg_") and res.stdout.count("\n") == 1
    bad = gbgate(tmp, "token", "create", "--role", "king")
    assert bad.returncode != 0


def test_token_expiry_list_and_revoke(tmp: Path) -> None:
    """Issue 10 item 11: tokens expire, are listed without secrets, and can be revoked (audited)."""
    made = gbgate(tmp, "token", "create", "--role", "ops", "--name", "nightly", "--expires", "2d")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    never = gbgate(tmp, "token", "create", "--role", "platform", "--name", "upper", "--expires", "never")
    assert never.returncode == 0
    bad = gbgate(tmp, "token", "create", "--role", "ops", "--expires", "5 weeks")
    assert bad.returncode == 2 and "--expires" in bad.stderr and bad.stderr.count("\n") == 1
    listed = gbgate(tmp, "token", "list", "--json")
    assert listed.returncode == 0 and token not in listed.stdout and "hash" not in listed.stdout
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    nightly = rows["nightly"]
    assert nightly["state"] == "active" and nightly["expires_at"] is not None
    from datetime import datetime

    lifetime = datetime.fromisoformat(nightly["expires_at"]) - datetime.fromisoformat(nightly["created_at"])
    assert abs(lifetime.total_seconds() - 2 * 86_400) <= 1
    assert rows["upper"]["expires_at"] is None
    revoked = gbgate(tmp, "token", "revoke", str(nightly["id"]), "--reason", "leaked")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    again = {r["name"]: r for r in json.loads(gbgate(tmp, "token", "list", "--json").stdout)}
    assert again["nightly"]["state"] == "revoked"
    missing = gbgate(tmp, "token", "revoke", "99999")
    assert missing.returncode == 2 and "token_id" in missing.stderr
    db = sqlite3.connect(tmp / "cli.db")
    actions = [r[0] for r in db.execute("select action from whitelist_audit where action like 'token_%'")]
    db.close()
    assert "token_revoke" in actions and actions.count("token_create") >= 2


def test_whitelist_lifecycle_and_audit(tmp: Path) -> None:
    added = gbgate(tmp, "whitelist", "add", DEV, "--password", "pw1", "--ip", "10.0.0.0/24", "--name", "东门")
    assert added.returncode == 0
    listed = gbgate(tmp, "whitelist", "list", "--json")
    entries = json.loads(listed.stdout)
    entry = next(e for e in entries if e["device_id"] == DEV)
    assert entry["status"] == "approved" and entry["allowed_sources"] == ["10.0.0.0/24"]
    assert "pw1" not in listed.stdout and "ha1" not in listed.stdout
    for action, status in (("suspend", "suspended"), ("approve", "approved"), ("revoke", "revoked")):
        res = gbgate(tmp, "whitelist", action, DEV, "--reason", "test")
        assert res.returncode == 0 and status in res.stdout
    assert "revoked" in gbgate(tmp, "whitelist", "list", "--status", "revoked").stdout
    verify = gbgate(tmp, "audit", "verify")
    assert verify.returncode == 0 and "OK" in verify.stdout


def test_bad_input_is_one_line_and_changes_nothing(tmp: Path) -> None:
    res = gbgate(tmp, "whitelist", "add", "123", "--password", "x")
    assert res.returncode == 2 and "device_id" in res.stderr and res.stderr.count("\n") == 1
    res = gbgate(tmp, "whitelist", "add", DEV, "--password", "x", "--ip", "10.0.0.1/33")
    assert res.returncode == 2 and "--ip" in res.stderr
    before = gbgate(tmp, "whitelist", "list", "--json").stdout
    csv = tmp / "bulk.csv"
    csv.write_text("device_id,name,password,ip\n34020000001320000401,a,p,\n3402000000132000040X,b,p,\n"
                   "34020000001320000403,c,p,300.1.1.1\n", encoding="utf-8")
    res = gbgate(tmp, "whitelist", "import", str(csv))
    assert res.returncode == 2
    assert "line 3" in res.stderr and "line 4" in res.stderr
    assert gbgate(tmp, "whitelist", "list", "--json").stdout == before


def test_signed_export_import_roundtrip_and_tamper(tmp: Path) -> None:
    assert gbgate(tmp, "certs", "signing-key").returncode == 0
    gbgate(tmp, "whitelist", "add", "34020000001320000501", "--password", "p5")
    bundle = tmp / "wl.json"
    res = gbgate(tmp, "whitelist", "export", "--signed", "--out", str(bundle))
    assert res.returncode == 0, res.stderr
    data = json.loads(bundle.read_text())
    assert "signature" in json.dumps(data)
    assert bundle.stat().st_mode & 0o777 == 0o600          # HA1s: private from creation (issue 10 item 12)
    plain = tmp / "wl-plain.json"
    assert gbgate(tmp, "whitelist", "export", "--out", str(plain)).returncode == 0
    assert plain.stat().st_mode & 0o777 == 0o600
    assert (tmp / "cli.db").stat().st_mode & 0o777 == 0o600
    ok = gbgate(tmp, "whitelist", "import", str(bundle), "--public-key", str(tmp / "keys" / "sign.pub.pem"))
    assert ok.returncode == 0, ok.stderr
    import base64

    doc = json.loads(bundle.read_text())
    payload = base64.b64decode(doc["payload"]).replace(b"34020000001320000501", b"34020000001320000599")
    doc["payload"] = base64.b64encode(payload).decode()
    tampered = tmp / "wl-bad.json"
    tampered.write_text(json.dumps(doc))
    res = gbgate(tmp, "whitelist", "import", str(tampered), "--public-key", str(tmp / "keys" / "sign.pub.pem"))
    assert res.returncode == 2 and "signature" in res.stderr.lower()
    assert "34020000001320000599" not in gbgate(tmp, "whitelist", "list").stdout


def test_unsigned_bundle_import_is_refused(tmp: Path) -> None:
    """An unsigned bundle carries statuses and HA1s nobody vouches for (issue 10 item 1)."""
    doc = {"format": "gbgate-whitelist", "version": 1, "entries": [
        {"device_id": "34020000001320000551", "status": "approved"}], "rules": []}
    f = tmp / "unsigned.json"
    f.write_text(json.dumps(doc))
    res = gbgate(tmp, "whitelist", "import", str(f))
    assert res.returncode == 2 and "unsigned bundle refused" in res.stderr
    assert "34020000001320000551" not in gbgate(tmp, "whitelist", "list").stdout


def test_audit_verify_names_the_edited_record(tmp: Path) -> None:
    gbgate(tmp, "whitelist", "add", "34020000001320000601", "--password", "p6")
    db = sqlite3.connect(tmp / "cli.db")
    seq = db.execute("select max(seq) from whitelist_audit").fetchone()[0]
    db.execute("update whitelist_audit set actor = 'someone-else' where seq = ?", (seq,))
    db.commit()
    db.close()
    res = gbgate(tmp, "audit", "verify")
    assert res.returncode == 1 and f"record {seq}" in res.stderr


def test_devices_list_and_db_upgrade(tmp: Path) -> None:
    assert gbgate(tmp, "db", "upgrade").returncode == 0
    res = gbgate(tmp, "devices", "list")
    assert res.returncode == 0 and "of 0 online" in res.stdout
    assert json.loads(gbgate(tmp, "devices", "list", "--json").stdout) == []


def test_certs_ca_server_device(tmp: Path) -> None:
    assert gbgate(tmp, "certs", "ca").returncode == 0
    server = gbgate(tmp, "certs", "server", "--host", "127.0.0.1", "--host", "gbgate.local")
    assert server.returncode == 0, server.stderr
    assert (tmp / "certs" / "gateway.crt").exists() and (tmp / "certs" / "gateway.key").exists()
    dev = gbgate(tmp, "certs", "device", DEV)
    assert dev.returncode == 0, dev.stderr
    fp = dev.stdout.split("fingerprint ")[1].strip()
    shown = gbgate(tmp, "certs", "fingerprint", str(tmp / "certs" / "devices" / f"{DEV}.crt"))
    assert shown.stdout.strip() == fp and len(fp) == 64
    assert gbgate(tmp, "certs", "device", "123").returncode == 2


def test_source_modes_spelled_in_the_cli_match_the_store() -> None:
    """The CLI spells PullMode's values so that `gbgate --help` does not import SQLAlchemy."""
    from gateway.cli.sources import MODES
    from gateway.store.sources import PullMode

    assert tuple(m.value for m in PullMode) == MODES and MODES[0] == PullMode.ON_DEMAND.value
