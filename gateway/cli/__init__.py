"""The `gbgate` command (contract.md): serve, demo, whitelist, token, devices, report, certs, db, audit, ops.

    commands.py   the command table (command, action) → handler, the parser, main()
    common.py     CliError (the one error type), Invocation, with_store, until_signal, run_async
    node.py       serve, demo, config show, db upgrade
    tokens.py     token create|list|revoke, devices list
    whitelist.py  whitelist …, audit verify|list
    certs.py      certs signing-key|ca|server|device|fingerprint
    reports.py    report KIND --period P
    ops.py        contract, maintenance, ticket, policy, notice

Every subcommand exits non-zero with a one-line reason on failure.
"""

from gateway.cli.commands import main

__all__ = ["main"]
