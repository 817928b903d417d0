"""atheris target: the opening handshake: a server's request parsing, a client's response checks.

``python -m tests.fuzz.fuzz_handshake [libFuzzer options] [CORPUS_DIR... | CRASH_FILE...]``
from the repository root; see tests/fuzz/launch.py and docs/fuzzing.md.
"""

import sys

from .launch import main

if __name__ == "__main__":
    main("handshake", sys.argv)
