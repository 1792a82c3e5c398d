"""The import rules of architecture.md §2, checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "whitelist", "adapters", "certs")

# Sans-IO cores: no asyncio, sockets, aiohttp, av, sqlmodel/sqlalchemy.
CORE_MODULES = (
    "gateway/sip/message.py",
    "gateway/sip/address.py",
    "gateway/sip/framer.py",
    "gateway/sip/digest.py",
    "gateway/sip/transaction.py",
    "gateway/gb/ids.py",
    "gateway/gb/manscdp.py",
    "gateway/gb/catalog.py",
    "gateway/gb/sdp.py",
    "gateway/gb/ssrc.py",
    "gateway/gb/presence.py",
    "gateway/media/rtp.py",
    "gateway/media/rfc4571.py",
    "gateway/media/reorder.py",
    "gateway/media/ps.py",
    "gateway/media/psmux.py",
    "gateway/media/flv.py",
    "gateway/media/nal.py",
    "gateway/health/timeline.py",
    "whitelist/decide.py",
    "whitelist/lockout.py",
    "whitelist/audit.py",
)
IO_MODULES = {"asyncio", "socket", "aiohttp", "av", "sqlmodel", "sqlalchemy", "selectors", "cv2", "aiortc"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_whitelist_and_certs_never_import_gateway() -> None:
    offenders = []
    for package in ("whitelist", "certs"):
        for path in python_files(package):
            for name in imports_of(path):
                if name == "gateway" or name.startswith(("gateway.", "adapters")):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_only_composition_root_imports_adapters() -> None:
    allowed = {"gateway/app.py", "gateway/cli.py", "gateway/demo.py"}
    offenders = []
    for path in python_files("gateway"):
        rel = str(path.relative_to(ROOT))
        if rel in allowed:
            continue
        for name in imports_of(path):
            if name == "adapters" or name.startswith("adapters."):
                offenders.append(f"{rel} imports {name}")
    assert offenders == []


def test_adapters_do_not_reach_into_interfaces_or_store() -> None:
    forbidden = ("gateway.api", "gateway.console", "gateway.store", "gateway.app", "gateway.cli", "gateway.reports")
    offenders = []
    for path in python_files("adapters"):
        for name in imports_of(path):
            if name.startswith(forbidden):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_cores_are_sans_io() -> None:
    offenders = []
    for rel in CORE_MODULES:
        path = ROOT / rel
        if not path.exists():
            continue
        for name in imports_of(path):
            if name.split(".")[0] in IO_MODULES:
                offenders.append(f"{rel} imports {name}")
    assert offenders == []


@pytest.mark.parametrize("package", ["gateway/sip", "gateway/gb", "gateway/media", "gateway/health"])
def test_core_packages_do_not_import_services(package: str) -> None:
    """Dependencies point inward: cores never import api/console/reports/app."""
    forbidden = ("gateway.api", "gateway.console", "gateway.reports", "gateway.app", "gateway.cli", "adapters")
    offenders = []
    for path in sorted((ROOT / package).glob("*.py")):
        for name in imports_of(path):
            if name.startswith(forbidden):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_checker_catches_a_breach(tmp_path: Path) -> None:
    """The walker itself must see a forbidden import (so the tests above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom gateway.sip import message\n")
    assert {"asyncio", "gateway.sip"} <= imports_of(bad)
