"""whitelist never imports gateway or adapters; decide/lockout/audit (the cores) stay free of I/O."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "whitelist"
CORES = {"decide.py", "lockout.py", "audit.py", "model.py", "errors.py"}
IO_MODULES = ("asyncio", "socket", "sqlmodel", "sqlalchemy", "aiohttp", "aiosqlite", "av")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def test_never_imports_gateway() -> None:
    files = list(ROOT.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        for name in _imports(path):
            assert not name.startswith(("gateway", "adapters", "certs")), f"{path.name} imports {name}"


def test_cores_are_sans_io() -> None:
    for path in ROOT.glob("*.py"):
        if path.name in CORES:
            for name in _imports(path):
                assert not name.startswith(IO_MODULES), f"{path.name} imports {name}"
