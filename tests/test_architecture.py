"""The import rules of architecture.md §2, checked by walking every product module's imports (stdlib ast).

What is checked, over gateway/, adapters/, whitelist/, certs/ and devsim/:
  - no import cycle between modules (imports run at import time; `if TYPE_CHECKING:` and imports
    inside functions are left out: they cannot deadlock an import);
  - no product module imports `load_tests` or `tests`;
  - layering: no module imports a module of a higher layer (LAYERS below), lazy imports included;
  - no private name (`_x`) crosses a module boundary, by `from m import _x` or `m._x`;
  - the sans-IO cores import no I/O library; whitelist and certs never import gateway.

KNOWN_* lists are today's remaining breaches, each with its reason. A test fails on any breach that
is not listed *and* on a listed entry that is no longer a breach, so the lists only shrink.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "adapters", "whitelist", "certs", "devsim")
NOT_PRODUCT = ("load_tests", "tests")

# Layers, lowest first (architecture.md §2 "may import" and "Rules of direction"): a module may import
# its own layer and the layers below, never above. The longest matching prefix decides.
LAYERS: dict[str, int] = {
    # 0 foundation: the error root, settings, and the packages that never import gateway
    "gateway": 0,
    "gateway.errors": 0,
    "whitelist": 0,
    "certs": 0,
    # 1 cores: protocol grammar, codecs, the media plane (sans-IO cores plus their asyncio shells)
    "gateway.sip": 1,
    "gateway.gb": 1,
    "gateway.media": 1,
    "gateway.health.timeline": 1,  # the pure interval arithmetic the store and reports build on
    "gateway.health.errors": 1,
    "gateway.config": 1,  # settings: plain values, IDs checked with the gb grammar; read by the root only
    # 2 store
    "gateway.store": 2,
    # 3 services: health, reports, outputs, adapters, the device simulator
    "gateway.health": 3,
    "gateway.reports": 3,
    "gateway.outputs": 3,
    "gateway.media_workers": 3,  # media worker processes and the main side of their streams (issue 15)
    "adapters": 3,
    "devsim": 3,
    # 4 interfaces served over HTTP
    "gateway.api": 4,
    "gateway.console": 4,
    # 5 the composition root
    "gateway.app": 5,
    # 6 the commands that run a node
    "gateway.cli": 6,
    "gateway.demo": 6,
    "gateway.__main__": 6,
    "devsim.__main__": 6,
    "devsim.cli": 6,
}
LAYER_NAMES = ("foundation", "core", "store", "service", "interface", "composition root", "command")

# Import cycles still present, as sorted module lists.
KNOWN_CYCLES: set[tuple[str, ...]] = set()
# Cycles closed only through imports inside functions (no import-time deadlock, still one design knot).
KNOWN_LAZY_CYCLES: set[tuple[str, ...]] = set()

# Lower layer → higher layer imports still present: (importer, imported). None today; a rework that
# must land one in steps lists it here with its reason.
KNOWN_LAYER_BREACHES: set[tuple[str, str]] = set()

# Private names crossing modules: (importer, "module._name"), to be made public by their owners.
KNOWN_PRIVATE: set[tuple[str, str]] = set()

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
    "adapters/cascade/registration.py",
    "adapters/cascade/answers.py",
)
IO_MODULES = {"asyncio", "socket", "aiohttp", "av", "sqlmodel", "sqlalchemy", "selectors", "cv2", "aiortc"}


# ------------------------------------------------------------------------------------------ the walker


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module (resolved to the longest known module when internal), and how."""

    target: str
    top_level: bool  # runs when the importing module is imported (not in a function, not TYPE_CHECKING)
    names: tuple[str, ...] = ()  # for `from m import a, b`: the names taken from m


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def product_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


@functools.cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def resolve(name: str, known: Iterable[str]) -> str:
    """The longest known module that `name` is or lies in; `name` itself when none (a foreign module)."""
    known = known if isinstance(known, set | frozenset | dict) else set(known)
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return name


def walk_imports(path: Path, known: Iterable[str] = ()) -> list[Import]:
    """Every import in one file, internal names resolved against `known` modules."""
    known = set(known)
    module = module_name(path) if path.is_relative_to(ROOT) else path.stem
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = parse(path)
    found: list[Import] = []

    def visit(nodes: Iterable[ast.stmt], top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and is_type_checking(node.test):
                visit(node.orelse, top)
                continue
            if isinstance(node, ast.Import):
                found.extend(Import(resolve(a.name, known), top) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in known:  # `from package import module`
                        found.append(Import(sub, top))
                    else:
                        found.append(Import(resolve(base, known), top, (alias.name,)))
            for field_name in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field_name, None)
                if isinstance(children, list) and children and isinstance(children[0], ast.stmt | ast.excepthandler):
                    inner = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                    for child in children:
                        if isinstance(child, ast.excepthandler):
                            visit(child.body, top and not inner)
                    visit([c for c in children if isinstance(c, ast.stmt)], top and not inner)

    visit(tree.body, True)
    return found


def private_attribute_uses(path: Path, known: Iterable[str]) -> Iterator[str]:
    """`module._name` where `module` is a name bound to an imported internal module."""
    known = set(known)
    tree = parse(path)
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in known:
                    bound[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if f"{node.module}.{a.name}" in known:
                    bound[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and is_private(node.attr)
        ):
            yield f"{bound[node.value.id]}.{node.attr}"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def layer_of(module: str) -> int | None:
    best = resolve(module, LAYERS)
    return LAYERS.get(best)


@functools.cache
def import_graph(*, top_level_only: bool) -> dict[str, set[str]]:
    modules = product_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for imp in walk_imports(path, modules):
            if imp.target in modules and imp.target != name and (imp.top_level or not top_level_only):
                graph[name].add(imp.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan), as sorted tuples."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def layer_breaches() -> set[tuple[str, str]]:
    out = set()
    for importer, targets in import_graph(top_level_only=False).items():
        mine = layer_of(importer)
        for target in targets:
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                out.add((importer, target))
    return out


def private_crossings() -> set[tuple[str, str]]:
    modules = product_modules()
    out = set()
    for name, path in modules.items():
        for imp in walk_imports(path, modules):
            if imp.target in modules and imp.target != name:
                out.update((name, f"{imp.target}.{n}") for n in imp.names if is_private(n))
        out.update((name, use) for use in private_attribute_uses(path, modules) if not use.startswith(f"{name}."))
    return out


def describe_breach(pair: tuple[str, str]) -> str:
    a, b = pair
    la, lb = layer_of(a), layer_of(b)
    return f"{a} ({LAYER_NAMES[la or 0]}) imports {b} ({LAYER_NAMES[lb or 0]})"


# ------------------------------------------------------------------------------------------ the rules


def test_every_product_module_has_a_layer() -> None:
    assert [m for m in product_modules() if layer_of(m) is None] == []


def test_no_import_cycles() -> None:
    found = cycles(import_graph(top_level_only=True))
    assert sorted(found - KNOWN_CYCLES) == [], "new import cycle(s)"
    assert sorted(KNOWN_CYCLES - found) == [], "fixed: remove from KNOWN_CYCLES"


def test_no_cycles_through_lazy_imports_either() -> None:
    found = cycles(import_graph(top_level_only=False)) - cycles(import_graph(top_level_only=True))
    assert sorted(found - KNOWN_LAZY_CYCLES) == [], "new cycle(s) through imports inside functions"
    assert sorted(KNOWN_LAZY_CYCLES - found) == [], "fixed: remove from KNOWN_LAZY_CYCLES"


def test_product_never_imports_load_tests_or_tests() -> None:
    modules = product_modules()
    offenders = [
        f"{name} imports {imp.target}"
        for name, path in modules.items()
        for imp in walk_imports(path, modules)
        if imp.target.split(".")[0] in NOT_PRODUCT
    ]
    assert offenders == []


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    found = layer_breaches()
    assert sorted(map(describe_breach, found - KNOWN_LAYER_BREACHES)) == [], "new layer breach(es)"
    assert sorted(KNOWN_LAYER_BREACHES - found) == [], "fixed: remove from KNOWN_LAYER_BREACHES"


def test_private_names_stay_in_their_module() -> None:
    found = private_crossings()
    assert sorted(found - KNOWN_PRIVATE) == [], "private name(s) used across modules: make them public"
    assert sorted(KNOWN_PRIVATE - found) == [], "fixed: remove from KNOWN_PRIVATE"


def test_whitelist_and_certs_never_import_gateway() -> None:
    offenders = []
    for package in ("whitelist", "certs"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for imp in walk_imports(path):
                if imp.target.split(".")[0] in ("gateway", "adapters", "devsim"):
                    offenders.append(f"{path.relative_to(ROOT)} imports {imp.target}")
    assert offenders == []


def test_only_composition_root_imports_adapters() -> None:
    allowed = ("gateway.app",)
    offenders = []
    for name, path in product_modules().items():
        if not name.startswith("gateway.") or resolve(name, allowed) in allowed:
            continue
        for imp in walk_imports(path):
            if imp.target.split(".")[0] == "adapters":
                offenders.append(f"{name} imports {imp.target}")
    assert offenders == []


def test_adapters_do_not_reach_into_interfaces_or_store() -> None:
    forbidden = ("gateway.api", "gateway.console", "gateway.store", "gateway.app", "gateway.cli", "gateway.reports")
    offenders = []
    for path in sorted((ROOT / "adapters").rglob("*.py")):
        for imp in walk_imports(path):
            if imp.target.startswith(forbidden):
                offenders.append(f"{path.relative_to(ROOT)} imports {imp.target}")
    assert offenders == []


def test_cores_are_sans_io() -> None:
    offenders = []
    for rel in CORE_MODULES:
        path = ROOT / rel
        if not path.exists():
            continue
        for imp in walk_imports(path):
            if imp.target.split(".")[0] in IO_MODULES:
                offenders.append(f"{rel} imports {imp.target}")
    assert offenders == []


@pytest.mark.parametrize("package", ["gateway/sip", "gateway/gb", "gateway/media", "gateway/health"])
def test_core_packages_do_not_import_services(package: str) -> None:
    """Dependencies point inward: cores never import api/console/reports/app."""
    forbidden = ("gateway.api", "gateway.console", "gateway.reports", "gateway.app", "gateway.cli", "adapters")
    offenders = []
    for path in sorted((ROOT / package).glob("*.py")):
        for imp in walk_imports(path):
            if imp.target.startswith(forbidden):
                offenders.append(f"{path.relative_to(ROOT)} imports {imp.target}")
    assert offenders == []


# ------------------------------------------------------------------------------------------ the checker


def test_checker_catches_a_breach(tmp_path: Path) -> None:
    """The walker itself must see a forbidden import (so the tests above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom gateway.sip import message\n")
    assert {"asyncio", "gateway.sip"} <= {i.target for i in walk_imports(bad)}


def test_checker_tells_import_time_from_lazy_and_type_checking(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "import a\n"
        "try:\n    import b\nexcept ImportError:\n    import c\n"
        "if TYPE_CHECKING:\n    import d\nelse:\n    import e\n"
        "def f():\n    import g\n"
        "class K:\n    import h\n"
    )
    seen = {i.target: i.top_level for i in walk_imports(src)}
    assert seen == {"typing": True, "a": True, "b": True, "c": True, "e": True, "g": False, "h": True}


def test_checker_finds_a_cycle_and_private_names(tmp_path: Path) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}
    assert cycles({"a": {"b"}, "b": set()}) == set()
    src = tmp_path / "p.py"
    src.write_text("from gateway.sip import message\nfrom gateway.sip.message import _x, y\nmessage._z\n")
    known = {"gateway.sip", "gateway.sip.message"}
    names = [n for i in walk_imports(src, known) for n in i.names if is_private(n)]
    assert names == ["_x"]
    assert list(private_attribute_uses(src, known)) == ["gateway.sip.message._z"]


def test_layer_lookup_uses_the_longest_prefix() -> None:
    assert layer_of("gateway.sip.message") == LAYERS["gateway.sip"]
    assert layer_of("gateway.cli.commands") == LAYERS["gateway.cli"]
    assert layer_of("gateway.errors") == 0
    assert layer_of("gateway.health.timeline") < layer_of("gateway.health.recorder")  # type: ignore[operator]
    assert layer_of("devsim.cli") > layer_of("devsim.swarm")  # type: ignore[operator]
