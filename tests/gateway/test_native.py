"""The hot-path modules run compiled, and stale compiled code is noticed (gateway/native.py)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import pytest

from gateway import native


def test_every_listed_module_has_its_source() -> None:
    for m in native.MODULES:
        assert native.source_path(m).is_file(), m


def test_what_ships_is_what_is_tested() -> None:
    """CI installs as users do (`pip install -e .` compiles): every listed module must be loaded
    from its extension. Elsewhere an install made with GBGATE_PURE=1 (nothing compiled) skips."""
    code = native.summary()
    if code.compiled == 0 and not os.environ.get("CI"):
        pytest.skip("installed with GBGATE_PURE=1: the sources run")
    assert code.stale == ()
    assert code.compiled == len(native.MODULES), code.describe()
    for m in native.MODULES:
        assert importlib.import_module(m).__file__.endswith(".so"), m  # type: ignore[union-attr]


def _copy_sources(root: Path) -> None:
    for m in native.MODULES:
        dest = native.source_path(m, root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(native.source_path(m), dest)


def test_an_edited_source_is_reported_stale(tmp_path: Path) -> None:
    if native.summary().compiled == 0:
        pytest.skip("nothing compiled here: nothing can be stale")
    _copy_sources(tmp_path)
    (tmp_path / "gateway" / native.DIGESTS).write_text(json.dumps(native.build_digests(tmp_path)))
    assert native.stale(tmp_path) == []
    edited = native.MODULES[3]
    path = native.source_path(edited, tmp_path)
    path.write_text(path.read_text() + "\n# edited\n")
    assert native.stale(tmp_path) == [edited]
    summary_line = native.Summary(1, 2, (edited,)).describe()
    assert "STALE" in summary_line and edited in summary_line


def test_a_missing_digest_file_makes_every_compiled_module_stale(tmp_path: Path) -> None:
    """An extension without a record of its source (built by hand, or the record deleted) is not
    trusted."""
    _copy_sources(tmp_path)
    compiled = [s.module for s in native.states() if s.compiled]
    assert native.stale(tmp_path) == compiled
