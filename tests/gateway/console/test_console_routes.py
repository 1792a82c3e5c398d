"""The console's routes and static files: served with the right types and headers, nothing fetched
from outside the closed network, no path escapes, every module and every i18n key present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.api import ROUTE_TABLES, build_web_app
from gateway.api.services import Services
from gateway.config import load_settings
from gateway.console import STATIC_DIR, routes

FILES = sorted(p for p in STATIC_DIR.iterdir() if p.is_file())
JS = [p for p in FILES if p.suffix == ".js"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    """The console mounted the way the lead wires it: next to the API, behind its middlewares."""
    services = Services(settings=load_settings(env={}), repo=None, tokens=None)
    extra = [] if routes in ROUTE_TABLES else [routes]
    return await aiohttp_client(build_web_app(services, extra_routes=extra))


async def test_index_is_chinese_html_with_strict_headers(client: Any) -> None:
    resp = await client.get("/")  # no token needed for the page itself
    assert resp.status == 200
    assert resp.content_type == "text/html" and resp.charset == "utf-8"
    html = await resp.text()
    assert '<html lang="zh-CN">' in html
    assert '<script type="module" src="/console/static/app.js">' in html
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["Referrer-Policy"] == "no-referrer"  # stream URLs carry ?token=
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("app.js", "text/javascript"), ("console.css", "text/css"), ("icon.svg", "image/svg+xml"),
     ("index.html", "text/html")],
)
async def test_static_content_types(client: Any, name: str, content_type: str) -> None:
    resp = await client.get(f"/console/static/{name}")
    assert resp.status == 200
    assert resp.content_type == content_type
    assert await resp.read() == (STATIC_DIR / name).read_bytes()


async def test_every_static_file_and_module_import_is_served(client: Any) -> None:
    referenced: set[str] = set()
    for p in JS:
        referenced.update(re.findall(r'from\s+"\./([\w.-]+)"', p.read_text()))
    html = (STATIC_DIR / "index.html").read_text()
    referenced.update(re.findall(r'/console/static/([\w.-]+)', html))
    assert {"app.js", "console.css", "i18n.js", "api.js", "whep.js"} <= referenced
    for name in referenced | {p.name for p in FILES}:
        resp = await client.get(f"/console/static/{name}")
        assert resp.status == 200, name
        if name.endswith(".js"):
            assert resp.content_type == "text/javascript", name  # module scripts need a JS type


@pytest.mark.parametrize(
    "path",
    ["/console/static/..%2f__init__.py", "/console/static/%2e%2e%2f__init__.py", "/console/static/__init__.py",
     "/console/static/.hidden", "/console/static/nope.js", "/console/static/", "/console/static/..%5c__init__.py"],
)
async def test_no_escape_from_static(client: Any, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404
    assert b"import" not in await resp.read()


def test_no_external_urls() -> None:
    """The police network is closed: no CDN, fonts or scripts from anywhere but this origin."""
    url = re.compile(r"(?:https?|wss?)://([^/\s\"'`)<>]+)", re.I)
    for p in FILES:
        text = p.read_text(encoding="utf-8")
        for m in url.finditer(text):
            host = m.group(1).split(":")[0] if not m.group(1).startswith("[") else m.group(1).split("]")[0] + "]"
            if host in LOCAL_HOSTS:
                continue
            if text[max(0, m.start() - 7):m.start()] == 'xmlns="' and host == "www.w3.org":
                continue  # an XML namespace name, never fetched
            pytest.fail(f"{p.name}: external URL {m.group(0)}")
        # protocol-relative references would also leave the network
        assert not re.search(r"""(?:src|href|action)\s*=\s*["']//|url\(\s*["']?//|from\s+["']//|import\(\s*["']//""",
                             text), p.name
        assert "@import" not in text or p.suffix != ".css"


def _strings() -> dict[str, tuple[str, str]]:
    src = (STATIC_DIR / "i18n.js").read_text(encoding="utf-8")
    pairs = re.findall(r'"([\w.-]+)":\s*\[\s*"((?:[^"\\]|\\.)*)",\s*"((?:[^"\\]|\\.)*)"\s*\]', src, re.S)
    return {k: (zh, en) for k, zh, en in pairs}


def test_every_i18n_key_exists_in_both_languages() -> None:
    table = _strings()
    assert len(table) > 100
    assert all(zh and en for zh, en in table.values())
    assert table["online"] == ("在线", "Online") and table["forbidden"] == ("无权限", "Not permitted")
    used: set[str] = set(re.findall(r'data-i18n="([^"]+)"', (STATIC_DIR / "index.html").read_text()))
    for p in JS:
        used.update(re.findall(r'\bt\("([^"]+)"', p.read_text()))
    # keys built at run time: t(`wl.${status}`), t(`rp.${kind}`), t(`f.${field}`)
    used.update(f"wl.{s}" for s in ("pending", "approved", "suspended", "revoked", "approve", "suspend", "revoke"))
    used.update(f"rp.{k}" for k in ("daily-faults", "availability", "link-fees", "deductions", "reconciliation",
                                    "annual-offline", "day", "month", "year"))
    used.update(f"f.{f}" for f in ("device_id", "password", "ip", "name", "site", "link", "max_channels"))
    # t(`dev.kind.${n.kind}`): every IdKind an org node of the catalog tree can have
    used.update(f"dev.kind.{k}" for k in ("business_group", "virtual_org", "region", "device", "platform", "other"))
    missing = sorted(used - table.keys())
    assert not missing, f"i18n keys used but not defined: {missing}"


def test_report_kinds_match_the_contract() -> None:
    src = (STATIC_DIR / "reports.js").read_text()
    kinds = re.search(r"const KINDS = \[([^\]]+)\]", src)
    assert kinds is not None
    from gateway.reports.builder import KINDS

    offered = re.findall(r'"([\w-]+)"', kinds.group(1))
    # contract.md's six kinds first, in its order, then the extensions the report builder has (repairs)
    assert offered[:6] == ["daily-faults", "availability", "link-fees", "deductions", "reconciliation",
                           "annual-offline"]
    assert sorted(offered) == sorted(KINDS)


@pytest.mark.requires("node")
@pytest.mark.parametrize("path", JS, ids=lambda p: p.name)
def test_modules_parse(path: Path, tmp_path: Path) -> None:
    """A syntax error in one module blanks the whole console; node (when present) catches it early."""
    node = shutil.which("node") or "node"
    mjs = tmp_path / (path.stem + ".mjs")
    mjs.write_bytes(path.read_bytes())
    proc = subprocess.run([node, "--check", str(mjs)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
