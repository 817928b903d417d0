"""Run the test suite over both I/O paths at once: ``python tests/both_paths.py [pytest args]``.

The test command runs the suite twice, over the raw-descriptor path and over
the generic stream methods (``TRIO_WEBSOCKET_GENERIC_IO=1``). Each pass keeps
about one core busy, mostly waiting on sockets, so on two cores running them
side by side takes a little more than one pass instead of two. The default
pass prints as it goes; the generic pass writes to a log file, named at the
start and printed at the end, also when the run is interrupted. Exits
non-zero if either pass failed. The generic pass keeps no pytest cache, so
that ``--lf`` afterwards follows the default pass alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from types import FrameType

HEADING = "==== the same suite over the generic stream methods (TRIO_WEBSOCKET_GENERIC_IO=1) ===="


def main(args: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", *args]
    descriptor, log_path = tempfile.mkstemp(prefix="trio-websocket-generic-", suffix=".log")
    print(f"the generic pass runs alongside; its output: {log_path}", flush=True)
    with os.fdopen(descriptor, "w", encoding="utf-8") as log:
        generic = subprocess.Popen([*pytest, "-p", "no:cacheprovider"], stdout=log,
                                   stderr=subprocess.STDOUT,
                                   env={**os.environ, "TRIO_WEBSOCKET_GENERIC_IO": "1"})

    def stop(signum: int, _: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally below

    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, stop)
    default_status = generic_status = 1
    default = subprocess.Popen(pytest)
    try:
        default_status = default.wait()
        generic_status = generic.wait()
    finally:
        for process in (default, generic):
            if process.poll() is None:  # interrupted: both passes stop
                process.terminate()
                process.wait()
        print(f"\n{HEADING}", flush=True)
        with open(log_path, encoding="utf-8", errors="replace") as log:
            sys.stdout.write(log.read())
        os.unlink(log_path)
    print(f"\nboth paths: default pass {'passed' if default_status == 0 else 'FAILED'}, "
          f"generic pass {'passed' if generic_status == 0 else 'FAILED'}", flush=True)
    return 1 if default_status or generic_status else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
