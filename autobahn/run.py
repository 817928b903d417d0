"""Run the Autobahn TestSuite against trio-websocket in both roles and summarise.

    python autobahn/run.py [--role server|client|both] [--cases GLOB ...] [--skip GLOB ...]
                           [--short] [--every SECONDS]

Server role: kosoku's fuzzing client drives autobahn/server.py. Client role:
autobahn/client.py drives kosoku's fuzzing server. Reports (JSON and HTML)
go to autobahn/reports/{servers,clients}. Prints a table per section (counts
by outcome, slowest cases) and exits non-zero unless every case is OK,
NON-STRICT or INFORMATIONAL.

While it works it prints progress, one line at a time (a CI log stays
readable): when each role, client pass and section starts and ends, and
every --every seconds (15 by default) without other news, how many cases
each role has started and which ones run now. kosoku itself says nothing
until its run ends, so the runner starts it through this file
(``run.py kosoku ARGS``), which has each case print its id as it opens.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# kosoku, with its sections 12 and 13 given the bytes they hash (see kosoku_cli.py),
# started through this file so that each case says when it opens (kosoku_with_progress).
KOSOKU = [sys.executable, str(Path(__file__).resolve()), "kosoku"]
#: What a case prints on kosoku's stderr as it opens, before its id.
CASE_OPENS = "autobahn-case-opens "


def kosoku_with_progress(argv: list[str]) -> None:
    """Run kosoku_cli.py's kosoku with every case announcing itself on stderr as it opens."""
    import kosoku_cli  # noqa: F401  (importing it applies its fix; autobahn/ is sys.path[0])
    from kosoku._cli import main as kosoku_main
    from kosoku.cases import CASES

    def announce(case_id: str, owner: type, on_open: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def announced(self: Any) -> Any:
            if type(self) is owner:  # not when a subclass's case calls this one's onOpen
                os.write(2, f"{CASE_OPENS}{case_id}\n".encode())  # one write: threads share it
            return on_open(self)
        return announced

    for case_id, case in CASES.items():
        case_class: Any = case
        case_class.onOpen = announce(case_id, case, case_class.onOpen)
    sys.argv = ["kosoku", *argv]
    kosoku_main()


def case_ids() -> list[str]:
    """Every case id kosoku knows, in its order."""
    from kosoku.cases import CASES

    return list(CASES)


def select(include: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """The case ids a kosoku selection (-i/-x globs) holds, for the progress totals."""
    include, exclude = list(include), list(exclude)
    return [case for case in case_ids()
            if any(fnmatch.fnmatchcase(case, glob) for glob in include)
            and not any(fnmatch.fnmatchcase(case, glob) for glob in exclude)]


def section_name(case_id: str) -> str:
    major = case_id.split(".")[0]
    try:
        from kosoku._report_assets import CaseCategories  # the names its reports use
        return f"section {major} ({CaseCategories[major]})"
    except (ImportError, KeyError):
        return f"section {major}"


def clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


class Progress:
    """Prints how far the run is, a line at a time, from the threads that watch each role.

    A line at each role's and pass's start and end and when a pass opens
    its first case of a section (with cases run two at a time, the order of
    opening is not quite the order of the ids); and, when ``every`` seconds
    went by without one, a line with each role's count of cases started so
    far and the cases running now.
    """

    def __init__(self, every: float) -> None:
        self.every = every
        self.start = self.last = time.monotonic()
        self.lock = threading.Lock()
        self.totals: dict[str, int] = {}  # role -> cases it runs
        self.started: dict[str, int] = {}  # role -> cases opened so far
        self.running: dict[str, dict[str, str]] = {}  # role -> pass -> case open now
        self.sections: set[tuple[str, str, str]] = set()  # (role, pass, section) seen
        self.stop = threading.Event()

    def say(self, text: str) -> None:
        with self.lock:
            self.last = time.monotonic()
            print(f"[{clock(self.last - self.start)}] {text}", flush=True)

    def role_starts(self, role: str, total: int, how: str) -> None:
        with self.lock:
            self.totals[role], self.started[role], self.running[role] = total, 0, {}
        self.say(f"{role} role starts: {total} cases, {how}")

    def role_ends(self, role: str, seconds: float) -> None:
        with self.lock:
            self.running.pop(role, None)
        self.say(f"{role} role done: {self.started.get(role, 0)} cases opened in {seconds:.1f} s")

    def pass_ends(self, role: str, label: str) -> None:
        with self.lock:
            self.running.get(role, {}).pop(label, None)

    def case_opens(self, role: str, label: str, case_id: str) -> None:
        key = (role, label, case_id.split(".")[0])
        with self.lock:
            self.running.setdefault(role, {})[label] = case_id
            self.started[role] = self.started.get(role, 0) + 1
            count = self.started[role]
            new_section = key not in self.sections
            self.sections.add(key)
        if new_section:
            where = "" if label == role else f" ({label})"
            self.say(f"{role}{where}: {section_name(case_id)} from {case_id}, "
                     f"case {count} of {self.totals.get(role, 0)}")

    def watch(self, role: str, label: str, stream: IO[str]) -> None:
        """Read kosoku's stderr to its end, counting the cases as they open."""
        for line in stream:
            if line.startswith(CASE_OPENS):
                self.case_opens(role, label, line[len(CASE_OPENS):].strip())

    def heartbeat(self) -> None:
        """Every ``every`` seconds without other news, one line on each running role."""
        while not self.stop.wait(max(1.0, self.every / 3)):
            with self.lock:
                quiet = time.monotonic() - self.last >= self.every
                states = [f"{role} {self.started[role]}/{self.totals[role]} cases"
                          + (f" (now {', '.join(sorted(running.values()))})" if running else "")
                          for role, running in self.running.items()]
            if quiet and states:
                self.say("; ".join(states))


def read_line(process: subprocess.Popen[str], stream: str, marker: str) -> str:
    pipe = process.stdout if stream == "stdout" else process.stderr
    assert pipe is not None
    for line in pipe:
        if marker in line:
            return line
    raise RuntimeError(f"{marker!r} never appeared; exit code {process.wait()}")


def run_server_role(cases: list[str], skip: list[str], outdir: Path,
                    progress: Progress) -> float:
    server = subprocess.Popen([sys.executable, str(HERE / "server.py"), "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = read_line(server, "stdout", "listening on").split()[-1]
        selection = [arg for case in cases for arg in ("-i", case)]
        selection += [arg for case in skip for arg in ("-x", case)]
        start = time.monotonic()
        progress.role_starts("server", len(select(cases, skip)),
                             "kosoku's fuzzing client against server.py, 2 cases at a time")
        fuzzer = subprocess.Popen([*KOSOKU, "-m", "fuzzingclient", "-p", "2", "-o",
                                   str(outdir / "all"), *selection, f"127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert fuzzer.stderr is not None
        try:
            progress.watch("server", "server", fuzzer.stderr)
        finally:
            fuzzer.wait()
        seconds = time.monotonic() - start
        progress.role_ends("server", seconds)
        return seconds
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


# Sections 12 and 13 send 1,000 messages per case. Cases 9 and 10 of each group
# carry 64 and 128 KiB messages, and cases 13-18 32-128 KiB ones in fragments;
# together they take about 85% of a run's time. What is left still covers every
# compression setting and payload kind, messages up to 32 KiB, and 8 and 16 KiB
# messages in 256-byte fragments (cases 11 and 12). --short (the generic-path
# pass of the test command) leaves them out; the default pass runs them all.
LARGE_COMPRESSION_CASES = [f"{section}.*.{case}" for section in (12, 13)
                           for case in (9, 10, 13, 14, 15, 16, 17, 18)]


def run_client_pass(include: list[str], exclude: list[str], extra: list[str],
                    outdir: Path, progress: Progress) -> None:
    count = len(select(include, exclude))
    selection = [arg for case in include for arg in ("-i", case)]
    selection += [arg for case in exclude for arg in ("-x", case)]
    label = outdir.name
    progress.say(f"client pass {label} starts: {count} cases"
                 + (f", client.py {' '.join(extra)}" if extra else ""))
    start = time.monotonic()
    fuzzer = subprocess.Popen([*KOSOKU, "-m", "fuzzingserver", "-o", str(outdir), *selection,
                               "127.0.0.1:0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              text=True)
    assert fuzzer.stderr is not None
    # Its stderr is read to the end, so kosoku never blocks on a full pipe.
    watcher = threading.Thread(target=progress.watch, args=("client", label, fuzzer.stderr))
    try:
        url = read_line(fuzzer, "stderr", "listening on").split()[-1]
        watcher.start()
        subprocess.run([sys.executable, str(HERE / "client.py"), url, *extra], check=True)
        fuzzer.wait(timeout=120)
    except RuntimeError:
        pass  # the selection holds no case: kosoku exits at once
    finally:
        fuzzer.kill()
        fuzzer.wait()
        if watcher.is_alive():
            watcher.join()
    progress.pass_ends("client", label)
    progress.say(f"client pass {label} done: {count} cases in {time.monotonic() - start:.1f} s")


def run_client_role(cases: list[str], skip: list[str], outdir: Path,
                    progress: Progress) -> float:
    start = time.monotonic()
    special = [glob for glob, _ in CLIENT_PASSES]
    passes: list[tuple[list[str], list[str], list[str], Path]] = []
    if cases == ["*"]:
        # Each pass is one case at a time (our client and the fuzzing server
        # take turns on about one core); section 12 is about half of the work,
        # so it gets a fuzzing server of its own and the role keeps two cores
        # busy, as the server role does with -p 2.
        passes.append((["12.*"], skip, [], outdir / "default-offer-12"))
        passes.append((["*"], ["12.*", *special, *skip], [], outdir / "default-offer"))
    else:
        passes.append((cases, [*special, *skip], [], outdir / "default-offer"))
    for glob, extra in CLIENT_PASSES:
        if cases == ["*"] or any(case.startswith(glob[:-1]) or case == glob for case in cases):
            passes.append(([glob], skip, extra, outdir / glob[:-2]))
    progress.role_starts("client", sum(len(select(include, exclude))
                                       for include, exclude, _, _ in passes),
                         f"client.py against kosoku's fuzzing server, in {len(passes)} "
                         f"pass{'es' if len(passes) > 1 else ''}, 2 at a time")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(run_client_pass, *each, progress) for each in passes]:
            future.result()
    seconds = time.monotonic() - start
    progress.role_ends("client", seconds)
    return seconds


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
    parser.add_argument("--skip", nargs="*", default=[], metavar="CASES",
                        help="case ids or globs to leave out of the selection")
    parser.add_argument("--short", action="store_true",
                        help="leave out the compression cases with the largest messages "
                             "(12.*.9-10 and 12.*.13-18, the same in 13)")
    parser.add_argument("--every", type=float, default=15.0, metavar="SECONDS",
                        help="a progress line at least this often while cases run")
    args = parser.parse_args()
    if args.short:
        args.skip += LARGE_COMPRESSION_CASES
    generic = os.environ.get("TRIO_WEBSOCKET_GENERIC_IO", "0") != "0"
    print("autobahn over " + ("the generic stream methods (TRIO_WEBSOCKET_GENERIC_IO=1)"
                              if generic else "the default I/O path"), flush=True)
    # The roles run side by side, each keeping about one core busy.
    timings: dict[str, float] = {}
    threads = []
    progress = Progress(args.every)
    heartbeat = threading.Thread(target=progress.heartbeat, daemon=True)
    heartbeat.start()
    for role, runner in (("server", run_server_role), ("client", run_client_role)):
        if args.role in (role, "both"):
            outdir = HERE / "reports" / f"{role}s"
            shutil.rmtree(outdir, ignore_errors=True)
            thread = threading.Thread(
                target=lambda role=role, runner=runner, outdir=outdir: timings.__setitem__(
                    role, runner(args.cases, args.skip, outdir, progress)))
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join()
    progress.stop.set()
    heartbeat.join()
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
    if sys.argv[1:2] == ["kosoku"]:
        kosoku_with_progress(sys.argv[2:])
    else:
        sys.exit(main())
