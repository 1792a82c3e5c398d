"""The command table and the parser agree: every command the parser accepts has exactly one handler."""

from __future__ import annotations

import argparse

import pytest

from gateway.cli.commands import COMMANDS, build_parser, execute
from gateway.cli.common import CliError, Invocation, reasons


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [path]
    return [leaf for a in subs for name, sp in a.choices.items() for leaf in leaves(sp, (*path, name))]


def test_every_parsed_command_has_one_handler_and_no_handler_is_unreachable() -> None:
    parsed = {(leaf[0], leaf[1] if len(leaf) > 1 else None) for leaf in leaves(build_parser())}
    assert parsed == set(COMMANDS)


def test_reasons_translates_foreign_errors_into_the_one_cli_error() -> None:
    with pytest.raises(CliError, match=r"^disk full$"), reasons(OSError):
        raise OSError("disk full")
    with pytest.raises(KeyError), reasons(OSError):
        raise KeyError("not translated")


async def test_execute_reports_a_cli_error_as_one_line_and_status_2(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["certs", "fingerprint", f"{tmp_path}/missing.pem"])
    code = await execute(Invocation(settings=None, args=args))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("gbgate: ") and "missing.pem" in err and err.count("\n") == 1
