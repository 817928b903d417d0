"""The atheris targets: every seed passes, then a few seconds of fuzzing each.

``hatch run fuzz`` runs the same targets for minutes (docs/fuzzing.md); here
each gets a bounded run in a subprocess (libFuzzer owns the process it runs
in), and any crash fails the test with the input that caused it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .launch import have_atheris, run_without_atheris
from .targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
#: Seconds of fuzzing per target in the test command, and a cap on runs.
SECONDS, RUNS = 3, 1_000_000


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_seed_passes_its_target(name: str) -> None:
    target, seeds, _ = TARGETS[name]
    corpus = seeds()
    assert len(corpus) > 50
    for data in corpus:
        target(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_bounded_fuzzing_finds_no_crash(name: str, tmp_path: Path) -> None:
    if not have_atheris():  # no wheel for this platform: the same checks, unguided
        target, seeds, _ = TARGETS[name]
        assert run_without_atheris(target, seeds(), RUNS, SECONDS) > 0
        return
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", f"tests.fuzz.fuzz_{name}", f"-max_total_time={SECONDS}",
         f"-runs={RUNS}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
         str(tmp_path / "corpus")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    crashes = {path.name: path.read_bytes() for path in artifacts.iterdir()}
    assert result.returncode == 0 and not crashes, (
        f"crash inputs (hex): { {n: d.hex() for n, d in crashes.items()} }\n"
        f"{result.stderr[-4000:]}")
    executed = re.search(r"stat::number_of_executed_units: (\d+)", result.stderr)
    assert executed is not None and int(executed.group(1)) > 1000, result.stderr[-2000:]


def test_the_long_run_fuzzes_in_parallel_workers(tmp_path: Path) -> None:
    # hatch run fuzz --jobs N: libFuzzer's fork mode starts each worker from
    # argv[0], which must be a command the shell can run.
    result = subprocess.run(
        [sys.executable, "tests/fuzz/run.py", "--seconds", "1", "--jobs", "2",
         "--only", "handshake", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "fuzzing found nothing" in result.stdout
    if have_atheris():
        executions = re.search(r"(\d+) executions", result.stdout)
        assert executions is not None and int(executions.group(1)) > 0, result.stdout
