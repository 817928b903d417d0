"""atheris target: the frame parser (FrameProtocol), both roles, with and without deflate.

``python -m tests.fuzz.fuzz_frames [libFuzzer options] [CORPUS_DIR... | CRASH_FILE...]``
from the repository root; see tests/fuzz/launch.py and docs/fuzzing.md.
"""

import sys

from .launch import main

if __name__ == "__main__":
    main("frames", sys.argv)
