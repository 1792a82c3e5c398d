"""Which modules are compiled to C with mypyc, and whether the compiled code is current.

The per-packet and per-request paths (RTP, PS, FLV, the hub's fan-out; the SIP parser, digest
and transactions) are plain typed Python, compiled at install time by `setup.py` (mypyc, from
mypy) because the interpreter's own overhead is most of their cost: on the media bench,
compiling them cuts CPU per stream by about a third. Nothing here may import beyond the stdlib:
`setup.py` reads `MODULES` before any dependency is installed.

An editable install leaves each module's `.so` beside its `.py`, and the interpreter prefers the
`.so`: after an edit the old compiled code would still run. `build_digests` records each
source's digest at build time, and `stale()` reports sources that changed since; the node warns at
start-up and the test session refuses to run on stale code.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: Compiled modules, one mypyc group (calls between them are C calls). A module here must not be
#: subclassed or monkeypatched by other code, and its typed arguments are checked at run time
#: (`bytes` means bytes, not bytearray).
MODULES: tuple[str, ...] = (
    "gateway.media.adts",
    "gateway.media.avcc",
    "gateway.media.fanout",
    "gateway.media.flv",
    "gateway.media.frames",
    "gateway.media.hub",
    "gateway.media.keyframe",
    "gateway.media.nal",
    "gateway.media.ps",
    "gateway.media.receiver",
    "gateway.media.reorder",
    "gateway.media.rtp",
    "gateway.media.session_stats",
    "gateway.media.timeline_rebase",
    "gateway.media.udp_batch",
    "gateway.sip.address",
    "gateway.sip.digest",
    "gateway.sip.fastpath",
    "gateway.sip.message",
    "gateway.sip.transaction",
)

DIGESTS = "native_build.json"  # beside this file: {module: sha256 of the source compiled}
ROOT = Path(__file__).resolve().parent.parent


def source_path(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_digests(root: Path = ROOT) -> dict[str, str]:
    """What `setup.py` writes to `DIGESTS` when it compiles."""
    return {m: digest(source_path(m, root)) for m in MODULES}


@dataclass(frozen=True, slots=True)
class ModuleState:
    module: str
    compiled: bool  # the import system loads an extension module for it
    stale: bool  # compiled from a source that has changed since


def states(root: Path = ROOT) -> list[ModuleState]:
    """Each compiled module's state, without importing any of them."""
    try:
        built = json.loads((root / "gateway" / DIGESTS).read_text())
    except (OSError, ValueError):
        built = {}
    out = []
    for m in MODULES:
        spec = importlib.util.find_spec(m)
        compiled = spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
        source = source_path(m, root)
        stale = compiled and source.exists() and built.get(m) != digest(source)
        out.append(ModuleState(m, compiled, stale))
    return out


def stale(root: Path = ROOT) -> list[str]:
    return [s.module for s in states(root) if s.stale]


@dataclass(frozen=True, slots=True)
class Summary:
    compiled: int
    of: int
    stale: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return self.compiled == self.of and not self.stale

    def as_json(self) -> dict[str, object]:
        return {"compiled": self.compiled, "of": self.of, "stale": list(self.stale)}

    def describe(self) -> str:
        """One line for the log; names what is wrong when something is."""
        line = f"native code: {self.compiled} of {self.of} hot-path modules compiled"
        if self.stale:
            return line + f"; STALE (compiled before their source changed; reinstall): {', '.join(self.stale)}"
        if self.compiled != self.of:
            return line + " (installed without compiling: slower media and SIP paths)"
        return line


@cache
def summary() -> Summary:
    """This process's `Summary` (for /healthz and the start-up log), read once: the code a
    process runs does not change under it."""
    st = states()
    return Summary(sum(s.compiled for s in st), len(st), tuple(s.module for s in st if s.stale))
