"""The long fuzzing run: ``hatch run fuzz [options]`` (docs/fuzzing.md).

Each atheris target fuzzes for ``--seconds`` (default 600) on a corpus kept
between runs under ``--out`` (default: trio-websocket-fuzz in the temporary
directory), then the hypothesis properties run with the long profile
(``TRIO_WEBSOCKET_FUZZ=long``: a hundred times the test command's examples,
or ``--scale`` times). Crash files land in ``OUT/NAME/``; the exit status is
non-zero if anything failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("frames", "handshake")


def fuzz_target(name: str, seconds: int, out: Path, jobs: int) -> bool:
    folder = out / name
    corpus = folder / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    before = set(folder.glob("crash-*")) | set(folder.glob("timeout-*")) | set(
        folder.glob("oom-*"))
    command = [sys.executable, "-m", f"tests.fuzz.fuzz_{name}", f"-max_total_time={seconds}",
               f"-artifact_prefix={folder}/", "-print_final_stats=1", str(corpus)]
    if jobs > 1:  # libFuzzer's own fork mode: workers share the corpus
        command.append(f"-fork={jobs}")
    print(f"== {name}: {seconds} s, corpus {corpus}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    runs = re.findall(r"stat::number_of_executed_units: (\d+)", result.stderr)
    if not runs:  # fork mode prints no final stats: its last progress line has the count
        runs = re.findall(r"^#(\d+): ", result.stderr, re.MULTILINE)[-1:]
    coverage = re.findall(r"cov: (\d+)", result.stderr)
    crashes = sorted((set(folder.glob("crash-*")) | set(folder.glob("timeout-*"))
                      | set(folder.glob("oom-*"))) - before)
    print(f"   {sum(map(int, runs))} executions in {time.monotonic() - started:.0f} s, "
          f"coverage {coverage[-1] if coverage else '?'}, corpus {len(list(corpus.iterdir()))}"
          f" inputs, exit status {result.returncode}", flush=True)
    for crash in crashes:
        print(f"   CRASH {crash}: reproduce with python -m tests.fuzz.fuzz_{name} {crash}")
    if result.returncode != 0 or crashes:
        print(result.stderr[-6000:])
        return False
    return True


def run_properties(scale: int) -> bool:
    print(f"== hypothesis properties, {scale} times the test command's examples", flush=True)
    env = {**os.environ, "TRIO_WEBSOCKET_FUZZ": "long", "TRIO_WEBSOCKET_FUZZ_SCALE": str(scale)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--hypothesis-show-statistics", "tests/fuzz/test_frame_properties.py",
         "tests/fuzz/test_connection_property.py"], cwd=ROOT, env=env, check=False)
    return result.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=600, help="per atheris target")
    parser.add_argument("--scale", type=int, default=100,
                        help="hypothesis examples, as a multiple of the test command's")
    parser.add_argument("--out", type=Path,
                        default=Path(tempfile.gettempdir()) / "trio-websocket-fuzz",
                        help="corpora and crash files")
    parser.add_argument("--jobs", type=int, default=1, help="atheris worker processes")
    parser.add_argument("--only", choices=[*TARGETS, "properties"], action="append",
                        help="run only these (repeatable)")
    options = parser.parse_args()
    chosen = options.only or [*TARGETS, "properties"]
    ok = True
    for name in TARGETS:
        if name in chosen:
            ok = fuzz_target(name, options.seconds, options.out, options.jobs) and ok
    if "properties" in chosen:
        ok = run_properties(options.scale) and ok
    print("fuzzing found nothing" if ok else "fuzzing FAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
