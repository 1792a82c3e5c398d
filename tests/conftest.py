"""Session-wide fixtures: a throwaway PostgreSQL server for the multi-node store tests."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test stale compiled code: after an edit to a module mypyc compiled, its old `.so`
    still shadows the source (gateway/native.py)."""
    from gateway import native

    stale = native.stale()
    if stale:
        pytest.exit(f"compiled before their source changed: {', '.join(stale)}. Rebuild with "
                    "`python setup.py build_ext --inplace` (or `pip install -e .`), or reinstall with "
                    "GBGATE_PURE=1 to run the sources", returncode=4)


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL started for this test session (Debian's postgresql package)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        if os.environ.get("CI"):
            pytest.fail("postgresql is required in CI (installed by .ci/run)")
        pytest.skip("postgresql is not installed")
    bindir = Path(bins[-1])
    # not under pytest's tmp dir: its parents are private to root, and PostgreSQL must not run as root
    base = Path(tempfile.mkdtemp(prefix="gbgate-pg-"))
    data = base / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
        os.chmod(base, 0o755)
    port = _free_tcp_port()
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
         f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
        check=True, capture_output=True,
    )
    try:
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "gbgate"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/gbgate"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- event loops
# The product runs on uvloop when installed (runtime.event_loop = auto) and on asyncio's loop when
# told to (or without uvloop). Tests of the code that moves bytes (SIP transports and endpoint, media
# ingest, outputs, adapters) run on both loops; interop tests with real peers run on the loop that
# ships (uvloop), and those whose subject is a transport itself (SIP over UDP/TCP, TLS, media ingest
# over UDP/TCP) on both; everything else on asyncio's. Issue 9: TCP signalling broke on uvloop alone.
BOTH_LOOPS = ("tests/gateway/sip/", "tests/gateway/media/", "tests/gateway/media_workers/", "tests/gateway/outputs/",
              "tests/adapters/",
              "tests/interop/test_sipp_signalling.py", "tests/interop/test_tls_admission.py",
              "tests/interop/test_media_sipp.py")
SHIPPED_LOOP_ONLY = ("tests/interop/",)


def _uvloop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    rel = Path(str(item.path)).resolve().relative_to(Path(str(config.rootpath)).resolve()).as_posix()
    uv = _uvloop_factory()
    moves_bytes = rel.startswith(BOTH_LOOPS) or rel.startswith(SHIPPED_LOOP_ONLY)
    if uv is None and moves_bytes and os.environ.get("CI"):
        raise pytest.UsageError("uvloop is required in CI: the product runs on it")
    if uv is not None and rel.startswith(BOTH_LOOPS):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uv}
    if uv is not None and rel.startswith(SHIPPED_LOOP_ONLY):
        return {"uvloop": uv}
    return {"asyncio": asyncio.new_event_loop}


# ---------------------------------------------------------------- external tools
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requires(*tools): external programs the test needs; skipped naming them when absent "
        "(failed in CI, where .ci/run installs every one)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Check a test's tools before any fixture starts a gateway or waits on a peer."""
    missing = [tool for mark in item.iter_markers("requires") for tool in mark.args if shutil.which(tool) is None]
    if missing:
        names = ", ".join(sorted(set(missing)))
        if os.environ.get("CI"):
            pytest.fail(f"{names} required in CI (installed by .ci/run)", pytrace=False)
        pytest.skip(f"needs {names}, not installed")
