"""Run the test suite over both I/O paths at once: ``python tests/both_paths.py [pytest args]``.

The test command runs the suite twice, over the raw-descriptor path and over
the generic stream methods (``TRIO_WEBSOCKET_GENERIC_IO=1``). Each pass keeps
about one core busy, mostly waiting on sockets, so on two cores running them
side by side takes a little more than one pass instead of two. The default
pass prints as it goes; the generic pass's output follows when both are done.
Exits non-zero if either pass failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def main(args: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", *args]
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        generic = subprocess.Popen(pytest, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TRIO_WEBSOCKET_GENERIC_IO": "1"})
        try:
            default_status = subprocess.call(pytest)
        finally:
            generic_status = generic.wait()
        log.seek(0)
        print("\n==== the same suite over the generic stream methods "
              "(TRIO_WEBSOCKET_GENERIC_IO=1) ====", flush=True)
        sys.stdout.write(log.read())
    print(f"\nboth paths: default pass {'passed' if default_status == 0 else 'FAILED'}, "
          f"generic pass {'passed' if generic_status == 0 else 'FAILED'}", flush=True)
    return 1 if default_status or generic_status else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
