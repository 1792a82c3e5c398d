"""Compile the hot-path modules listed in gateway/native.py with mypyc.

`GBGATE_PURE=1 pip install -e .` installs without compiling and removes compiled modules an
earlier editable install left beside their sources, so the `.py` files run as they are.
"""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
native = runpy.run_path(str(HERE / "gateway" / "native.py"))
MODULES: tuple[str, ...] = native["MODULES"]
digests_file = HERE / "gateway" / native["DIGESTS"]

#: The shared library every compiled module calls into, at the top level (`GROUP__mypyc.*.so`).
#: Named, not mypyc's default hash of the module list: an editable install maps top-level names
#: when it is installed, so a library renamed by a later `build_ext --inplace` would not be found.
GROUP = "gbgate_native"

if os.environ.get("GBGATE_PURE") == "1":
    for module in MODULES:
        for so in native["source_path"](module, HERE).parent.glob(module.rpartition(".")[2] + ".*.so"):
            so.unlink()
    for so in HERE.glob(f"{GROUP}__mypyc.*.so"):
        so.unlink()
    digests_file.unlink(missing_ok=True)
    ext_modules = []
else:
    from mypyc.build import mypycify

    ext_modules = mypycify([str(native["source_path"](m, HERE).relative_to(HERE)) for m in MODULES],
                           opt_level="3", group_name=GROUP)


class BuildExt(build_ext):  # type: ignore[misc]  # setuptools is untyped here
    """Record the sources' digests once their extensions are built (not before: a failed build
    must not vouch for the extensions an earlier one left)."""

    def run(self) -> None:
        super().run()
        if ext_modules:
            digests_file.write_text(json.dumps(native["build_digests"](HERE), indent=1, sort_keys=True) + "\n")


setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
