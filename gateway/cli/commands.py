"""The `gbgate` command table: every command, its parser and its handler, and `main()`.

`COMMANDS` maps (command, action) to a handler taking one `Invocation`; `main()` parses the
command line, loads the settings, runs the handler (on the configured event loop when it is a
coroutine) and turns a CliError, ConfigError or other GbgateError into `gbgate: <reason>` on
standard error and exit status 2; anything else is one line and exit 1 (a traceback with -v);
Ctrl-C is 130.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

from gateway.cli import certs, node, ops, reports, sources, tokens, whitelist
from gateway.cli.common import EXIT_FAILURE, CliError, Handler, Invocation, run_async
from gateway.config import load_settings
from gateway.errors import ConfigError, GbgateError

# Sub-parsers, in the order `gbgate --help` lists them.
PARSERS: tuple[Callable[[Any], None], ...] = (
    node.add_parsers,       # serve, demo, config, db
    tokens.add_parsers,     # token, devices
    whitelist.add_parsers,  # whitelist, audit
    certs.add_parsers,
    reports.add_parsers,
    ops.add_parsers,        # contract, maintenance, ticket, policy, notice
    sources.add_parsers,    # source
)

COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("serve", None): node.serve,
    ("demo", None): node.demo,
    ("config", "show"): node.config_show,
    ("db", "upgrade"): node.db_upgrade,
    ("token", "create"): tokens.token_create,
    ("token", "list"): tokens.token_list,
    ("token", "revoke"): tokens.token_revoke,
    ("devices", "list"): tokens.devices_list,
    ("whitelist", "add"): whitelist.whitelist_add,
    ("whitelist", "list"): whitelist.whitelist_list,
    ("whitelist", "approve"): whitelist.whitelist_set_status,
    ("whitelist", "suspend"): whitelist.whitelist_set_status,
    ("whitelist", "revoke"): whitelist.whitelist_set_status,
    ("whitelist", "import"): whitelist.whitelist_import,
    ("whitelist", "export"): whitelist.whitelist_export,
    ("audit", "verify"): whitelist.audit_verify,
    ("audit", "list"): whitelist.audit_list,
    ("certs", "signing-key"): certs.signing_key,
    ("certs", "ca"): certs.create_ca,
    ("certs", "server"): certs.issue_server,
    ("certs", "device"): certs.issue_device,
    ("certs", "fingerprint"): certs.fingerprint,
    ("report", None): reports.report,
    ("contract", "import"): ops.contract_import,
    ("contract", "list"): ops.contract_list,
    ("maintenance", "add"): ops.maintenance_add,
    ("maintenance", "list"): ops.maintenance_list,
    ("ticket", "list"): ops.ticket_list,
    ("ticket", "show"): ops.ticket_show,
    ("ticket", "feedback"): ops.ticket_feedback,
    ("ticket", "confirm"): ops.ticket_confirm,
    ("ticket", "dispute"): ops.ticket_dispute,
    ("policy", "show"): ops.policy_show,
    ("policy", "set"): ops.policy_set,
    ("notice", "send"): ops.notice_send,
    ("source", "add"): sources.source_add,
    ("source", "list"): sources.source_list,
    ("source", "remove"): sources.source_remove,
    ("source", "import"): sources.source_import,
}

# Errors that are a one-line reason and exit 2; everything else is unexpected.
EXPECTED = (CliError, ConfigError, GbgateError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gbgate", description="GB/T 28181 gateway for social-resource cameras")
    p.add_argument("--config", help="TOML configuration file (or GBGATE_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for add in PARSERS:
        add(sub)
    return p


def handler_for(args: argparse.Namespace) -> Handler:
    return COMMANDS[(args.command, getattr(args, "action", None))]


def fail(exc: BaseException) -> int:
    print(f"gbgate: {exc}", file=sys.stderr)
    return EXIT_FAILURE


async def execute(inv: Invocation) -> int:
    """Run one command inside a running loop, a failure reported as `main()` reports it (tests, embedding)."""
    try:
        result = handler_for(inv.args)(inv)
        if inspect.isawaitable(result):
            return int(await result)
        return int(result)
    except EXPECTED as exc:
        return fail(exc)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(args.config)
        result = handler_for(args)(Invocation(settings=settings, args=args))
        if inspect.iscoroutine(result):
            return run_async(result, settings)
        return int(cast(int, result))
    except EXPECTED as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # last resort: one line, not a traceback
        if args.verbose:
            raise
        print(f"gbgate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
