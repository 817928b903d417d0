"""Benchmark trio-websocket against websockets and trio-websocket 0.12.2, in one run.

    hatch run bench:run [--workloads rtt pipe ...]
    hatch run bench:run --workloads stall_send stall_get   # fairness only

Each library runs from its own environment (0.12.2 shares our import name):
ours from the hatch environment, the others from virtual environments made
once under bench/.venvs. For every workload the server and the client are
separate processes, so each has a core, on 127.0.0.1; compression is off,
except in ``text`` and ``binary`` (peers/payloads.py), which run each library
at its defaults on both ends: ours and websockets compress (permessage-
deflate), 0.12.2 cannot. Their notes give the bytes on the wire. The rows
marked "plain install" run ours as ``pip install`` gives it: our four
packages built into wheels at each run (the core's build hook compiles its C
masking accelerator when a compiler works) in a virtual environment of their
own; every other row of ours runs from the editable hatch environment.
Autobahn section 9 runs three times per library and reports medians.

Two workloads measure fairness rather than speed: how long a sibling task in
the client's event loop, looping on ``sleep(0)``, waits for its turn at most
while the main task runs a tight loop (peers/stall.py, the same code for
every library). ``stall_send`` sends 200,000 32-byte messages back to back
while a reader task takes the echoes (as ``pipe``); ``stall_get`` first has
the server send 200,000 such messages (path /burst) into an unbounded client
queue, then gets them in a tight loop. Both report the longest gap in ms,
lower is better, as the median of three runs; the notes under the table give
every run, the sibling's turns in the loop and its floor (the longest gap with
the sibling alone).

Every workload but ``autobahn9`` also runs over ``wss://`` (TLS with a
certificate authority and a server certificate for 127.0.0.1 made by trustme
for the run, peers/tls.py), and ours once more over ``ws://`` with the
raw-descriptor fast path turned off (``TRIO_WEBSOCKET_GENERIC_IO=1``): the
generic stream path that TLS, Windows and wrapped streams take. Those rows
compare ours on the generic path with the others' ``ws://`` figures from the
same run. Autobahn's driver (kosoku) speaks no TLS.

While it runs it prints a line as each measurement starts: the workload,
transport and library, its place in the run (k/N) and the time so far; and a
line when a library's virtual environment is made (once, with pip).

Prints rates and our advantage over each peer. A run of every workload
writes bench/latest.md and bench/latest.png (the chart); a run of only some
(``--workloads``) prints its table and leaves those files as they are.
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

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import tls  # the peers' TLS settings, shared with the benchmark

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
    "large, plain install": ("MB/s", True),
    "text": ("MB/s", True),
    "text, plain install": ("MB/s", True),
    "binary": ("MB/s", True),
    "conns": ("conn/s", True),
    "fanin": ("msg/s", True),
    "memory": ("KiB/conn", False),
    "autobahn9": ("s", False),
    "stall_send": ("ms", False),
    "stall_get": ("ms", False),
}
UNITS = {**WORKLOADS, COMMON: ("s", False)}
STALLS = ("stall_send", "stall_get")
# Workloads at each library's default compression (the server is told so).
DEFAULTS = ("text", "binary")
# A row of ours from the plain install -> the workload it runs.
PLAIN = {"large, plain install": "large", "text, plain install": "text"}
OURS = "trio-websocket"
# transport -> the suffix of its rows. "generic" runs only ours, over ws://.
TRANSPORTS = {"ws": "", "wss": ", wss", "generic": ", generic path"}
NO_TLS = ("autobahn9",)  # kosoku, Autobahn's driver, speaks no TLS
TLS_DIR = Path(tempfile.mkdtemp(prefix="bench-tls-"))
# workload -> library -> (bytes the client read and wrote, payload bytes both ways)
WIRE: dict[str, dict[str, tuple[int, int]]] = {}
# A longest gap is an extreme: one preemption by the OS or one garbage
# collection sets it. So the stall workloads report medians of a few runs.
STALL_RUNS = 3
# workload -> library -> each run's report from the peer (the stall workloads)
DETAILS: dict[str, dict[str, list[dict[str, float]]]] = {}
# An advantage is shown no larger than this (nor smaller than its inverse): a
# value of 0 on one side would otherwise make it infinite.
CAP = 1000.0


class Progress:
    """A line as each measurement starts: where the run is (k/N) and how long it has taken."""

    def __init__(self) -> None:
        self.begin(0)

    def begin(self, total: int) -> None:
        """Start counting a run of ``total`` measurements, and its clock."""
        self.total = total
        self.done = 0
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        seconds = int(time.monotonic() - self.start)
        print(f"[{seconds // 60}:{seconds % 60:02d}] {text}", flush=True)

    def measuring(self, name: str, workload: str, transport: str) -> None:
        self.done += 1
        runs = (AUTOBAHN_RUNS if workload == "autobahn9" else STALL_RUNS if workload in STALLS
                else 1)
        self.say(f"{self.done}/{max(self.total, self.done)} {workload} over {transport}: {name}"
                 + (f" ({runs} runs)" if runs > 1 else ""))


PROGRESS = Progress()


def python_for(name: str) -> str:
    requirement = LIBRARIES[name][0]
    if requirement is None:
        return sys.executable
    venv = VENVS / requirement.replace("=", "-")
    python = venv / "bin" / "python"
    if not python.exists():
        PROGRESS.say(f"making {venv.relative_to(HERE.parent)} for {name} (once, with pip)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        requirement], check=True)
    return str(python)


PLAIN_MASKING: list[str] = []  # how the plain install masks, once it is made


def plain_python() -> str:
    """Python of a virtual environment holding our four packages, installed from wheels."""
    venv = VENVS / "trio-websocket-plain"
    python = venv / "bin" / "python"
    if PLAIN_MASKING:
        return str(python)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # Rebuilt at every run, not editable: what a user's pip install gives.
    PROGRESS.say(f"installing our four packages into {venv.relative_to(HERE.parent)} "
                 "from wheels (pip)")
    packages = HERE.parent / "packages"
    dirs = [str(packages / name) for name in ("trio-websocket-core", "trio-websocket-client",
                                                "trio-websocket-server", "trio-websocket")]
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *dirs], check=True)
    subprocess.run([*pip, "--no-deps", "--force-reinstall", *dirs], check=True)
    check = subprocess.run([str(python), "-c", "from trio_websocket_core import _mask; "
                            "print(_mask.ACCELERATED)"], capture_output=True, text=True,
                           check=True, cwd=tempfile.gettempdir())
    PLAIN_MASKING.append("the C accelerator" if check.stdout.strip() == "True"
                         else "pure Python (the core was built without a C compiler)")
    PROGRESS.say(f"the plain install masks with {PLAIN_MASKING[0]}")
    return str(python)


def environment(transport: str = "ws") -> dict[str, str]:
    """The peers' environment for a transport."""
    # websockets 14+ gives up on a message of more than 4,096 fragments
    # (TooManyFragments), which fails Autobahn 9.3.x/9.4.x early and so looks
    # fast; lifted here (its documented variable) so every library does the same work.
    env = {**os.environ, "WEBSOCKETS_MAX_FRAGMENTS": str(2**20)}
    env.pop("BENCH_TLS", None)
    env.pop("TRIO_WEBSOCKET_GENERIC_IO", None)
    if transport == "wss":
        if not (TLS_DIR / tls.CA_PEM).exists():
            tls.write_certificates(TLS_DIR)
        env["BENCH_TLS"] = str(TLS_DIR)
    elif transport == "generic":
        env["TRIO_WEBSOCKET_GENERIC_IO"] = "1"
    return env


def start_server(python: str, script: str, max_size: int, defaults: bool = False,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    env = env or environment()
    server = subprocess.Popen([python, str(PEERS / script), "server", str(max_size),
                               *(["default"] if defaults else [])],
                              stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
                              env=env)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("PORT"):
        server.kill()
        raise RuntimeError(f"{script} server did not start: {line!r}")
    scheme = "wss" if "BENCH_TLS" in env else "ws"
    return server, f"{scheme}://127.0.0.1:{line.split()[1]}/"


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


def measure(name: str, workload: str, transport: str = "ws") -> float:
    if workload == "autobahn9":
        return autobahn9(name)
    row = workload + TRANSPORTS[transport]
    if workload in STALLS:
        runs = sorted((measure_once(name, workload, transport) for _ in range(STALL_RUNS)),
                      key=lambda report: report["value"])
        DETAILS.setdefault(row, {})[name] = runs
        return statistics.median(report["value"] for report in runs)
    report = measure_once(name, workload, transport)
    if "wire" in report:
        WIRE.setdefault(row, {})[name] = (int(report["wire"]), int(report["payload"]))
    return report["value"]


def measure_once(name: str, workload: str, transport: str) -> dict[str, float]:
    """One run of the peer's client: its report, {"value": ...} and maybe more."""
    python, script = python_for(name), LIBRARIES[name][1]
    if workload in PLAIN:
        workload = PLAIN[workload]
        if name == OURS:
            python = plain_python()
    env = environment(transport)
    server, url = start_server(python, script, 2**20, defaults=workload in DEFAULTS, env=env)
    try:
        result = subprocess.run([python, str(PEERS / script), "client", workload, url],
                                capture_output=True, text=True, timeout=600,
                                cwd=tempfile.gettempdir(), env=env)
        if result.returncode:
            raise RuntimeError(f"{name} {workload}: {result.stderr[-2000:]}")
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))
    finally:
        server.kill()
        server.wait()


def advantage(workload: str, ours: float, theirs: float) -> float:
    """How many times better ours is (above 1) or worse (below 1), within CAP either way."""
    higher_is_better = UNITS[workload][1]
    better, worse = (ours, theirs) if higher_is_better else (theirs, ours)
    if worse <= 0:  # e.g. a stall of 0 ms on our side
        return 1.0 if better <= 0 else CAP
    return min(CAP, max(1 / CAP, better / worse))


def times(ratio: float) -> str:
    """An advantage as the table shows it; a capped one says so."""
    if ratio >= CAP:
        return f">={CAP:,.0f}x"
    if ratio <= 1 / CAP:
        return f"<={1 / CAP:g}x"
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"  # 0.0048x, not 0.00x


def number(workload: str, value: float) -> str:
    return f"{value:,.2f}" if UNITS[workload][0] == "ms" else f"{value:,.1f}"


def stall_note(runs: list[dict[str, float]]) -> str:
    """The cells of one library's row in the stall details; ``runs`` sorted by value."""
    middle = runs[len(runs) // 2]
    return " | ".join([
        " / ".join(f"{run['value']:,.2f}" for run in runs),
        " / ".join(f"{run['cpu_ms']:,.2f}" for run in runs),
        f"{middle['turns']:,.0f} in {middle['seconds']:.2f} s",
        f"{statistics.median(run['idle_ms'] for run in runs):.2f} ms, "
        f"{statistics.median(run['idle_turn_us'] for run in runs):.1f} us/turn"])


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


def base(row: str) -> str:
    """The workload a table row measures: "rtt, wss" -> "rtt"."""
    for suffix in TRANSPORTS.values():
        if suffix and row.endswith(suffix):
            return row.removesuffix(suffix)
    return row


def plan(workloads: list[str], transports: list[str],
         names: list[str]) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """The run, in order: (row, workload, transport, [(library, transport it runs over)])."""
    rows = []
    measured: set[str] = set()  # workloads with the others' ws:// figures by then
    for transport in transports:
        for workload in workloads:
            if transport != "ws" and workload in NO_TLS:
                continue
            row = workload + TRANSPORTS[transport]
            if transport == "generic":
                # The generic rows compare ours with the others' ws:// figures:
                # without a ws:// pass before, the others run over ws:// now.
                others = [] if workload in measured else [(name, "ws") for name in names[1:]]
                rows.append((row, workload, transport, [*others, (OURS, "generic")]))
                measured.add(workload)
            else:
                rows.append((row, workload, transport, [(name, transport) for name in names]))
                if transport == "ws":
                    measured.add(workload)
    return rows


def run(workloads: list[str], transports: list[str],
        names: list[str]) -> dict[str, dict[str, float]]:
    """Measure every workload over every transport: row -> library -> value."""
    results: dict[str, dict[str, float]] = {}
    plain: dict[str, dict[str, float]] = {}  # the others' ws:// figures, for the generic rows
    steps = plan(workloads, transports, names)
    PROGRESS.begin(sum(len(jobs) for _, _, _, jobs in steps))
    for row, workload, transport, jobs in steps:
        values = {}
        for name, over in jobs:
            PROGRESS.measuring(name, workload, over)
            values[name] = measure(name, workload, over)
        if transport == "generic":
            if workload not in plain:
                plain[workload] = {name: values[name] for name in names[1:]}
            results[row] = {**plain[workload], OURS: values[OURS]}
        else:
            results[row] = values
            if transport == "ws":
                plain[workload] = results[row]
        print(f"{row:>24}: " + ", ".join(
            f"{n} {number(workload, results[row][n])}" for n in names), flush=True)
        if workload == "autobahn9":
            common = set.intersection(*(set(PASSED[n]) for n in names))
            results[COMMON] = {n: sum(PASSED[n][case] for case in common) for n in names}
    PROGRESS.say(f"all {PROGRESS.done} measurements done")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--transports", nargs="*", default=list(TRANSPORTS),
                        choices=list(TRANSPORTS))
    args = parser.parse_args()
    names = list(LIBRARIES)
    results = run(args.workloads, args.transports, names)

    header = ("| workload | unit | " + " | ".join(names)
              + " | ours vs websockets | ours vs 0.12.2 |")
    lines = [f"Measured on {machine()}, {time.strftime('%Y-%m-%d')}.", "",
             "Advantage: how many times better ours is (rates: ours / theirs; memory, time and "
             "stalls: theirs / ours); above 1 means we win. Rows ending in \"wss\" run every "
             "library over TLS; rows ending in \"generic path\" run ours over ws:// with the "
             "raw-descriptor fast path off, against the others' ws:// figures of the rows "
             "above.", "", header,
             "|" + " --- |" * (len(names) + 4)]
    for row, values in results.items():
        workload = base(row)
        ours = values[names[0]]
        lines.append(f"| {row} | {UNITS[workload][0]} | "
                     + " | ".join(number(workload, values[n]) for n in names)
                     + f" | {times(advantage(workload, ours, values[names[1]]))}"
                     + f" | {times(advantage(workload, ours, values[names[2]]))} |")
    for name, cases in FAILURES.items():
        lines += ["", f"autobahn9: {name} failed {len(cases)} case(s) in {AUTOBAHN_RUNS} runs "
                  f"({', '.join(cases)}); '{COMMON}' sums the per-case times of the "
                  "cases every library passed."]
    if PLAIN_MASKING:
        lines += ["", "The rows marked \"plain install\" run ours installed from wheels by pip, "
                  f"with no extras; its masking was {PLAIN_MASKING[0]}."]
    if WIRE:
        lines += ["", "Bytes on the wire in the workloads at default compression: IP bytes "
                  "sent both ways while the client ran (TCP/IP headers included), against the "
                  "payload echoed (both ways).", "",
                  "| workload | library | bytes on the wire | payload | wire / payload |",
                  "|" + " --- |" * 5]
        for row, sizes in WIRE.items():
            lines += [f"| {row} | {n} | {wire:,} | {payload:,} | {wire / payload:.3f} |"
                      for n, (wire, payload) in sizes.items()]
    if DETAILS:
        lines += ["", f"Stalls: the median of {STALL_RUNS} runs. Below, each run's longest gap "
                  "between the sibling's turns, in wall time and in the client's CPU time (a "
                  "wall gap well above the CPU one is the OS running something else); the "
                  "sibling's turns in the median run's loop and the loop's length; and the "
                  "floor, the sibling alone for 0.2 s (medians of the runs): its longest gap "
                  "and its mean turn.", "",
                  "| workload | library | longest gap (ms) | on CPU (ms) | turns in the loop "
                  "| floor |", "|" + " --- |" * 6]
        for row, by_library in DETAILS.items():
            lines += [f"| {row} | {n} | {stall_note(runs)} |" for n, runs in by_library.items()]
    table = "\n".join(lines)
    print("\n" + table)
    if set(args.workloads) >= set(WORKLOADS) and set(args.transports) >= set(TRANSPORTS):
        (HERE / "latest.md").write_text(table + "\n")
        chart(results, names)
    else:
        print("\nOnly some workloads ran: bench/latest.md and latest.png are left as they are.")


def chart(results: dict[str, dict[str, float]], names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(title, [row for row in results if (row.endswith(suffix) if suffix else
                                                   base(row) == row)])
              for title, suffix in (("ws://", ""), ("wss://", TRANSPORTS["wss"]),
                                    ("ws://, generic stream path", TRANSPORTS["generic"]))]
    figure, axes_list = plt.subplots(len(panels), 1, figsize=(10, 4 * len(panels)))
    width = 0.38
    for axes, (title, rows) in zip(axes_list, panels, strict=True):
        for i, peer in enumerate(names[1:]):
            values = [advantage(base(r), results[r][names[0]], results[r][peer]) for r in rows]
            bars = axes.bar([x + (i - 0.5) * width for x in range(len(rows))], values, width,
                            label=f"vs {peer}")
            axes.bar_label(bars, labels=[times(v).removesuffix("x") for v in values],
                           fontsize=7)
        axes.axhline(1, color="black", linewidth=0.8)
        labels = [base(r).replace(", ", ",\n") for r in rows]
        axes.set_xticks(range(len(rows)), labels, fontsize=8)
        axes.set_yscale("log")
        axes.set_ylabel("times better (log)")
        axes.set_title(f"trio-websocket over {title}: advantage per workload (above 1: we win)")
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(HERE / "latest.png", dpi=100)


if __name__ == "__main__":
    main()
