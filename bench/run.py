"""Benchmark trio-websocket against websockets and trio-websocket 0.12.2, in one run.

    hatch run bench:run [--workloads rtt pipe ...]

Each library runs from its own environment (0.12.2 shares our import name):
ours from the hatch environment, the others from virtual environments made
once under bench/.venvs. For every workload the server and the client are
separate processes, so each has a core, on 127.0.0.1; compression is off.
Autobahn section 9 runs three times per library and reports medians.
Prints rates and our advantage over each peer, and writes bench/latest.md
and bench/latest.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
VENVS = HERE / ".venvs"

# name -> (requirement to install, or None for the current environment; peer script)
LIBRARIES = {
    "trio-websocket": (None, "trio_peer.py"),
    "websockets": ("websockets", "websockets_peer.py"),
    "trio-websocket 0.12.2": ("trio-websocket==0.12.2", "trio_peer.py"),
}
# Autobahn section 9, per library: the cases it passed (with their seconds), and
# the ones it failed. A failed case is no measure of speed: a peer that gives up
# early looks fast, one that hangs looks slow. So the table also compares the
# cases that every library passed.
PASSED: dict[str, dict[str, float]] = {}
# Section 9 is mostly the driver's own time (see docs/performance.md), so its
# run-to-run noise is as large as the differences: take medians of a few runs.
AUTOBAHN_RUNS = 3
FAILURES: dict[str, list[str]] = {}
COMMON = "autobahn9, cases all pass"
# workload -> (unit, higher is better)
WORKLOADS = {
    "rtt": ("msg/s", True),
    "pipe": ("msg/s", True),
    "large": ("MB/s", True),
    "conns": ("conn/s", True),
    "fanin": ("msg/s", True),
    "memory": ("KiB/conn", False),
    "autobahn9": ("s", False),
}
UNITS = {**WORKLOADS, COMMON: ("s", False)}


def python_for(name: str) -> str:
    requirement = LIBRARIES[name][0]
    if requirement is None:
        return sys.executable
    venv = VENVS / requirement.replace("=", "-")
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        requirement], check=True)
    return str(python)


def start_server(python: str, script: str, max_size: int) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([python, str(PEERS / script), "server", str(max_size)],
                              stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("PORT"):
        server.kill()
        raise RuntimeError(f"{script} server did not start: {line!r}")
    return server, f"ws://127.0.0.1:{line.split()[1]}/"


def autobahn9(name: str) -> float:
    """Median seconds of AUTOBAHN_RUNS runs of section 9; per-case medians go to PASSED."""
    python, script = python_for(name), LIBRARIES[name][1]
    walls: list[float] = []
    durations: dict[str, list[float]] = {}
    failed: set[str] = set()
    for _ in range(AUTOBAHN_RUNS):
        server, url = start_server(python, script, 32 * 2**20)
        try:
            with tempfile.TemporaryDirectory() as reports:
                start = time.perf_counter()
                subprocess.run([sys.executable, "-c", "from kosoku._cli import main; main()",
                                "-m", "fuzzingclient", "-i", "9.*", "-o", reports,
                                url.removeprefix("ws://").rstrip("/")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                walls.append(time.perf_counter() - start)
                index = json.loads((Path(reports) / "index.json").read_text())
        finally:
            server.kill()
            server.wait()
        for case, result in ((c, r) for agent in index.values() for c, r in agent.items()):
            if result["behavior"] in ("OK", "NON-STRICT", "INFORMATIONAL"):
                durations.setdefault(case, []).append(result["duration"] / 1000)
            else:
                failed.add(case)
    PASSED[name] = {case: statistics.median(times) for case, times in durations.items()
                    if case not in failed}
    if failed:  # a failed case may be cut short, or end in a timeout
        FAILURES[name] = sorted(failed)
    return statistics.median(walls)


def measure(name: str, workload: str) -> float:
    if workload == "autobahn9":
        return autobahn9(name)
    python, script = python_for(name), LIBRARIES[name][1]
    server, url = start_server(python, script, 2**20)
    try:
        result = subprocess.run([python, str(PEERS / script), "client", workload, url],
                                capture_output=True, text=True, timeout=600,
                                cwd=tempfile.gettempdir())
        if result.returncode:
            raise RuntimeError(f"{name} {workload}: {result.stderr[-2000:]}")
        return float(json.loads(result.stdout.strip().splitlines()[-1])["value"])
    finally:
        server.kill()
        server.wait()


def advantage(workload: str, ours: float, theirs: float) -> float:
    """How many times better ours is (above 1) or worse (below 1)."""
    higher_is_better = UNITS[workload][1]
    return ours / theirs if higher_is_better else theirs / ours


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = parser.parse_args()
    names = list(LIBRARIES)
    results: dict[str, dict[str, float]] = {}
    for workload in args.workloads:
        results[workload] = {name: measure(name, workload) for name in names}
        row = results[workload]
        print(f"{workload:>9}: " + ", ".join(f"{n} {row[n]:,.1f}" for n in names), flush=True)
        if workload == "autobahn9":
            common = set.intersection(*(set(PASSED[n]) for n in names))
            results[COMMON] = {n: sum(PASSED[n][case] for case in common) for n in names}

    header = ("| workload | unit | " + " | ".join(names)
              + " | ours vs websockets | ours vs 0.12.2 |")
    lines = [f"Measured on {machine()}, {time.strftime('%Y-%m-%d')}.", "",
             "Advantage: how many times better ours is (rates: ours / theirs; memory and time: "
             "theirs / ours); above 1 means we win.", "", header,
             "|" + " --- |" * (len(names) + 4)]
    for workload, row in results.items():
        ours = row[names[0]]
        lines.append(f"| {workload} | {UNITS[workload][0]} | "
                     + " | ".join(f"{row[n]:,.1f}" for n in names)
                     + f" | {advantage(workload, ours, row[names[1]]):.2f}x"
                     + f" | {advantage(workload, ours, row[names[2]]):.2f}x |")
    for name, cases in FAILURES.items():
        lines += ["", f"autobahn9: {name} failed {len(cases)} case(s) in {AUTOBAHN_RUNS} runs "
                  f"({', '.join(cases)}); '{COMMON}' sums the per-case times of the "
                  "cases every library passed."]
    table = "\n".join(lines)
    print("\n" + table)
    (HERE / "latest.md").write_text(table + "\n")
    chart(results, names)


def chart(results: dict[str, dict[str, float]], names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results)
    figure, axes = plt.subplots(figsize=(9, 4.5))
    width = 0.38
    for i, peer in enumerate(names[1:]):
        values = [advantage(w, results[w][names[0]], results[w][peer]) for w in workloads]
        bars = axes.bar([x + (i - 0.5) * width for x in range(len(workloads))], values, width,
                        label=f"vs {peer}")
        axes.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
    axes.axhline(1, color="black", linewidth=0.8)
    axes.set_xticks(range(len(workloads)), [w.replace(", ", ",\n") for w in workloads])
    axes.set_yscale("log")
    axes.set_ylabel("times better than the peer (log scale)")
    axes.set_title("trio-websocket: advantage per workload (above 1: we win)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(HERE / "latest.png", dpi=110)


if __name__ == "__main__":
    main()
