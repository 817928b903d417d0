"""What FrameProtocol may report, checked: shared by the properties and the atheris targets.

Whatever bytes arrive, the frame parser's documented outcomes are messages,
pings, pongs, the peer's close, TOO_BIG (a message over ``max_message_size``)
and a failure with 1002, 1007 or 1009; it never raises. These checks hold any
event list to that, however the input was made.
"""

from __future__ import annotations

import contextlib
import sys
import tracemalloc
from collections.abc import Iterable, Iterator
from typing import Any
from unittest import mock

from trio_websocket_core import _mask
from trio_websocket_core._protocol import (
    BYTES_PER_BATCH,
    CLOSE,
    FAIL,
    FRAMES_PER_BATCH,
    MESSAGE,
    PING,
    PONG,
    TOO_BIG,
    Event,
    FrameProtocol,
)

from .wire import WIRE_CLOSE_CODES, Expected

NAMES = {MESSAGE: "message", PING: "ping", PONG: "pong", CLOSE: "close", FAIL: "fail",
         TOO_BIG: "too big"}
#: The close codes a protocol failure may carry (docs/api.md, README "A server that stays up").
FAIL_CODES = frozenset({1002, 1007, 1009})
_WIRE_CODES = frozenset(WIRE_CLOSE_CODES)
#: Memory a parser may hold whatever it was fed: a zlib inflater and its
#: window (about 40 KiB), a frame being filled in place (64 KiB) and bookkeeping.
SLACK = 256 * 1024


MASKERS = {"python": (_mask.mask_python, _mask.mask_in_place_python, _mask.xor_python)}
if _mask.ACCELERATED:
    from trio_websocket_core import _speedups

    MASKERS["c"] = (_speedups.mask, _speedups.mask_in_place, _speedups.xor)


@contextlib.contextmanager
def use_masker(name: str) -> Iterator[None]:
    """Unmask with one implementation: the C accelerator, or pure Python.

    Without the accelerator (a core built with no C compiler) both names mean
    pure Python.
    """
    mask, in_place, xor = MASKERS.get(name, MASKERS["python"])
    with mock.patch.object(_mask, "mask", mask), \
            mock.patch.object(_mask, "mask_in_place", in_place), \
            mock.patch.object(_mask, "xor", xor):
        yield


class Violation(AssertionError):
    """The parser did something its documentation does not allow."""


def require(condition: object, message: str) -> None:
    """Raise a :class:`Violation` unless ``condition`` holds (asserts may be compiled out)."""
    if not condition:
        raise Violation(message)


def named(events: Iterable[Event]) -> list[Expected]:
    """Events with their kinds spelled out, comparable with :class:`wire.Stream`'s."""
    return [(NAMES[kind], value) for kind, value in events]


class Feeder:
    """Feeds a parser its reads, and holds ``events()`` to finishing its work.

    ``more`` asks for another call only after a full batch: FRAMES_PER_BATCH
    frames, each at least 2 bytes, or messages holding BYTES_PER_BATCH. So
    the calls that report it can never exceed what was fed over
    ``2 * FRAMES_PER_BATCH`` plus what was delivered over BYTES_PER_BATCH:
    a parser that kept asking would hang its reader, and fails here instead.
    """

    def __init__(self, protocol: FrameProtocol) -> None:
        self.protocol = protocol
        self.fed = 0
        self.delivered = 0
        self.batches = 0

    def feed(self, chunk: bytes | bytearray) -> list[Event]:
        protocol = self.protocol
        protocol.receive_data(chunk)
        self.fed += len(chunk)
        events = self._batch()
        while protocol.more:
            self.batches += 1
            require(self.batches <= self.fed // (2 * FRAMES_PER_BATCH)
                    + self.delivered // BYTES_PER_BATCH,
                    f"events() asked for call {self.batches} after {self.fed} bytes")
            events += self._batch()
        return events

    def _batch(self) -> list[Event]:
        events = self.protocol.events()
        # In bytes (text as UTF-8): the parser counts a message's bytes or
        # characters, never more than its bytes.
        self.delivered += sum(len(value.encode() if isinstance(value, str) else value)
                              for kind, value in events if kind == MESSAGE)
        return events


def feed(protocol: FrameProtocol, chunks: Iterable[bytes | bytearray]) -> list[Event]:
    """Every event from feeding ``chunks`` one read at a time."""
    feeder = Feeder(protocol)
    events: list[Event] = []
    for chunk in chunks:
        events += feeder.feed(chunk)
    return events


def _held(events: Iterable[Event]) -> int:
    """About what a list of events occupies: the values the user is handed, and the list."""
    total = 0
    for _, value in events:
        total += 120 + (sys.getsizeof(value) if isinstance(value, (str, bytes)) else 200)
    return total


def feed_bounded(protocol: FrameProtocol, chunks: list[bytes], max_message_size: int
                 ) -> list[Event]:
    """:func:`feed`, checking with tracemalloc that the parser's memory stays bounded.

    After each read the parser may hold a small multiple of what it was fed
    (a partial frame waits whole) plus of ``max_message_size`` (a message
    being reassembled, as text up to 4 bytes a character); within a call,
    a little more, plus the events it returns. Never what a frame announces,
    nor what compressed data would inflate to.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        feeder = Feeder(protocol)
        events: list[Event] = []
        returned = 0
        baseline = tracemalloc.get_traced_memory()[0]
        for chunk in chunks:
            tracemalloc.reset_peak()
            new = feeder.feed(chunk)
            current, peak = tracemalloc.get_traced_memory()
            added = _held(new)
            held_limit = 3 * feeder.fed + 12 * max_message_size + SLACK
            require(current - baseline - returned - added <= held_limit,
                    f"parser holds {current - baseline - returned - added} bytes after "
                    f"{feeder.fed} fed, limit {held_limit}")
            peak_limit = held_limit + 16 * max_message_size + 3 * added
            require(peak - baseline - returned <= peak_limit,
                    f"parser peaked at {peak - baseline - returned} bytes after "
                    f"{feeder.fed} fed, limit {peak_limit}")
            events += new
            returned += added
        return events
    finally:
        if started:
            tracemalloc.stop()


def check_events(events: list[Event], max_message_size: float,
                 protocol: FrameProtocol | None = None) -> None:
    """Hold ``events`` to the parser's documented outcomes, whatever it was fed."""
    too_big = False
    for index, (kind, value) in enumerate(events):
        require(kind in NAMES, f"unknown event kind {kind!r}")
        last = index == len(events) - 1
        if kind == MESSAGE:
            require(type(value) in (str, bytes), f"message of type {type(value).__name__}")
            require(len(value) <= max_message_size,
                    f"message of {len(value)} over the limit of {max_message_size}")
            require(not too_big, "a message delivered after TOO_BIG")
        elif kind in (PING, PONG):
            require(type(value) is bytes and len(value) <= 125, f"control payload {value!r}")
        elif kind == CLOSE:
            code, reason = value
            require((code == 1005 and reason is None) or code in _WIRE_CODES,
                    f"close event with code {code}")
            require(reason is None or (type(reason) is str and reason
                                       and len(reason.encode("utf-8")) <= 123),
                    f"close reason {reason!r}")
            require(last, "events after the peer's close frame")
            if protocol is not None:
                require(protocol.peer_close == value, "peer_close disagrees with the event")
                require(protocol.state.name == "REMOTE_CLOSING",
                        f"state {protocol.state.name} after the peer's close")
        elif kind == FAIL:
            code, reason = value
            require(code in FAIL_CODES, f"failure with code {code} ({reason})")
            require(type(reason) is str and reason, f"failure without a reason: {reason!r}")
            require(last, "events after a failure")
        else:
            require(value is None, f"TOO_BIG with a value {value!r}")
            require(not too_big, "TOO_BIG twice")
            too_big = True
    if protocol is not None and events and events[-1][0] in (CLOSE, FAIL):
        # Nothing more is parsed after a close frame or a failure.
        protocol.receive_data(b"\x81\x00\x81\x00")
        require(protocol.events() == [], "events after the end")


def first_divergence(actual: list[Expected], expected: list[Expected]) -> Any:
    """Where two event lists first differ, for failure messages."""
    for index, (a, b) in enumerate(zip(actual, expected, strict=False)):
        if a != b or type(a[1]) is not type(b[1]):
            return index, a, b
    return min(len(actual), len(expected)), actual[len(expected):], expected[len(actual):]
