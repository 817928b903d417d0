"""The "interop peers" section of the test summary: which outside peers ran, and which did not.

A test that talks to something outside this project (another WebSocket
library, a browser, a program such as tmux or nginx) carries
``@pytest.mark.peer("name")``. Such a test skips on a developer machine that
lacks its peer (CI fails it instead), so a green run may have checked less than
it seems to. This plugin lists, at the end of the run, each peer whose tests
were selected: its version, how many of its tests passed, failed or were
skipped, and why they were skipped.

The marker takes optional keywords saying where the version comes from:
``package="dist-name"`` (an installed Python distribution),
``program="name"`` (a program on PATH, asked with ``--version``, ``-V`` or
``-v``) or ``version=callable`` (called once, returns the text or None).
Without them the name itself is tried as a distribution, then its first word
as a program. Versions are looked up once per process and never fail the run:
a lookup that goes wrong leaves the version out.

A skip's reason is kept only if the skip is raised outside trio: pytest-trio
0.8 replaces a skip raised inside a trio test (or its async fixtures) with a
bare one. So the tests find their peers in plain fixtures.
"""

from __future__ import annotations

import collections
import functools
import importlib.metadata
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

#: The marker's line for ``pytest --markers`` (the one pytest.ini registers, if it does).
MARKER = ("peer(name, *, package=None, program=None, version=None): the test talks to an "
          "outside program or library; the run's summary lists each peer")
#: Seconds a program may take to print its version.
VERSION_TIMEOUT = 5.0
#: The flags tried in turn to ask a program its version (tmux knows only -V, nginx -v).
VERSION_FLAGS = ("--version", "-V", "-v")
#: The part of a version line kept: "Chromium 156.0.8078.108 built on ..." -> "156.0.8078.108".
VERSION_NUMBER = re.compile(r"\d+(?:\.\d+)+[0-9A-Za-z.+-]*")
#: An outcome outranks those before it: a test that passed and then failed in its
#: teardown counts as an error, one skipped in its body as skipped.
RANK = ("passed", "xpassed", "skipped", "xfailed", "failed", "error")


@functools.cache
def package_version(name: str) -> str | None:
    """An installed distribution's version, or None."""
    try:
        return importlib.metadata.version(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


@functools.cache
def program_version(name: str) -> str | None:
    """The version a program on PATH reports of itself, or None if it is missing or says none."""
    path = shutil.which(name)
    if path is None:
        return None
    for flag in VERSION_FLAGS:
        try:
            result = subprocess.run([path, flag], capture_output=True, text=True,
                                    timeout=VERSION_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return None
        if result.returncode != 0:
            continue
        # stdout first: a wrapper script may write noise to stderr (Debian's
        # chromium does), while nginx -v writes only there.
        for text in (result.stdout, result.stderr):
            lines = [line for line in text.splitlines() if line.strip()]
            found = VERSION_NUMBER.search(lines[0]) if lines else None
            if found:
                return found.group()
    return None


@functools.cache
def _called(source: Callable[[], str | None]) -> str | None:
    return source()


@dataclass
class Peer:
    """What one peer's marker says, and how its tests went."""

    name: str
    package: str | None = None
    program: str | None = None
    version_source: Callable[[], str | None] | None = None
    outcomes: dict[str, str] = field(default_factory=dict)  # node id -> outcome
    reasons: dict[str, str] = field(default_factory=dict)  # node id -> why it was skipped

    def version(self) -> str | None:
        """The version to show next to the name; None when it cannot be had cheaply."""
        try:
            if self.version_source is not None:
                return _called(self.version_source)
            if self.package is not None:
                return package_version(self.package)
            if self.program is not None:
                return program_version(self.program)
            return package_version(self.name) or program_version(self.name.split()[0])
        except Exception:  # a version is a nicety: never fail the run over one
            return None

    def line(self) -> str:
        counts = collections.Counter(self.outcomes.values())
        tally = ", ".join(f"{counts[outcome]} {outcome}" for outcome in RANK if counts[outcome])
        version = self.version()
        return f"{self.name}{' ' + version if version else ''}: {tally}"

    def skip_lines(self) -> list[str]:
        reasons = collections.Counter(self.reasons[nodeid] for nodeid, outcome
                                      in self.outcomes.items() if outcome == "skipped")
        return [f"    skipped ({count}): {reason}" for reason, count in sorted(reasons.items())]


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class PeerSummary:
    """The plugin: records each peer-marked test's outcome, then prints the section."""

    def __init__(self) -> None:
        self.peers: dict[str, Peer] = {}
        self.tests: dict[str, list[Peer]] = {}  # node id -> the peers its markers name

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        for mark in item.iter_markers("peer"):
            if not mark.args or not isinstance(mark.args[0], str):
                continue  # a mistyped marker: pytest's own checks are the place for it
            name = mark.args[0]
            kwargs: dict[str, Any] = dict(mark.kwargs)
            peer = self.peers.setdefault(name, Peer(
                name, package=kwargs.get("package"), program=kwargs.get("program"),
                version_source=kwargs.get("version")))
            peers = self.tests.setdefault(item.nodeid, [])
            if peer not in peers:
                peers.append(peer)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        peers = self.tests.get(report.nodeid)
        if not peers:
            return
        xfail = hasattr(report, "wasxfail")
        if report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.skipped:
            outcome = "xfailed" if xfail else "skipped"
        elif report.when == "call":
            outcome = "xpassed" if xfail else "passed"
        else:
            return  # a setup or teardown that went well says nothing new
        for peer in peers:
            before = peer.outcomes.get(report.nodeid)
            if before is None or RANK.index(outcome) > RANK.index(before):
                peer.outcomes[report.nodeid] = outcome
                if outcome == "skipped":
                    peer.reasons[report.nodeid] = _skip_reason(report)

    def lines(self) -> list[str]:
        """The section's lines: one per peer that had a test in this run, then its skips."""
        lines = []
        for name in sorted(self.peers, key=str.lower):
            peer = self.peers[name]
            if peer.outcomes:
                lines += [peer.line(), *peer.skip_lines()]
        return lines

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        try:
            lines = self.lines()
            if lines:
                terminalreporter.write_sep("=", "interop peers")
                for line in lines:
                    terminalreporter.write_line(line)
        except Exception as exc:  # the summary must never be what fails a run
            terminalreporter.write_line(f"interop peers: no summary ({exc!r})")


def register(config: pytest.Config) -> None:
    """Install the plugin for this run (once), and the marker if pytest.ini does not list it."""
    if not any(line.split("(")[0].split(":")[0].strip() == "peer"
               for line in config.getini("markers")):
        config.addinivalue_line("markers", MARKER)
    if not config.pluginmanager.has_plugin("peer-summary"):
        config.pluginmanager.register(PeerSummary(), "peer-summary")
