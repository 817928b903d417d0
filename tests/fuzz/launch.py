"""Run a target from targets.py under atheris (libFuzzer), seeded by code.

``python -m tests.fuzz.fuzz_frames [libFuzzer options] [CORPUS_DIR... | FILE...]``
(likewise ``fuzz_handshake``). With no directory or file, the seeds go into
a temporary corpus; directories given are seeded and grow with what the
fuzzer finds; files given are run once each, which is how a crash file is
reproduced. Unless given, a dictionary of the format's tokens, ``-max_len``
(8192 for frames, 17000 for handshakes), ``-timeout`` (10 s per input for
frames, 1 s for handshakes) and ``-rss_limit_mb`` (2048) are set.

Where atheris is not installed (it has wheels for Linux x86_64 only), the
same target runs under a plain random mutator instead: no coverage guidance,
but the same checks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

#: What atheris instruments for coverage: the library and the wsproto it builds on.
INSTRUMENTED = ["trio_websocket_core", "trio_websocket_client", "trio_websocket_server",
                "wsproto"]
DEFAULTS = {"-timeout": "10", "-rss_limit_mb": "2048"}
#: Per-input timeouts unlike the default. Any handshake input runs in about a millisecond, and
#: libFuzzer counts whole seconds: 1 s is its tightest, and flags a parser gone quadratic on
#: a 16 KiB head (the target also holds each input to a CPU budget well under it).
TIMEOUT = {"handshake": "1"}
#: Longest input: frame streams stay small (and fast), yet room for more
#: frames than one batch; a request head may be up to 16 KiB, and past it is
#: a path of its own.
MAX_LEN = {"frames": "8192", "handshake": "17000"}


def have_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


def write_seeds(directory: Path, seeds: list[bytes]) -> None:
    """Each seed as a file named by its hash, as libFuzzer names corpus entries."""
    directory.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


def write_dictionary(path: Path, tokens: list[bytes]) -> None:
    path.write_text("".join('"' + "".join(f"\\x{byte:02x}" for byte in token) + '"\n'
                            for token in tokens))


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """One random edit: flip, set, insert, delete, duplicate, or splice in another input."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        position = rng.randint(0, len(out))
        edit = rng.randrange(6)
        if edit == 0 and position < len(out):
            out[position] ^= 1 << rng.randrange(8)
        elif edit == 1 and position < len(out):
            out[position] = rng.choice((0, 0x7E, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif edit == 2:
            out[position:position] = rng.randbytes(rng.randint(1, 8))
        elif edit == 3:
            del out[position:position + rng.randint(1, 16)]
        elif edit == 4:
            out[position:position] = out[position:position + rng.randint(1, 64)]
        else:
            other = rng.choice(pool)
            start = rng.randint(0, len(other))
            out[position:] = other[start:start + rng.randint(0, 512)]
    return bytes(out)


def run_without_atheris(target: Callable[[bytes], None], seeds: list[bytes], runs: int,
                        seconds: float, seed: int = 0) -> int:
    """Every seed, then random mutations of them, until ``runs`` or ``seconds`` is reached.

    Returns the number of inputs run; a failing input propagates its exception.
    """
    rng = random.Random(seed)
    done = 0
    stop = time.monotonic() + seconds
    for data in seeds:
        target(data)
        done += 1
    while done < runs and time.monotonic() < stop:
        data = mutate(rng.choice(seeds), rng, seeds)
        try:
            target(data)
        except BaseException:
            sys.stderr.write(f"failing input: {data.hex()}\n")
            raise
        done += 1
    return done


def main(name: str, argv: list[str]) -> None:
    """Fuzz target ``name`` of targets.py; ``argv`` as libFuzzer takes it (argv[0] first)."""
    args = list(argv)
    if not have_atheris():
        from .targets import TARGETS

        target, seeds, _ = TARGETS[name]
        warnings.simplefilter("error")
        options = dict(arg.split("=", 1) for arg in args[1:] if arg.startswith("-") and "=" in arg)
        runs = int(options.get("-runs", sys.maxsize))
        seconds = float(options.get("-max_total_time", 60))
        done = run_without_atheris(target, seeds(), runs, seconds)
        print(f"atheris is not installed: ran {done} inputs under a plain mutator")
        return

    import atheris

    # The library is first imported here, so that atheris instruments it.
    with atheris.instrument_imports(include=INSTRUMENTED):
        from .targets import TARGETS
    target, seeds, dictionary = TARGETS[name]
    warnings.simplefilter("error")  # as in the test suite: a warning is a finding
    options = [arg for arg in args[1:] if arg.startswith("-")]
    paths = [Path(arg) for arg in args[1:] if not arg.startswith("-")]
    scratch = Path(tempfile.mkdtemp(prefix=f"trio-websocket-fuzz-{name}-"))
    if not paths:
        paths = [scratch / "corpus"]
        args.append(str(paths[0]))
    for path in paths:
        if path.is_dir() or not path.exists():
            write_seeds(path, seeds())
    if not any(option.startswith("-dict=") for option in options):
        write_dictionary(scratch / "dictionary", dictionary)
        args.append(f"-dict={scratch / 'dictionary'}")
    for option, value in {**DEFAULTS, "-max_len": MAX_LEN[name],
                          "-timeout": TIMEOUT.get(name, DEFAULTS["-timeout"])}.items():
        if not any(arg.startswith(option + "=") for arg in options):
            args.append(f"{option}={value}")
    # libFuzzer's fork mode (-fork=N, from run.py --jobs) starts its workers by
    # handing argv[0] and the options to the shell: a target file run with -m is
    # neither executable nor importable that way, so argv[0] becomes the command
    # that runs it as this process was run (from the repository root).
    args[0] = shlex.join([sys.executable, "-m", f"tests.fuzz.fuzz_{name}"])
    atheris.Setup(args, target)
    atheris.Fuzz()
