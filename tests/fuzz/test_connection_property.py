"""The same streams through a real WebSocketConnection over a socket pair.

What the Sans-IO properties cannot see: the reader task, backpressure from a
bounded queue, getters that read the socket themselves (raw descriptors,
unless TRIO_WEBSOCKET_GENERIC_IO=1), pongs written back, and the closing
handshake. A fault in the reader is only logged (the connection then closes
with 1006), so the log is watched too.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_websocket_core import ConnectionClosed, WebSocketConnection

from .checks import FAIL_CODES, use_masker
from .strategies import Scenario, fuzz_settings, scenarios
from .test_frame_properties import damage, mutations
from .wire import WIRE_CLOSE_CODES, decode_frames

PONG_OPCODE, CLOSE_OPCODE = 0xA, 0x8


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _converse(scenario: Scenario, data: bytes, queue_size: float
                    ) -> tuple[list[str | bytes], Any, list[tuple[int, bool, bytes]], bytes]:
    """Send ``data`` from a raw peer; return what the user got and what the peer got back."""
    ours, theirs = trio.socket.socketpair()
    stream, peer = trio.SocketStream(ours), trio.SocketStream(theirs)
    received: list[str | bytes] = []
    back = bytearray()
    closed: Any = None
    async with trio.open_nursery() as nursery:
        ws = WebSocketConnection(nursery, stream, scenario.protocol(), path="/fuzz",
                                 message_queue_size=queue_size,
                                 max_message_size=scenario.max_message_size)

        async def user() -> None:
            nonlocal closed
            try:
                while True:
                    received.append(await ws.get_message())
            except ConnectionClosed as exc:
                closed = exc.reason

        async def peer_reads() -> None:
            while True:
                try:
                    chunk = await peer.receive_some(1 << 16)
                except trio.BrokenResourceError:
                    return  # the connection closed with our bytes unread: a reset
                if not chunk:
                    return
                back.extend(chunk)

        nursery.start_soon(user)
        nursery.start_soon(peer_reads)
        try:
            for chunk in scenario.reads(data):
                await peer.send_all(chunk)
            await peer.send_eof()  # a cut-off frame must not leave the reader waiting
        except trio.BrokenResourceError:
            pass  # the connection gave up on us first
    await peer.aclose()
    frames, rest = decode_frames(bytes(back), masked=scenario.client)
    return received, closed, frames, rest


def converse(scenario: Scenario, data: bytes, queue_size: float) -> Any:
    records = _Records()
    logger = logging.getLogger("trio_websocket_core")
    logger.addHandler(records)

    async def bounded() -> Any:
        with trio.fail_after(20):  # a hang fails here instead of stalling the run
            return await _converse(scenario, data, queue_size)

    try:
        with use_masker(scenario.masker):
            result = trio.run(bounded)
    finally:
        logger.removeHandler(records)
    assert not records.records, [record.getMessage() for record in records.records]
    return result


queue_sizes = st.sampled_from([0, 1, 3, math.inf])


@fuzz_settings(40)
@given(scenarios(max_items=6), queue_sizes)
def test_connection_delivers_valid_streams_and_answers_every_ping(
        scenario: Scenario, queue_size: float) -> None:
    received, closed, frames, rest = converse(scenario, bytes(scenario.stream.data), queue_size)
    expected = scenario.stream.expected
    assert received == [value for kind, value in expected if kind == "message"]
    pings = [value for kind, value in expected if kind == "ping"]
    assert [(opcode, payload) for opcode, _, payload in frames if opcode == PONG_OPCODE] == [
        (PONG_OPCODE, payload) for payload in pings]
    assert rest == b""
    if scenario.stream.closed:
        code, reason = expected[-1][1]
        assert (closed.code, closed.reason) == (code, reason)
        # The connection answers the close with the same code, and sends nothing after it.
        assert frames[-1][0] == CLOSE_OPCODE
        assert frames[-1][2][:2] == (code.to_bytes(2, "big") if code != 1005 else b"")
    else:
        assert closed.code == 1006  # the peer just went away
        assert all(opcode == PONG_OPCODE for opcode, _, _ in frames)


@fuzz_settings(40)
@given(scenarios(finite_limit=True, max_items=6), queue_sizes, mutations)
def test_connection_closes_damaged_streams_as_documented(
        scenario: Scenario, queue_size: float, changes: Any) -> None:
    data, first_change = damage(bytes(scenario.stream.data), changes)
    received, closed, frames, rest = converse(scenario, data, queue_size)
    assert rest == b""
    assert closed.code in FAIL_CODES | {1005, 1006, *WIRE_CLOSE_CODES}
    # Messages from before the damage come first and intact (some may be
    # dropped once the connection fails); none is over the limit.
    before = [value for kind, value in scenario.stream.prefix(first_change) if kind == "message"]
    common = min(len(before), len(received))
    assert received[:common] == before[:common]
    assert all(len(message) <= scenario.max_message_size for message in received)
    closes = [payload for opcode, _, payload in frames if opcode == CLOSE_OPCODE]
    assert len(closes) <= 1, "more than one close frame"
    if closed.code != 1006:
        # Whoever started it, the connection's close frame carries the code it reports.
        assert closes, f"closed with {closed.code} without a close frame to the peer"
        assert closes[0][:2] == (b"" if closed.code == 1005 else closed.code.to_bytes(2, "big"))
