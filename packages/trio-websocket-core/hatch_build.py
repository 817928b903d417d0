"""Build hook: compile the masking accelerator (``_speedups.c``) when a compiler is at hand.

Every byte a client sends and a server receives is masked (RFC 6455 section
5.3), and no standard-library primitive XORs two buffers: pure Python masks at
about 1 GB/s, C at memory speed. So a wheel built where a C compiler works
carries the accelerator, and one built without a compiler is pure Python and
just as correct (``_mask.py`` picks whichever it finds). Set
``TRIO_WEBSOCKET_PURE_PYTHON=1`` to build without it on purpose.

setuptools only finds and drives the platform's compiler (MSVC, clang or gcc,
with the interpreter's flags); it is a build requirement, never a runtime one.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE = "trio_websocket_core"
SOURCE = Path("src") / PACKAGE / "_speedups.c"


class SpeedupsHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compile ``_speedups.c`` into the wheel, or leave the wheel pure Python."""

    PLUGIN_NAME = "custom"
    _scratch: str | None = None

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Compile before hatchling collects the files; on failure, change nothing."""
        root = Path(self.root)
        if version == "editable":
            # An editable install imports from src/: the module an earlier one
            # compiled there for this interpreter may not outlive this one.
            # (Other interpreters' modules beside it are theirs.)
            stale = root / "src" / PACKAGE / f"_speedups{sysconfig.get_config_var('EXT_SUFFIX')}"
            try:
                stale.unlink(missing_ok=True)
            except OSError as error:  # e.g. loaded by a running Python on Windows
                self.app.display_warning(f"could not remove {stale} ({error})")
        if os.environ.get("TRIO_WEBSOCKET_PURE_PYTHON"):
            self.app.display_info("TRIO_WEBSOCKET_PURE_PYTHON is set: a pure-Python wheel")
            return
        self._scratch = tempfile.mkdtemp(prefix="trio-websocket-build-")
        try:
            built = _compile(root / SOURCE, Path(self._scratch))
        except Exception as error:  # any failure to compile: fall back, loudly
            self.app.display_warning(
                f"the C masking accelerator was not built ({error}); this wheel "
                "masks in pure Python, correct but slower for long messages")
            return
        if version == "editable":
            shutil.copy(built, root / "src" / PACKAGE / built.name)
        else:
            build_data["force_include"][str(built)] = f"{PACKAGE}/{built.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        """Remove the scratch directory once the wheel holds the module."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def _compile(source: Path, scratch: Path) -> Path:
    """Build the extension module in ``scratch``; return the module file."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    extension = Extension(f"{PACKAGE}._speedups", [str(source)],
                          # No debug information: it would carry the scratch paths.
                          extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-g0"])
    command = build_ext(Distribution({"name": PACKAGE, "ext_modules": [extension]}))
    command.build_lib = str(scratch / "lib")
    command.build_temp = str(scratch / "temp")
    command.ensure_finalized()
    command.run()
    (output,) = command.get_outputs()
    return Path(output)
