"""Sphinx configuration for the trio-websocket documentation site.

Built by ``hatch run docs``: once as HTML and once with the doctest builder,
both with warnings as errors, so that every example on these pages runs.
The pages are Markdown (MyST) so that they read well on GitHub too.
"""

from __future__ import annotations

import importlib
from typing import Any

from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

project = "trio-websocket"
author = "the trio-websocket authors"
copyright = "the trio-websocket authors"

release = importlib.import_module("trio_websocket").__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Markdown extras: ::: fences for admonitions, and heading anchors so that
# pages can link to each other's sections (page.md#section).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"trio-websocket {release}"
html_static_path: list[str] = []

# The API reference: signatures as written in the source (defaults by name,
# such as DEFAULT_COMPRESSION, not the repr of the object), members in source
# order, and type hints in the signature where they belong.
autodoc_preserve_defaults = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# A class's entry shows its __init__ docstring too (how to get one, when it is
# not meant to be built directly).
autoclass_content = "both"
add_module_names = False

# The examples are run by ``sphinx-build -b doctest`` (with its default flags:
# ``...`` matches anything in expected output). An example that needs a server
# starts one on 127.0.0.1, port 0, inside its own trio.run(), and stops it.
trim_doctest_flags = True

# There is no network here, so no intersphinx: names from trio or the standard
# library in signatures stay plain text.

# Where each public name is defined. The client, server and meta-packages
# re-export the core's names (and the meta-package everyone's), and the
# reference documents each name once, under the package that defines it; a
# cross-reference to a re-exported spelling, such as
# ``trio_websocket.open_websocket_url`` or ``trio_websocket_client.CloseReason``,
# is sent there.
_PACKAGES = ("trio_websocket_core", "trio_websocket_client", "trio_websocket_server")
_RE_EXPORTERS = ("trio_websocket", *_PACKAGES)


def _home_of(name: str) -> str | None:
    """The package that defines the public ``name`` (``Class`` or ``Class.member``)."""
    top = name.split(".", 1)[0]
    for package in _PACKAGES:
        module = importlib.import_module(package)
        if top in getattr(module, "__all__", ()):
            obj = getattr(module, top)
            defined_in = getattr(obj, "__module__", package) or package
            if defined_in.startswith(package):
                return package
    return None


def _resolve_re_export(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Any
) -> Any:
    """Resolve a reference to a re-exported name to where it is documented."""
    if node.get("refdomain") != "py":
        return None
    target: str = node["reftarget"]
    module = node.get("py:module")
    for prefix in _RE_EXPORTERS:
        if target.startswith(prefix + "."):
            name = target[len(prefix) + 1:]
            break
    else:
        # A bare name inside a package's docstring: ``:class:`WebSocketConnection```
        # written in the client resolves to the core's class.
        if not module or module.split(".", 1)[0] not in _RE_EXPORTERS:
            return None
        name = target
    home = _home_of(name)
    if home is None:
        return None
    domain: Any = env.get_domain("py")
    new = node.deepcopy()
    new["reftarget"] = f"{home}.{name}"
    new["py:module"] = home
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                               f"{home}.{name}", new, contnode)


def setup(app: Sphinx) -> None:
    """Send references to re-exported names where those names are documented."""
    app.connect("missing-reference", _resolve_re_export)
