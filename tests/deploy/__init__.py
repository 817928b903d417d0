"""Deployment recipes, run for real: nginx in front, several processes on one port."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path) -> ModuleType:
    """The module in ``path``, a script or file outside any package, run fresh."""
    spec = importlib.util.spec_from_file_location(f"deploy_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def recipes() -> ModuleType:
    """deploy/recipes.py: the code docs/deploy.md shows, which these tests run."""
    return load(ROOT / "deploy" / "recipes.py")
