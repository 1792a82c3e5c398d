"""`gbgate contract|maintenance|ticket|policy|notice` run in-process on a migrated SQLite store.

The sub-parsers are mounted on a parser of our own, the way gateway/cli/commands.py mounts them, and
`execute` (the command table, failures reported as `gbgate` reports them) gets the same settings
object `gbgate` would build.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.cli import ops
from gateway.cli.commands import execute
from gateway.cli.common import Invocation
from gateway.config import load_settings
from gateway.health.timeline import UTC8
from gateway.reports.demo_history import seed_history
from gateway.store.db import make_engine, make_sessionmaker
from gateway.store.migrate import upgrade

IDS = [(f"3402000000111000000{i}", f"3402000000132000000{i}") for i in range(1, 6)]
SEEDED_AT = datetime(2026, 11, 5, 12, tzinfo=UTC8).timestamp()
TICKET = "T20261026-0001"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gbgate")
    ops.add_parsers(p.add_subparsers(dest="command", required=True))
    return p


@pytest.fixture
async def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    settings = load_settings(env={"GBGATE_DATABASE__URL": url, "GBGATE_DATA_DIR": str(tmp_path)})
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    await seed_history(make_sessionmaker(engine), IDS, now=SEEDED_AT)
    await engine.dispose()
    capsys.readouterr()

    async def run(*argv: str, settings_: Any = None) -> tuple[int, str, str]:
        args = parser().parse_args(argv)
        assert args.command in ops.GROUPS
        code = await execute(Invocation(settings=settings_ or settings, args=args, clock=lambda: SEEDED_AT))
        out, err = capsys.readouterr()
        return code, out, err

    run.settings = settings  # type: ignore[attr-defined]
    run.tmp = tmp_path  # type: ignore[attr-defined]
    return run


async def test_contract_import_and_list(cli: Any) -> None:
    f = cli.tmp / "vendors.csv"
    f.write_text("厂商编号,厂商名称,类型\nV1,科海,rental\n", encoding="utf-8")
    assert await cli("contract", "import", "vendors", str(f)) == (0, f"imported 1 vendors row(s) from {f}\n", "")
    code, out, _ = await cli("contract", "list", "vendors", "--json")
    assert code == 0 and {r["id"] for r in json.loads(out)} == {"V1", "demo-vendor"}


async def test_contract_import_bad_rows_one_line_and_nothing_written(cli: Any) -> None:
    f = cli.tmp / "channels.csv"
    f.write_text(
        "channel_id,vendor_id\n34020000001320000011,demo-vendor\n3402000000132000001X,demo-vendor\n"
        "34020000001320000013,V404\n",
        encoding="utf-8",
    )
    code, out, err = await cli("contract", "import", "channels", str(f))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "nothing imported, 2 error(s)" in err
    assert "line 3, field channel_id" in err and "line 4, field vendor_id" in err
    _, listed, _ = await cli("contract", "list", "channels", "--json")
    assert "34020000001320000011" not in {r["channel_id"] for r in json.loads(listed)}
    code, _, err = await cli("contract", "import", "channels", str(cli.tmp / "missing.csv"))
    assert code == 2 and err.startswith("gbgate: ") and err.count("\n") == 1


async def test_maintenance_add_list_and_overlap(cli: Any) -> None:
    subject = f"channel:{IDS[0][1]}"
    code, out, _ = await cli(
        "maintenance",
        "add",
        subject,
        "--start",
        "2026-12-01 09:00",
        "--end",
        "2026-12-01 12:00",
        "--reason",
        "换交换机",
    )
    assert code == 0 and out.startswith("maintenance window ") and "2026-12-01 09:00 → 2026-12-01 12:00" in out
    code, _, err = await cli("maintenance", "add", subject, "--start", "2026-12-01 11:00", "--end", "2026-12-01 13:00")
    assert code == 2 and "start: overlaps maintenance window" in err and err.count("\n") == 1
    code, _, err = await cli("maintenance", "add", subject, "--start", "tomorrow", "--end", "2026-12-01 13:00")
    assert code == 2 and "--start" in err
    code, out, _ = await cli("maintenance", "list", "--subject", subject, "--json")
    windows = json.loads(out)
    assert [(w["reason"], w["start_ts"]) for w in windows] == [
        ("换交换机", datetime(2026, 12, 1, 9, tzinfo=UTC8).timestamp())
    ]
    assert windows[0]["declared_by"].startswith("cli:")


async def test_ticket_list_feedback_dispute_confirm(cli: Any) -> None:
    code, out, _ = await cli("ticket", "list", "--vendor", "demo-vendor")
    assert code == 0 and TICKET in out and "repaired" in out
    code, _, err = await cli("ticket", "feedback", TICKET, "--cause", "x", "--vendor", "other-vendor")
    assert code == 2 and "unknown ticket" in err
    code, _, err = await cli("ticket", "feedback", "T20990101-0001", "--cause", "x")
    assert code == 2 and "unknown ticket" in err
    code, out, _ = await cli("ticket", "feedback", TICKET, "--cause", "熔接完成", "--actual-repair", "2026-10-27 14:15")
    assert (code, out) == (0, f"{TICKET}: repaired\n")
    code, _, err = await cli("ticket", "dispute", TICKET, "--reason", " ")
    assert code == 2 and "needs a reason" in err
    assert (await cli("ticket", "dispute", TICKET, "--reason", "时间不符"))[1] == f"{TICKET}: disputed\n"
    code, _, err = await cli("ticket", "confirm", TICKET)
    assert code == 2 and "cannot confirm when disputed" in err
    await cli("ticket", "feedback", TICKET, "--actual-repair", "2026-10-27 14:05")
    assert (await cli("ticket", "confirm", TICKET))[1] == f"{TICKET}: confirmed\n"
    code, out, _ = await cli("ticket", "show", TICKET)
    detail = json.loads(out)
    assert detail["status"] == "confirmed" and detail["vendor_cause"] == "熔接完成"
    assert [h["action"] for h in detail["history"]] == ["repair", "dispute", "repair", "confirm"]
    assert detail["repaired_ts"] == datetime(2026, 10, 27, 14, 5, tzinfo=UTC8).timestamp()
    _, out, _ = await cli("ticket", "list", "--status", "confirmed", "--json")
    assert [t["id"] for t in json.loads(out)] == [TICKET]


async def test_policy_show_and_set(cli: Any) -> None:
    code, out, _ = await cli("policy", "show")
    assert code == 0 and out.startswith("* v1  from 2020-01-01")
    f = cli.tmp / "policy.json"
    f.write_text(json.dumps({"grace_hours": 4, "rate_per_fault_hour": "3.50"}), encoding="utf-8")
    code, out, _ = await cli("policy", "set", str(f), "--effective-from", "2027-01-01")
    assert (code, out) == (0, "policy default version 2, in force from 2027-01-01\n")
    _, out, _ = await cli("policy", "show", "--json")
    shown = json.loads(out)
    assert [v["version"] for v in shown["versions"]] == [1, 2] and shown["current_version"] == 1
    f.write_text(json.dumps({"grace_hours": -1}), encoding="utf-8")
    code, _, err = await cli("policy", "set", str(f), "--effective-from", "2027-02-01")
    assert code == 2 and "grace_hours" in err and err.count("\n") == 1
    code, _, err = await cli("policy", "set", str(f), "--effective-from", "next year")
    assert code == 2 and "--effective-from" in err
    f.write_text("{not json", encoding="utf-8")
    code, _, err = await cli("policy", "set", str(f), "--effective-from", "2027-02-01")
    assert code == 2 and "not valid JSON" in err


async def test_notice_send(cli: Any, aiohttp_server: Any) -> None:
    code, _, err = await cli("notice", "send", "--date", "2026-10-26")
    assert code == 2 and "no webhook configured" in err
    received: list[dict[str, Any]] = []

    async def robot(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    app = web.Application()
    app.router.add_post("/robot", robot)
    server = await aiohttp_server(app)
    s = cli.settings
    settings = dataclasses.replace(s, report=dataclasses.replace(s.report, webhook_url=str(server.make_url("/robot"))))
    code, out, _ = await cli("notice", "send", "--date", "2026-10-26", settings_=settings)
    assert (code, out) == (0, "notice 2026-10-26 sent to all\n")
    assert received[0]["msgtype"] == "markdown" and "演示通道 3" in received[0]["markdown"]["text"]
    code, _, err = await cli("notice", "send", "--date", "26/10", settings_=settings)
    assert code == 2 and "--date" in err
    dead = dataclasses.replace(s, report=dataclasses.replace(s.report, webhook_url="http://127.0.0.1:9/robot"))
    code, _, err = await cli("notice", "send", "--date", "2026-10-26", settings_=dead)
    assert code == 2 and "to all failed" in err and err.count("\n") == 1
