"""Hypothesis settings and strategies for the frame-stream properties.

The test command runs a bounded number of examples (about 15 s in all); the
long run (``TRIO_WEBSOCKET_FUZZ=long``, which ``hatch run fuzz`` sets) runs
a hundred times as many, or ``TRIO_WEBSOCKET_FUZZ_SCALE`` times.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

# Hypothesis caches Unicode tables under ./.hypothesis unless told otherwise:
# keep the work tree clean (this must happen before any text is drawn).
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                      str(Path(tempfile.gettempdir()) / "trio-websocket-hypothesis"))

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from trio_websocket_core.toolkit import Deflate, FrameProtocol

from .checks import MASKERS
from .wire import (
    PING,
    PONG,
    WIRE_CLOSE_CODES,
    Close,
    Control,
    DeflateSender,
    Message,
    Stream,
    build_stream,
    cut_points,
    key_source,
)

LONG = os.environ.get("TRIO_WEBSOCKET_FUZZ", "") == "long"
SCALE = int(os.environ.get("TRIO_WEBSOCKET_FUZZ_SCALE", "100" if LONG else "1"))

# No example database: nothing is written into the repository, and a failure
# is reproduced from the printed blob (@reproduce_failure) instead. A
# generous deadline only catches pathological slowness: the machine is shared.
settings.register_profile(
    "trio-websocket-fuzz",
    max_examples=100,
    deadline=timedelta(seconds=5),
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)
settings.register_profile("trio-websocket-fuzz-long", settings.get_profile("trio-websocket-fuzz"),
                          deadline=timedelta(seconds=30))
PROFILE = settings.get_profile("trio-websocket-fuzz-long" if LONG else "trio-websocket-fuzz")


def fuzz_settings(examples: int) -> settings:
    """The profile with ``examples`` examples in the test command, SCALE times that if long."""
    return settings(PROFILE, max_examples=examples * SCALE)


#: Fragments in a burst: more than FRAMES_PER_BATCH (1024).
BURST = 1100
# Sizes around each length encoding's edge and the parser's in-place fill (64 KiB).
LONG_SIZES = (125, 126, 127, 4096, 65535, 65536, 65537, 100_000)
_ALPHABET = "aZ~é€😀\u0800\uffff"  # one to four bytes of UTF-8 each


@st.composite
def long_values(draw: st.DrawFn) -> str | bytes:
    """A long message: random or repetitive, text or binary (generated, not drawn byte by byte)."""
    size = draw(st.sampled_from(LONG_SIZES))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["binary", "text", "repeat-binary", "repeat-text"]))
    if kind == "binary":
        return rng.randbytes(size)
    if kind == "text":
        return "".join(rng.choices(_ALPHABET, k=size))
    if kind == "repeat-binary":
        return (rng.randbytes(7) * (size // 7 + 1))[:size]
    return rng.choice(_ALPHABET) * size


values = st.one_of(st.text(max_size=24), st.binary(max_size=24), st.text(max_size=24),
                   st.binary(max_size=24), long_values())
control_payloads = st.binary(max_size=125)
controls = st.builds(Control, st.sampled_from([PING, PONG]), control_payloads)
closes = st.one_of(
    st.builds(Close, st.none()),
    st.builds(Close, st.sampled_from(WIRE_CLOSE_CODES), st.text(max_size=30)),
)


def messages(deflate: bool) -> st.SearchStrategy[Message]:
    """Data messages, fragmented anywhere with pings and pongs between the fragments."""
    return st.builds(
        Message,
        values,
        compress=st.sampled_from([None, "sync", "sync", "full", "final"]) if deflate
        else st.none(),
        cuts=st.lists(st.integers(0, 2**31), max_size=4),
        controls=st.lists(st.tuples(st.integers(1, 4), st.sampled_from([PING, PONG]),
                                    control_payloads), max_size=3),
        reset=st.booleans(),
    )


@dataclass
class Scenario:
    """A stream of frames for one parser, and how it is fed."""

    #: The parser under test is the client: the frames come from a server, unmasked.
    client: bool
    #: The permessage-deflate both ends agreed (Deflate's keywords), or None.
    agreed: dict[str, Any] | None
    stream: Stream
    #: Where the input is split into reads.
    cuts: list[int]
    masker: str
    as_bytearray: bool
    max_message_size: float
    #: The rest of the sending peer's masking keys (for frames a test adds).
    keys: Iterator[bytes]

    @property
    def masked(self) -> bool:
        """Whether the frames are masked: the sender is a client."""
        return not self.client

    def protocol(self) -> FrameProtocol:
        deflate = Deflate(self.client, **self.agreed) if self.agreed is not None else None
        return FrameProtocol(self.client, deflate, self.max_message_size)

    def reads(self, data: bytes | bytearray | None = None,
              cuts: list[int] | None = None) -> list[Any]:
        """``data`` (the stream's own by default) as the reads the parser is fed."""
        data = self.stream.data if data is None else data
        cuts = self.cuts if cuts is None else cuts
        edges = [0, *(cut for cut in cuts if 0 < cut < len(data)), len(data)]
        kind = bytearray if self.as_bytearray else bytes
        return [kind(data[a:b]) for a, b in itertools.pairwise(edges) if b > a]


def _longest(items: list[Any]) -> int:
    return max((len(item.value) for item in items if isinstance(item, Message)), default=0)


@st.composite
def scenarios(draw: st.DrawFn, *, finite_limit: bool = False, close: bool | None = None,
              deflate: bool | None = None, max_items: int = 8) -> Scenario:
    """A valid stream of messages, pings and pongs, maybe compressed, maybe closed.

    ``finite_limit``: max_message_size is always finite (just above the
    longest message), as the tests that feed damage need for their bounds.
    ``close`` and ``deflate`` force a close frame at the end and compression
    on or off (None: either).
    """
    client = draw(st.booleans())
    agreed = sender = None
    if deflate is None:
        deflate = draw(st.booleans())
    if deflate:
        # The peer's window and reset flag bind what it sends; ours only
        # what we would send, which the parser never looks at.
        peer_bits, own_bits = draw(st.integers(9, 15)), draw(st.integers(9, 15))
        peer_reset, own_reset = draw(st.booleans()), draw(st.booleans())
        peer, own = ("server", "client") if client else ("client", "server")
        agreed = {f"{peer}_max_window_bits": peer_bits, f"{own}_max_window_bits": own_bits,
                  f"{peer}_no_context_takeover": peer_reset,
                  f"{own}_no_context_takeover": own_reset}
        sender = DeflateSender(draw(st.integers(9, peer_bits)), peer_reset,
                               level=draw(st.integers(0, 9)), mem_level=draw(st.integers(1, 9)))
    items: list[Any] = draw(st.lists(st.one_of(messages(agreed is not None), controls),
                                     max_size=max_items))
    if draw(st.integers(0, 9)) == 0:
        # Now and then a message in over a thousand fragments (mostly empty):
        # more frames than the parser takes in one batch.
        burst = draw(messages(agreed is not None))
        step = draw(st.integers(1, 3))
        burst.cuts = range(0, BURST * step, step)
        items.insert(draw(st.integers(0, len(items))), burst)
    if close is None:
        close = draw(st.booleans())
    ending = draw(closes) if close else None
    keys = key_source(draw(st.integers(0, 2**32 - 1)), zero=draw(st.integers(0, 7)) == 0)
    stream = build_stream([*items, *([ending] if ending else [])], masked=not client,
                          sender=sender, keys=keys)
    if ending is not None:
        stream.data += draw(st.binary(max_size=16))  # ignored: nothing is parsed after a close
    # Reads: random splits, plus a run of short reads over the start, where
    # headers straddle reads most.
    step, fine = draw(st.integers(1, 9)), draw(st.sampled_from([0, 0, 64, 700]))
    cuts = sorted({*cut_points(len(stream.data), draw(st.lists(st.integers(0, 2**31),
                                                               max_size=24))),
                   *range(step, min(len(stream.data), fine), step)})
    longest = _longest(items)
    if finite_limit or draw(st.booleans()):
        limit: float = longest + draw(st.integers(0, 3 if not finite_limit else 64))
    else:
        limit = math.inf
    return Scenario(client, agreed, stream, cuts, draw(st.sampled_from(sorted(MASKERS))),
                    draw(st.booleans()), limit, keys)

