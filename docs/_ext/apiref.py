"""A Sphinx extension for the API reference of the four packages.

It sends a cross-reference to a re-exported name to the one entry that
documents it, gives public constants the ``#:`` comment where they are
assigned, shows private constants in signatures by value, and fails the
build (a warning under ``-W``) when a public name has no entry, two, or one
in the wrong place.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from typing import Any

from sphinx import addnodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

logger = logging.getLogger(__name__)

# Where each public name is defined. The client, server and meta-packages
# re-export the core's names (and the meta-package everyone's), and the
# reference documents each name once, under the package that defines it; a
# cross-reference to a re-exported spelling, such as
# ``trio_websocket.open_websocket_url`` or ``trio_websocket_client.CloseReason``,
# is sent there. The public modules, each before the ones that re-export it:
_PUBLIC = (
    "trio_websocket_core",
    "trio_websocket_core.toolkit",
    "trio_websocket_client",
    "trio_websocket_server",
    "trio_websocket",
)
_TOP_PACKAGES = tuple(sorted({name.split(".", 1)[0] for name in _PUBLIC}))


def _exports(module_name: str) -> tuple[str, ...]:
    """The names in a public module's ``__all__``."""
    return tuple(importlib.import_module(module_name).__all__)


@functools.cache
def _imported_from(module_name: str) -> dict[str, str]:
    """The names a module imports from another public module, and from which.

    Read from the source (``from trio_websocket_core import X``), not guessed
    from object identity: two packages may each define a constant that happens
    to be the same small int or string, ``__version__`` for one.
    """
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in _PUBLIC:
            for alias in node.names:
                found[alias.asname or alias.name] = node.module
    return found


@functools.cache
def _home(module_name: str, name: str) -> str:
    """The public module that defines ``name``, exported by ``module_name``.

    A name a module imports from another public module that exports it is
    that module's (followed to where it started); anything else the module
    exports it defines, whichever private submodule holds the code.
    """
    source = _imported_from(module_name).get(name)
    if source is not None and name in _exports(source):
        return _home(source, name)
    return module_name


def _defined_names() -> dict[str, list[str]]:
    """Each public module's own names: the ones it must document."""
    return {
        module: [name for name in _exports(module) if _home(module, name) == module]
        for module in _PUBLIC
    }


def _home_of(name: str, exporter: str | None) -> str | None:
    """The module that documents ``name`` (``Name`` or ``Name.member``).

    ``exporter`` is the module the reference was written in or through;
    failing that, any public module that exports the name will do.
    """
    top = name.split(".", 1)[0]
    if exporter in _PUBLIC and top in _exports(exporter):
        return _home(exporter, top)
    for module in _PUBLIC:
        if top in _exports(module):
            return _home(module, top)
    return None


def _resolve_re_export(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Any
) -> Any:
    """Resolve a reference to a re-exported name to where it is documented."""
    if node.get("refdomain") != "py":
        return None
    target: str = node["reftarget"]
    module = node.get("py:module")
    for prefix in sorted(_PUBLIC, key=len, reverse=True):
        if target.startswith(prefix + "."):
            name, exporter = target[len(prefix) + 1:], prefix
            break
    else:
        # A bare name inside a package's docstring: ``:class:`WebSocketConnection```
        # written in the client resolves to the core's class.
        if not module or module.split(".", 1)[0] not in _TOP_PACKAGES:
            return None
        name, exporter = target, module
    home = _home_of(name, exporter)
    if home is None:
        return None
    domain: Any = env.get_domain("py")
    new = node.deepcopy()
    new["reftarget"] = f"{home}.{name}"
    new["py:module"] = home
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                               f"{home}.{name}", new, contnode)


# -- Every public name has an entry -------------------------------------------
# ``automodule :members:`` quietly leaves out a name it finds no documentation
# for (a constant imported from the private module that assigns it, say), and
# a hand-written list of ``autofunction`` directives goes stale when a name is
# added. So after reading, every name in every public ``__all__`` must have
# exactly one entry, under the module that defines it, and every entry must be
# for such a name; anything else is a warning, which ``-W`` makes an error.


def _public_module_of(fullname: str) -> tuple[str, str] | None:
    """Split ``module.Name.member`` at the longest public module, if any."""
    for module in sorted(_PUBLIC, key=len, reverse=True):
        if fullname.startswith(module + "."):
            return module, fullname[len(module) + 1:]
    return None


def _entries(env: BuildEnvironment) -> Iterator[tuple[str, bool, str]]:
    """Every Python object description: its full name, whether indexed, its page.

    Read from the pages rather than the Python domain's index, so that an
    entry written with ``:no-index:`` counts too.
    """
    for docname in sorted(env.found_docs):
        for desc in env.get_doctree(docname).findall(addnodes.desc):
            if desc.get("domain") != "py" or desc.get("objtype") == "module":
                continue
            for signature in desc.children:
                if isinstance(signature, addnodes.desc_signature):
                    module, name = signature.get("module"), signature.get("fullname")
                    if name:
                        full = f"{module}.{name}" if module else name
                        yield full, bool(signature["ids"]), docname


def _check_reference(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn about public names with no entry, two entries, or an entry in the wrong place."""
    expected = _defined_names()
    entries: dict[tuple[str, str], list[str]] = {}
    indexed: set[tuple[str, str]] = set()
    for fullname, is_indexed, docname in _entries(env):
        split = _public_module_of(fullname)
        if split is None:
            continue
        module, rest = split
        name = rest.split(".", 1)[0]
        if name not in expected[module]:
            if name in _exports(module):
                where = (f"{name} is defined in {_home(module, name)} "
                         f"({module} re-exports it): document it there")
            else:
                where = f"{name} is not in {module}.__all__"
            logger.warning("API reference: %s has an entry, but %s", fullname, where,
                           location=docname, type="apiref", subtype="misplaced")
        elif rest == name:
            entries.setdefault((module, name), []).append(docname)
            if is_indexed:
                indexed.add((module, name))
    for (module, name), docnames in sorted(entries.items()):
        if len(docnames) > 1:
            logger.warning("API reference: %s.%s has %d entries; keep one", module, name,
                           len(docnames), location=docnames[1],
                           type="apiref", subtype="duplicate")
    modules: dict[str, Any] = env.get_domain("py").modules  # type: ignore[attr-defined]
    for module, names in expected.items():
        home_doc = modules[module].docname if module in modules else "api"
        for name in names:
            if (module, name) not in indexed:
                logger.warning(
                    "API reference: %s.%s is public (in %s.__all__) but has no entry; "
                    "add one under the %s module", module, name, module, module,
                    location=home_doc, type="apiref", subtype="missing")


# -- Data documented where it is assigned -------------------------------------
# A public constant is usually assigned in a private module, with a ``#:``
# comment saying what it is for, and imported into the public one. autodoc
# looks for that comment only in the public module, so ``automodule
# :members:`` leaves such a constant out (api.md names each one with
# ``autodata``, and the check above catches one it forgets), and ``autodata``
# would show the docstring of its type. This handler gives the entry the
# comment at the assignment instead.


_MISSING = object()


def _public_data(fullname: str, obj: Any) -> bool:
    """Whether ``fullname`` is a name exported by a public module."""
    split = _public_module_of(fullname)
    if split is None or "." in split[1]:
        return False
    module, name = split
    return name in _exports(module) and getattr(sys.modules[module], name) is obj


def _doc_comment(fullname: str, obj: Any) -> tuple[list[str], str] | None:
    """The ``#:`` comment where the package assigns this public data name, and that file."""
    module, name = _public_module_of(fullname) or ("", "")
    package = module.split(".", 1)[0]
    for candidate in sorted(sys.modules):
        if candidate != package and not candidate.startswith(package + "."):
            continue
        if vars(sys.modules[candidate]).get(name, _MISSING) is not obj:
            continue
        try:
            analyzer = ModuleAnalyzer.for_module(candidate)
            analyzer.analyze()
        except PycodeError:
            continue
        comment = analyzer.attr_docs.get(("", name))
        if comment:
            return list(comment), str(analyzer.srcname)
    return None


def _data_from_comment(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Give a public constant's entry the ``#:`` comment at its assignment."""
    if what != "data" or not _public_data(name, obj):
        return
    found = _doc_comment(name, obj)
    if found is not None:
        lines[:], source = found
        # Read the page again when that comment changes, as for a docstring.
        app.env.note_dependency(source)
        return
    # Without one, autodoc falls back on the docstring of the value's type
    # (``int([x]) -> integer``), which says nothing about this name.
    lines.clear()
    logger.warning("API reference: %s has no #: comment where it is assigned, saying "
                   "what it is and why it has its value", name,
                   type="apiref", subtype="undocumented")


# -- Defaults by name only when the name is public ----------------------------
# Signatures show a default by the name the source gives it
# (``autodoc_preserve_defaults``), which says more than a value when a reader
# can look the name up, as for DEFAULT_COMPRESSION. A private constant's name
# (the client's DEFAULT_CONNECT_TIMEOUT) would send the reader looking for an
# entry that does not exist, so its value is shown instead.
_DEFAULT_NAME = re.compile(r"(?<== )([A-Z][A-Z0-9_]*)\b(?![.(\[])")


def _private_defaults_as_values(
    app: Sphinx, what: str, name: str, obj: Any, options: Any,
    signature: str | None, return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Show a default that is a private module constant by its value."""
    if not signature or name.split(".", 1)[0] not in _TOP_PACKAGES:
        return None
    function = obj.__init__ if inspect.isclass(obj) else obj
    scope: dict[str, Any] = getattr(inspect.unwrap(function), "__globals__", {})
    public = {exported for module in _PUBLIC for exported in _exports(module)}

    def shown(match: re.Match[str]) -> str:
        constant = match.group(1)
        if constant in public or constant not in scope:
            return constant
        return repr(scope[constant])

    return _DEFAULT_NAME.sub(shown, signature), return_annotation


def setup(app: Sphinx) -> dict[str, Any]:
    """Resolve re-exported names, document public data, check the reference is complete."""
    app.connect("missing-reference", _resolve_re_export)
    app.connect("autodoc-process-signature", _private_defaults_as_values)
    app.connect("autodoc-process-docstring", _data_from_comment)
    app.connect("env-check-consistency", _check_reference)
    return {"parallel_read_safe": True}
