"""Every "cannot" in docs/threat-model.md names tests that exist: the proof cannot rot unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cited_tests() -> list[tuple[str, str]]:
    """(file, test name) for every `tests/x.py::name` and following `::name` cell of the document."""
    out: list[tuple[str, str]] = []
    last = ""
    for cell in re.findall(r"`([^`]+)`", (ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8")):
        if cell.startswith("tests/"):
            last, _, name = cell.partition("::")
            out.append((last, name))
        elif cell.startswith("::") and last:
            out.append((last, cell[2:]))
    return out


def test_threat_model_cites_tests() -> None:
    assert len(cited_tests()) >= 20


def test_every_cited_test_exists() -> None:
    missing = []
    for path, name in cited_tests():
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif name and not re.search(rf"^\s*(async )?def {re.escape(name.split('[')[0])}\(", file.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert missing == []
