"""The run's "interop peers" section (tests/peer_summary.py), checked on small inner runs.

A skipped interop test is easy to miss in a green run; the section is what
tells a reader which peers a run actually checked. Each test here runs a
tiny pytest session in-process (pytester) with the plugin wired the way
tests/conftest.py wires it, and reads the summary it prints.
"""

from __future__ import annotations

import platform
import sys

import pytest

pytest_plugins = ["pytester"]

CONFTEST = """
from tests import peer_summary

def pytest_configure(config):
    peer_summary.register(config)
"""

TESTS = f"""
import pytest

pytestmark = pytest.mark.peer("pytest")

def test_talks_to_it():
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_without_it(n):
    pytest.skip("frob is not installed (frob is the peer)")

@pytest.mark.peer("python", program={sys.executable!r})
def test_two_peers():
    pass

def unknown():
    raise RuntimeError("no version here")

@pytest.mark.peer("broken", version=unknown)
def test_fails():
    assert False

@pytest.mark.peer("absent")
def test_deselected():
    pass

def test_ours_alone():
    pass
"""


def section(lines: list[str]) -> list[str]:
    """The lines of the inner run's "interop peers" section."""
    start = next(i for i, line in enumerate(lines) if " interop peers " in line)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("==")), len(lines))
    return lines[start + 1:end]


def test_lists_each_selected_peer_with_version_counts_and_skip_reasons(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=TESTS)
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider",
                                "-k", "not deselected")
    result.assert_outcomes(passed=3, skipped=2, failed=1, deselected=1)
    assert section(result.outlines) == [
        "broken: 1 failed",  # the version lookup raised: left out, the run goes on
        # Every test of the module is the pytest peer's, the last one too.
        f"pytest {pytest.__version__}: 3 passed, 2 skipped, 1 failed",
        "    skipped (2): frob is not installed (frob is the peer)",
        f"python {platform.python_version()}: 1 passed",
    ]


def test_no_section_without_peer_tests(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner="def test_ours_alone():\n    pass\n")
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not any(" interop peers " in line for line in result.outlines)


def test_error_in_teardown_counts_against_the_peer(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST + """
import pytest

@pytest.fixture
def breaks_after():
    yield
    raise RuntimeError("teardown went wrong")
""")
    pytester.makepyfile(test_inner="""
import pytest

@pytest.mark.peer("ghost-program-xyz")
def test_passes_then_breaks(breaks_after):
    pass
""")
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    # Neither a distribution nor a program of that name: no version, no failure.
    assert section(result.outlines) == ["ghost-program-xyz: 1 error"]
