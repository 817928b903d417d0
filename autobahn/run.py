"""Run the Autobahn TestSuite against trio-websocket in both roles and summarise.

    python autobahn/run.py [--role server|client|both] [--cases GLOB ...]

Server role: kosoku's fuzzing client drives autobahn/server.py. Client role:
autobahn/client.py drives kosoku's fuzzing server. Reports (JSON and HTML)
go to autobahn/reports/{servers,clients}. Prints a table per section (counts
by outcome, slowest cases) and exits non-zero unless every case is OK,
NON-STRICT or INFORMATIONAL.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# kosoku, with its sections 12 and 13 given the bytes they hash (see kosoku_cli.py).
KOSOKU = [sys.executable, str(HERE / "kosoku_cli.py")]


def read_line(process: subprocess.Popen[str], stream: str, marker: str) -> str:
    pipe = process.stdout if stream == "stdout" else process.stderr
    assert pipe is not None
    for line in pipe:
        if marker in line:
            return line
    raise RuntimeError(f"{marker!r} never appeared; exit code {process.wait()}")


def run_server_role(cases: list[str], outdir: Path) -> float:
    server = subprocess.Popen([sys.executable, str(HERE / "server.py"), "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = read_line(server, "stdout", "listening on").split()[-1]
        selection = [arg for case in cases for arg in ("-i", case)]
        start = time.monotonic()
        subprocess.run([*KOSOKU, "-m", "fuzzingclient", "-p", "2", "-o", str(outdir / "all"),
                        *selection, f"127.0.0.1:{port}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.monotonic() - start
    finally:
        server.kill()
        server.wait()


# Client-role passes: (case glob, extra client arguments). Cases 13.2, 13.5
# and 13.6 describe a particular client offer; the rest take the default one.
CLIENT_PASSES = [
    ("13.2.*", ["--no-context-takeover", "0"]),
    ("13.5.*", ["--no-context-takeover", "9"]),
    ("13.6.*", ["--no-context-takeover", "15"]),
]


def run_client_pass(include: list[str], exclude: list[str], extra: list[str],
                    outdir: Path) -> None:
    selection = [arg for case in include for arg in ("-i", case)]
    selection += [arg for case in exclude for arg in ("-x", case)]
    fuzzer = subprocess.Popen([*KOSOKU, "-m", "fuzzingserver", "-o", str(outdir), *selection,
                               "127.0.0.1:0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              text=True)
    try:
        url = read_line(fuzzer, "stderr", "listening on").split()[-1]
        subprocess.run([sys.executable, str(HERE / "client.py"), url, *extra], check=True)
        fuzzer.wait(timeout=120)
    except RuntimeError:
        pass  # the selection holds no case: kosoku exits at once
    finally:
        fuzzer.kill()
        fuzzer.wait()


def run_client_role(cases: list[str], outdir: Path) -> float:
    start = time.monotonic()
    special = [glob for glob, _ in CLIENT_PASSES]
    passes: list[tuple[list[str], list[str], list[str], Path]] = []
    if cases == ["*"]:
        # Each pass is one case at a time (our client and the fuzzing server
        # take turns on about one core); section 12 is about half of the work,
        # so it gets a fuzzing server of its own and the role keeps two cores
        # busy, as the server role does with -p 2.
        passes.append((["12.*"], [], [], outdir / "default-offer-12"))
        passes.append((["*"], ["12.*", *special], [], outdir / "default-offer"))
    else:
        passes.append((cases, special, [], outdir / "default-offer"))
    for glob, extra in CLIENT_PASSES:
        if cases == ["*"] or any(case.startswith(glob[:-1]) or case == glob for case in cases):
            passes.append(([glob], [], extra, outdir / glob[:-2]))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(run_client_pass, *each) for each in passes]:
            future.result()
    return time.monotonic() - start


def load_results(outdir: Path) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    for index in sorted(outdir.rglob("index.json")):
        for agent_results in json.loads(index.read_text()).values():
            results.update(agent_results)
    return results


def summarise(role: str, outdir: Path, seconds: float) -> tuple[int, int]:
    """Print a role's table; return (passed, failed) case counts."""
    results = load_results(outdir)
    sections: dict[str, list[tuple[str, dict[str, object]]]] = collections.defaultdict(list)
    for case_id, result in results.items():
        sections[case_id.split(".")[0]].append((case_id, result))
    print(f"\n== {role} role: {len(results)} cases in {seconds:.1f} s ==")
    print(f"{'section':>7}  {'cases':>5}  {'outcomes':<38} slowest (ms)")
    failures = []
    for section in sorted(sections, key=int):
        entries = sections[section]
        counts = collections.Counter(str(r["behavior"]) for _, r in entries)
        outcome = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        slowest = sorted(entries, key=lambda e: -int(e[1].get("duration", 0)))[:3]  # type: ignore[call-overload]
        slow = ", ".join(f"{cid} {r.get('duration', 0)}" for cid, r in slowest)
        print(f"{section:>7}  {len(entries):>5}  {outcome:<38} {slow}")
        failures += [(cid, r["behavior"]) for cid, r in entries if r["behavior"] not in PASSING]
    if failures:
        print(f"FAILED in the {role} role: {failures}")
    return len(results) - len(failures), len(failures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["server", "client", "both"], default="both")
    parser.add_argument("--cases", nargs="*", default=["*"], help="case ids or globs")
    args = parser.parse_args()
    generic = os.environ.get("TRIO_WEBSOCKET_GENERIC_IO", "0") != "0"
    print("autobahn over " + ("the generic stream methods (TRIO_WEBSOCKET_GENERIC_IO=1)"
                              if generic else "the default I/O path"), flush=True)
    # The roles run side by side, each keeping about one core busy.
    timings: dict[str, float] = {}
    threads = []
    for role, runner in (("server", run_server_role), ("client", run_client_role)):
        if args.role in (role, "both"):
            outdir = HERE / "reports" / f"{role}s"
            shutil.rmtree(outdir, ignore_errors=True)
            thread = threading.Thread(
                target=lambda role=role, runner=runner, outdir=outdir: timings.__setitem__(
                    role, runner(args.cases, outdir)))
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join()
    passed = failed = 0
    for role, seconds in timings.items():
        role_passed, role_failed = summarise(role, HERE / "reports" / f"{role}s", seconds)
        passed += role_passed
        failed += role_failed
    if len(timings) != len(threads):
        print("a role did not finish")
        failed += 1
    print(f"\nautobahn: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed else 1


if __name__ == "__main__":
    sys.exit(main())
