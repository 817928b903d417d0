"""What each distribution may lean on, since each is released on its own.

- The client and the server use core only through ``trio_websocket_core`` and
  its documented ``trio_websocket_core.toolkit``, and pin the core versions
  that provide it.
- No package touches wsproto's private names (a patch release of wsproto may
  change them) or subclasses wsproto's classes to reach them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

import trio_websocket_core
from trio_websocket_core import toolkit

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "packages"
SOURCES = sorted(PACKAGES.glob("*/src/*/*.py"))
CORE_SURFACE = {"trio_websocket_core", "trio_websocket_core.toolkit"}


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import in a file."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


@pytest.mark.parametrize("package", ["trio-websocket-client", "trio-websocket-server"])
def test_client_and_server_use_only_cores_documented_surface(package: str) -> None:
    used = set()
    for path in (PACKAGES / package / "src").rglob("*.py"):
        for module, names in imports(path):
            if module.startswith("trio_websocket_core"):
                assert module in CORE_SURFACE, f"{path.name} imports {module}"
                for name in names:
                    surface = trio_websocket_core if module == "trio_websocket_core" else toolkit
                    assert name in surface.__all__, f"{path.name} uses {module}.{name}"
                used.add(module)
    assert "trio_websocket_core.toolkit" in used  # the check above looked at real imports


def test_the_toolkit_is_documented() -> None:
    assert toolkit.__doc__
    for name in toolkit.__all__:
        value = getattr(toolkit, name)
        if callable(value):
            assert value.__doc__, f"toolkit.{name} has no docstring"


@pytest.mark.parametrize("package", ["trio-websocket-client", "trio-websocket-server",
                                     "trio-websocket"])
def test_pins_admit_the_core_that_provides_the_surface(package: str) -> None:
    project = tomllib.loads((PACKAGES / package / "pyproject.toml").read_text())["project"]
    core = next(Requirement(text) for text in project["dependencies"]
                if Requirement(text).name == "trio-websocket-core")
    assert core.specifier.contains(trio_websocket_core.__version__)
    # The toolkit appeared in core 0.2.0: an older core must not satisfy the pin.
    assert not core.specifier.contains("0.1.0")
    assert not core.specifier.contains("0.3.0")  # a minor release may change it


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_private_wsproto_names(path: Path) -> None:
    tree = ast.parse(path.read_text())
    from_wsproto: set[str] = set()
    for module, names in imports(path):
        if module.split(".")[0] != "wsproto":
            continue
        assert not any(part.startswith("_") for part in module.split(".")), module
        assert not [name for name in names if name.startswith("_")], (module, names)
        from_wsproto.update(names)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(base) for base in node.bases}
            assert not bases & from_wsproto, f"{node.name} subclasses wsproto's {bases}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in from_wsproto:
                assert not node.attr.startswith("_"), ast.unparse(node)
    if from_wsproto:  # the attributes the old extension reached into, by name
        assert not re.search(r"\._(enabled|compressor|decompressor|inbound_\w+)\b",
                             path.read_text())
