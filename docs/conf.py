"""Sphinx configuration for the trio-websocket documentation site.

Built by ``hatch run docs``: once as HTML and once with the doctest builder,
both with warnings as errors, so that every example on these pages runs.
The pages are Markdown (MyST) so that they read well on GitHub too.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# docs/_ext/apiref.py: the API reference's cross-references and completeness check.
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "trio-websocket"
author = "the trio-websocket authors"
copyright = "the trio-websocket authors"

release = importlib.import_module("trio_websocket").__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "apiref",
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
