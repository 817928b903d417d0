"""Faults, in both roles and over real loopback sockets: a reset in the middle of a
message, a half-closed stream, a peer that vanishes, a peer that stops reading
while we send; and a cancellation at every schedule point of connecting,
sending, getting, pinging, closing, accepting and rejecting.

The documented timeouts these rely on (docs/api.md): ``disconnect_timeout`` of
``open_websocket*`` and ``serve_websocket`` bounds a closing handshake the peer
never answers (``DisconnectionTimeout`` for a client); ``CLOSE_EOF_TIMEOUT``
(2 s) bounds how long a client waits for the server's EOF after the closing
handshake; ``ping()`` has no timeout of its own. Everything else must end at
once, and every wait here is bounded by LIMIT so that a hang fails.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    DisconnectionTimeout,
    PerMessageDeflate,
    WebSocketConnection,
    WebSocketRequest,
    connect_websocket,
    open_websocket,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket_core import _budget
from trio_websocket_core._connection import CLOSE_EOF_TIMEOUT

from ..conftest import (
    HOST,
    TCP_HOLDS_AT_MOST,
    Flood,
    RawPeer,
    echo_handler,
    open_descriptors,
)

LIMIT = 10  # seconds: a hang fails instead of stalling the suite
DISCONNECT = 0.5  # the disconnect_timeout given where a test waits it out in real time
PING_WAIT = 0.2  # how long a test lets a ping wait for a pong that never comes
SLACK = 3.0  # what a loaded machine may add to a documented timeout
FLOOD = 2**16  # bytes of each message sent to a peer that does not read
# A message a peer that does not read cannot take in (random: incompressible):
# loopback TCP's buffers are far smaller until the peer reads.
STALL = 8 * 2**20
MAX_POINTS = 200  # schedule points a call may reach before the test calls it a loop
ROLES = ["client", "server"]


# -- connections ---------------------------------------------------------------


async def stream_pair(transport: str) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """(ours, the peer's), connected in memory or over loopback TCP."""
    if transport == "memory":
        return trio.testing.memory_stream_pair()
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    try:
        peer = await trio.open_tcp_stream(HOST, listeners[0].socket.getsockname()[1])
        ours = await listeners[0].accept()
    finally:
        await listeners[0].aclose()
    return ours, peer


async def reset(stream: trio.abc.Stream) -> None:
    """Close a TCP stream with SO_LINGER 0: the kernel sends a reset, not a FIN."""
    assert isinstance(stream, trio.SocketStream)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


class Pump:
    """The peer, reading in the background: it answers pings and a close.

    It keeps what it got (whole messages, ping payloads, close frames) and sets
    ``ended`` when its stream ends. A server peer closes TCP once it answered a
    close, as RFC 6455 has servers do.
    """

    def __init__(self, peer: RawPeer) -> None:
        self.peer = peer
        self.messages: list[str | bytes] = []
        self.pings: list[bytes] = []
        self.closes: list[CloseConnection] = []
        self.ended = trio.Event()
        self._news = trio.Event()

    async def run(self) -> None:
        parts: list[Any] = []
        try:
            while (event := await self.peer.next_event()) is not None:
                if isinstance(event, Message):
                    parts.append(event.data)
                    if event.message_finished:
                        text = isinstance(event, TextMessage)
                        self.messages.append("".join(parts) if text else b"".join(parts))
                        parts = []
                elif isinstance(event, Ping):
                    self.pings.append(event.payload)
                    await self.peer.send(event.response())
                elif isinstance(event, CloseConnection):
                    self.closes.append(event)
                    if self.peer.ws.state is ConnectionState.REMOTE_CLOSING:
                        await self.peer.send(event.response())
                    if not self.peer.ws.client:
                        break
                self._notify()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # our side aborted under a write of the peer's
        finally:
            await trio.aclose_forcefully(self.peer.stream)
            self.ended.set()
            self._notify()

    def _notify(self) -> None:
        self._news.set()
        self._news = trio.Event()

    async def until(self, condition: Callable[[], object]) -> None:
        while not condition():
            await self._news.wait()


Opener = Callable[..., Awaitable[tuple[WebSocketConnection, RawPeer, Pump]]]


@pytest.fixture
async def opener(nursery: trio.Nursery) -> AsyncIterator[Opener]:
    """Opens our end in ``role`` against a wsproto peer; closes the peers' streams after."""
    peers: list[RawPeer] = []

    async def open_(role: str, transport: str, *, compress: bool = False, pump: bool = True,
                    **options: Any) -> tuple[WebSocketConnection, RawPeer, Pump]:
        ours, theirs = await stream_pair(transport)
        extensions = [WsprotoDeflate()] if compress else []
        if role == "client":
            peer = RawPeer(theirs, ConnectionType.SERVER)
            answered = trio.Event()

            async def answer() -> None:
                assert isinstance(await peer.next_event(), Request)
                await peer.send(AcceptConnection(extensions=extensions))
                answered.set()

            nursery.start_soon(answer)
            ws = await wrap_client_stream(
                nursery, ours, "localhost", "/",
                compression=PerMessageDeflate() if compress else None, **options)
            await answered.wait()  # its send_all is over: the peer's stream is free
        else:
            peer = RawPeer(theirs, ConnectionType.CLIENT)
            await peer.send(Request(host="localhost", target="/", extensions=extensions))
            request = await wrap_server_stream(nursery, ours, **options)
            ws = await request.accept()
            assert isinstance(await peer.next_event(), AcceptConnection)
        peers.append(peer)
        background = Pump(peer)
        if pump:
            nursery.start_soon(background.run)
        return ws, peer, background

    yield open_
    for peer in peers:
        await trio.aclose_forcefully(peer.stream)


async def finish(ws: WebSocketConnection, peer: RawPeer) -> None:
    """Drop the peer, then our aclose() must return at once (the transport is gone)."""
    await trio.aclose_forcefully(peer.stream)
    with trio.fail_after(LIMIT):
        await ws.aclose()


# -- resets ------------------------------------------------------------------------


def partial_message(peer: RawPeer, where: str) -> bytes:
    """The peer's bytes that stop in the middle of a message."""
    if where == "mid-frame":
        frame = peer.ws.send(BytesMessage(b"m" * 100_000))
        return frame[:len(frame) // 2]
    # One whole fragment; the rest of the message never comes.
    return peer.ws.send(BytesMessage(b"first fragment", message_finished=False))


@pytest.mark.parametrize("reading", ["reader task", "getter"])
@pytest.mark.parametrize("where", ["mid-frame", "between fragments"])
@pytest.mark.parametrize("role", ROLES)
async def test_a_reset_in_the_middle_of_a_message_being_received_ends_in_1006(
    opener: Opener, role: str, where: str, reading: str
) -> None:
    ws, peer, _ = await opener(role, "tcp", pump=False)
    if reading == "getter":
        # After a hand-over a waiting getter reads the socket itself (raw path).
        await peer.send(TextMessage("prime"))
        assert await ws.get_message() == "prime"
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as inner:
            caught: list[ConnectionClosed] = []

            async def get() -> None:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                caught.append(closed.value)

            inner.start_soon(get)
            await peer.stream.send_all(partial_message(peer, where))
            await trio.testing.wait_all_tasks_blocked()  # that part is read; the rest awaited
            await reset(peer.stream)
        assert caught[0].reason == CloseReason(1006, None)  # nothing half-delivered
        assert ws.closed == CloseReason(1006, None)
        with pytest.raises(ConnectionClosed):
            await ws.send_message("too late")
        await ws.aclose()  # nothing to wait for


@pytest.mark.parametrize("role", ROLES)
async def test_a_reset_while_we_send_a_message_ends_in_1006(
    opener: Opener, nursery: trio.Nursery, role: str
) -> None:
    ws, peer, _ = await opener(role, "tcp", pump=False)
    flood = Flood(ws, FLOOD)
    nursery.start_soon(flood.run)
    await trio.testing.wait_all_tasks_blocked()
    assert not flood.done.is_set()  # the peer does not read: a send waits for room
    flood.assert_bounded(TCP_HOLDS_AT_MOST)
    await reset(peer.stream)
    with trio.fail_after(LIMIT):
        await flood.done.wait()
        assert flood.error is not None and flood.pending is not None  # the waiting send
        assert flood.error.reason == CloseReason(1006, None)
        assert ws.closed == CloseReason(1006, None)
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason.code == 1006
        await ws.aclose()


# -- half-closed streams ---------------------------------------------------------------


@pytest.mark.parametrize("when", ["idle", "mid-message"])
@pytest.mark.parametrize("role", ROLES)
async def test_a_peer_that_shuts_its_write_side_without_a_close_frame_ends_in_1006(
    opener: Opener, role: str, when: str
) -> None:
    ws, peer, _ = await opener(role, "tcp", pump=False)
    assert isinstance(peer.stream, trio.SocketStream)
    if when == "mid-message":
        await peer.stream.send_all(partial_message(peer, "between fragments"))
    await peer.stream.send_eof()  # still reading: it waits to see what we do
    with trio.fail_after(LIMIT):
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason == CloseReason(1006, None)
        # We close our end too; the peer, still reading, sees its stream end.
        while await peer.stream.receive_some():
            pass
        await ws.aclose()


@pytest.mark.parametrize("role", ROLES)
async def test_a_peer_that_shuts_its_write_side_after_its_close_frame_gets_an_answer(
    opener: Opener, role: str
) -> None:
    # A client waits for the server's EOF for at most CLOSE_EOF_TIMEOUT after the
    # closing handshake; here it has already come, so nobody waits at all.
    ws, peer, _ = await opener(role, "tcp", pump=False)
    assert isinstance(peer.stream, trio.SocketStream)
    start = trio.current_time()
    await peer.send(CloseConnection(1001, "going away"))
    await peer.stream.send_eof()
    with trio.fail_after(CLOSE_EOF_TIMEOUT / 2):
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason == CloseReason(1001, "going away")  # the peer's, not 1006
        assert isinstance(await peer.next_event(), CloseConnection)  # our answer
        assert await peer.next_event() is None  # and then our end of TCP closes
        await ws.aclose()
    assert trio.current_time() - start < CLOSE_EOF_TIMEOUT / 2
    assert ws.closed == CloseReason(1001, "going away")


# -- a peer that vanishes ---------------------------------------------------------------


class Listening:
    """A peer that says nothing more after the handshake: it only listens, until EOF."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.ended = trio.Event()
        self.ended_at = 0.0
        self.release = trio.Event()  # set to let a peer that does not even read, read

    async def listen(self, peer: RawPeer) -> None:
        while (event := await peer.next_event()) is not None:
            self.events.append(event)
        self.ended_at = trio.current_time()
        self.ended.set()

    async def stall(self, peer: RawPeer) -> None:
        """Read nothing until released, then listen."""
        await self.release.wait()
        await self.listen(peer)

    def messages(self) -> list[str | bytes]:
        return whole_messages(self.events)


def whole_messages(events: list[Event]) -> list[str | bytes]:
    """The whole messages among ``events``, in order (one cut short is left out)."""
    found: list[str | bytes] = []
    parts: list[Any] = []
    for event in events:
        if isinstance(event, Message):
            parts.append(event.data)
            if event.message_finished:
                text = isinstance(event, TextMessage)
                found.append("".join(parts) if text else b"".join(parts))
                parts = []
    return found


async def raw_tcp_server(nursery: trio.Nursery,
                         behave: Callable[[RawPeer], Awaitable[None]]) -> int:
    """A loopback server that accepts WebSocket handshakes, then does ``behave(peer)``."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)

    async def handle(stream: trio.abc.Stream) -> None:
        peer = RawPeer(stream, ConnectionType.SERVER)
        try:
            assert isinstance(await peer.next_event(), Request)
            await peer.send(AcceptConnection())
            await behave(peer)
        finally:
            await trio.aclose_forcefully(stream)

    await nursery.start(trio.serve_listeners, handle, listeners)
    return int(listeners[0].socket.getsockname()[1])


async def pending_ping(ws: WebSocketConnection, outcome: list[BaseException | None],
                       done: trio.Event) -> None:
    try:
        await ws.ping(b"pending")
        outcome.append(None)
    except ConnectionClosed as exc:
        outcome.append(exc)
    finally:
        done.set()


async def test_a_vanished_server_holds_a_ping_and_the_close_gives_up_after_disconnect_timeout(
    nursery: trio.Nursery,
) -> None:
    # Documented: ping() waits for its pong (no timeout of its own: cancelled, it
    # only stops waiting); open_websocket bounds the closing handshake by
    # disconnect_timeout, then aborts and raises DisconnectionTimeout.
    server = Listening()
    port = await raw_tcp_server(nursery, server.listen)
    outcome: list[BaseException | None] = []
    pinged = trio.Event()
    with pytest.raises(DisconnectionTimeout):
        async with open_websocket(HOST, port, "/", use_ssl=False,
                                  disconnect_timeout=DISCONNECT) as ws:
            with trio.move_on_after(PING_WAIT) as waiting:
                await ws.ping(b"anyone?")
            assert waiting.cancelled_caught and ws.closed is None
            nursery.start_soon(pending_ping, ws, outcome, pinged)  # outlives the block
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
    assert DISCONNECT <= trio.current_time() - start < DISCONNECT + SLACK
    assert ws.closed is not None
    with trio.fail_after(LIMIT):
        await pinged.wait()  # the waiting ping learns the connection is gone
        await server.ended.wait()  # and our end of TCP is closed
    assert isinstance(outcome[0], ConnectionClosed)
    assert server.events[:2] == [Ping(b"anyone?"), Ping(b"pending")]
    assert [type(event) for event in server.events[2:]] == [CloseConnection]


async def test_a_vanished_client_holds_a_ping_and_the_server_gives_up_after_disconnect_timeout(
    nursery: trio.Nursery,
) -> None:
    # Documented: serve_websocket bounds the closing handshake after the handler
    # returns by disconnect_timeout, then closes the connection.
    seen: dict[str, Any] = {}

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with trio.move_on_after(PING_WAIT) as waiting:
            await ws.ping(b"anyone?")
        seen.update(waited=waiting.cancelled_caught, closed=ws.closed, ws=ws)
        seen["returned_at"] = trio.current_time()

    server = await nursery.start(functools.partial(
        serve_websocket, handler, HOST, 0, None, disconnect_timeout=DISCONNECT))
    client = Listening()
    peer = RawPeer(await trio.open_tcp_stream(HOST, server.port))
    try:
        assert isinstance(await peer.open(), AcceptConnection)
        with trio.fail_after(LIMIT):
            await client.listen(peer)  # answers nothing, until the server hangs up
    finally:
        await peer.stream.aclose()
    assert seen["waited"] and seen["closed"] is None  # the ping only waited
    assert DISCONNECT <= client.ended_at - seen["returned_at"] < DISCONNECT + SLACK
    assert client.events[0] == Ping(b"anyone?")
    assert [type(event) for event in client.events[1:]] == [CloseConnection]
    assert seen["ws"].closed is not None


# -- a peer that stops reading while we send ------------------------------------------------


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def test_cancelling_a_send_to_a_server_that_stopped_reading_does_nothing(
    nursery: trio.Nursery,
) -> None:
    # The server role of this is test_trio_rules' test_a_send_cancelled_while_it_waits_...
    # Sends never wait for the transport, only for room in the write buffer,
    # so the cancelled send did nothing, and the connection works on: once the
    # server reads, everything sent arrives, and the closing handshake completes
    # (were it to fail, disconnect_timeout, LIMIT here, would raise DisconnectionTimeout).
    release = trio.Event()
    pumps: list[Pump] = []

    async def stall_then_read(peer: RawPeer) -> None:
        await release.wait()
        pumps.append(Pump(peer))
        await pumps[0].run()  # answers our close, then closes TCP

    port = await raw_tcp_server(nursery, stall_then_read)
    async with open_websocket(HOST, port, "/", use_ssl=False, disconnect_timeout=LIMIT) as ws:
        flood = Flood(ws, FLOOD)
        with trio.fail_after(LIMIT):
            with trio.CancelScope() as scope:
                nursery.start_soon(_cancel_when_blocked, scope)  # once a send waits
                await flood.run()
        assert scope.cancelled_caught
        flood.assert_bounded(TCP_HOLDS_AT_MOST)
        assert ws.closed is None
        release.set()
        with trio.fail_after(LIMIT):
            await ws.send_message("after")  # waits for room while the server reads
    assert ws.closed == CloseReason(1000, None)
    # Every message whose send returned, in order, then the next one; nothing
    # of the cancelled one.
    assert pumps[0].messages == [*flood.sent, "after"]
    assert [close.code for close in pumps[0].closes] == [1000]


async def test_closing_beside_a_send_a_server_does_not_read_is_bounded_by_disconnect_timeout(
    nursery: trio.Nursery,
) -> None:
    # Our close frame waits behind a full write buffer; disconnect_timeout
    # bounds that wait, then the connection is aborted and the waiting send fails.
    # The messages are too big for the transport to ever take one whole, so
    # the buffer never has room again: the waiting send ends with the abort.
    server = Listening()
    port = await raw_tcp_server(nursery, server.stall)
    with pytest.raises(DisconnectionTimeout):
        async with open_websocket(HOST, port, "/", use_ssl=False,
                                  disconnect_timeout=DISCONNECT) as ws:
            flood = Flood(ws, STALL)
            nursery.start_soon(flood.run)
            await trio.testing.wait_all_tasks_blocked()
            assert not flood.done.is_set()  # a send waits: the server does not read
            flood.assert_bounded(TCP_HOLDS_AT_MOST)
            start = trio.current_time()
    assert DISCONNECT <= trio.current_time() - start < DISCONNECT + SLACK
    with trio.fail_after(LIMIT):
        await flood.done.wait()
        # Closing had started: the send says so, as any send after aclose() does.
        assert flood.error is not None and flood.pending is not None
        assert flood.error.reason == ws.closed == CloseReason(1000, None)
        server.release.set()
        await server.ended.wait()
    # Cut short: a part of what was sent, in order, and no close frame after it.
    arrived = server.messages()
    assert arrived == flood.sent[:len(arrived)] and len(arrived) < len(flood.sent)
    assert not any(isinstance(event, CloseConnection) for event in server.events)


async def test_a_server_closing_beside_a_send_the_client_does_not_read_gives_up_in_time(
    nursery: trio.Nursery,
) -> None:
    # serve_websocket bounds the close after the handler returns by disconnect_timeout.
    # As above, the messages are too big for the transport to ever take one
    # whole: the waiting send ends with the abort.
    floods: list[Flood] = []
    started = trio.Event()
    waiting: list[bool] = []
    returned: list[float] = []

    async def handler(request: WebSocketRequest) -> None:
        flood = Flood(await request.accept(), STALL)
        floods.append(flood)
        started.set()
        nursery.start_soon(flood.run)
        await trio.testing.wait_all_tasks_blocked()
        waiting.append(not flood.done.is_set())  # a send waits: the client does not read
        returned.append(trio.current_time())

    server = await nursery.start(functools.partial(
        serve_websocket, handler, HOST, 0, None, disconnect_timeout=DISCONNECT))
    peer = RawPeer(await trio.open_tcp_stream(HOST, server.port))
    try:
        await peer.send(Request(host="localhost", target="/"))
        with trio.fail_after(LIMIT):
            await started.wait()
            flood = floods[0]
            await flood.done.wait()  # reading nothing meanwhile
        assert waiting == [True]
        flood.assert_bounded(TCP_HOLDS_AT_MOST)
        assert DISCONNECT <= trio.current_time() - returned[0] < DISCONNECT + SLACK
        assert flood.error is not None and flood.pending is not None
        assert flood.error.reason == flood.ws.closed == CloseReason(1000, None)
        events: list[Event] = []
        with trio.fail_after(LIMIT):
            while (event := await peer.next_event()) is not None:
                events.append(event)
        # Cut short: a part of what was sent, in order, and no close frame after it.
        assert isinstance(events[0], AcceptConnection)
        arrived = whole_messages(events)
        assert arrived == flood.sent[:len(arrived)] and len(arrived) < len(flood.sent)
        assert not any(isinstance(event, CloseConnection) for event in events)
    finally:
        await peer.stream.aclose()


# -- a cancellation at each schedule point ------------------------------------------------
#
# The call under test runs in a cancel scope that an instrument cancels as the
# calling task reaches its n-th schedule point (a yield to trio's scheduler):
# the cancellation is raised there, or, at a shielded point (trio's socket
# methods yield shielded after bytes went out), at the call's next cancellation
# point. n goes 1, 2, ... until the call runs to its end uncancelled, so every
# schedule point the call reaches is tried, on a fresh connection each time.
# Calls that finish at once yield only when the cooperative budget is spent:
# "fresh" runs them with a full budget, "spent" with one that runs out.


class CancelAt(trio.abc.Instrument):
    """Cancels ``scope`` as ``task`` reaches its ``n``-th schedule point."""

    def __init__(self, task: trio.lowlevel.Task, n: int, scope: trio.CancelScope) -> None:
        self.task = task
        self.n = n
        self.scope = scope
        self.reached = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.reached += 1
            if self.reached == self.n:
                self.scope.cancel()

    def stop(self) -> None:
        with contextlib.suppress(KeyError):
            trio.lowlevel.remove_instrument(self)


@contextlib.contextmanager
def cancelled_at(n: int, scope: trio.CancelScope, budget: str = "fresh") -> Iterator[CancelAt]:
    instrument = CancelAt(trio.lowlevel.current_task(), n, scope)
    trio.lowlevel.add_instrument(instrument)
    _budget._left = _budget.BUDGET if budget == "fresh" else 1  # the next call empties it
    try:
        yield instrument
    finally:
        instrument.stop()


async def at_each_schedule_point(attempt: Callable[[int], Awaitable[bool]]) -> int:
    """Run ``attempt(n)``, which says whether the call was cancelled, for n = 1, 2, ...

    Returns how many schedule points cancelled the call before one ran uncancelled.
    """
    for n in itertools.count(1):
        assert n <= MAX_POINTS, "the call never completes"
        if not await attempt(n):
            return n - 1
    raise AssertionError("unreachable")


BUDGETS = ["fresh", "spent"]
TRANSPORTS = ["memory", "tcp"]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "deflate"])
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("role", ROLES)
async def test_send_message_cancelled_at_each_schedule_point(
    opener: Opener, role: str, transport: str, budget: str, size: str, compress: bool
) -> None:
    message: str | bytes = "sent or not " * 3 if size == "small" else os.urandom(2**20)
    # What follows repeats the end of it: a compressor that had taken the
    # message in would refer back to bytes the peer never got.
    after = ("after: " + message if isinstance(message, str)
             else b"after: " + message[-1000:])

    async def attempt(n: int) -> bool:
        ws, peer, pump = await opener(role, transport, compress=compress)
        with trio.fail_after(LIMIT):
            with trio.CancelScope() as scope, cancelled_at(n, scope, budget):
                await ws.send_message(message)
            if not scope.cancelled_caught:
                await pump.until(lambda: pump.messages)
                assert pump.messages == [message]
            else:
                # A send waits only for room in the write buffer, before it does
                # anything: cancelled, it never aborts. It did nothing: the peer
                # never gets it, and the connection (and its compressor, which
                # the peer would fail to follow) works on.
                assert ws.closed is None
                await ws.send_message(after)
                await pump.until(lambda: pump.messages)
                assert pump.messages == [after]
                await peer.send(TextMessage("and back"))
                assert await ws.get_message() == "and back"
            await finish(ws, peer)
        return scope.cancelled_caught

    cancelled = await at_each_schedule_point(attempt)
    # It may finish without a schedule point (the transport is never waited
    # for), unless the budget runs out: it was spent, or the message costs more.
    if budget == "spent" or 1 + len(message) // _budget.UNIT_BYTES > _budget.BUDGET:
        assert cancelled >= 1


@pytest.mark.parametrize("handed_over", [False, True], ids=["fresh", "after a hand-over"])
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("role", ROLES)
async def test_get_message_cancelled_at_each_schedule_point(
    opener: Opener, role: str, transport: str, budget: str, handed_over: bool
) -> None:
    async def attempt(n: int) -> bool:
        ws, peer, pump = await opener(role, transport)
        if handed_over:  # then a waiting getter reads the socket itself (raw path)
            await peer.send(TextMessage("prime"))
            assert await ws.get_message() == "prime"
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as inner:
                inner.start_soon(_send_when_blocked, peer, "the message")
                got = None
                with trio.CancelScope() as scope, cancelled_at(n, scope, budget):
                    got = await ws.get_message()
                if scope.cancelled_caught:
                    assert ws.closed is None  # a get never aborts...
                    got = await ws.get_message()
                assert got == "the message"  # ...and loses no message
            await ws.send_message("still works")
            await pump.until(lambda: pump.messages)
            assert pump.messages == ["still works"]
            await finish(ws, peer)
        return scope.cancelled_caught

    assert await at_each_schedule_point(attempt) >= 1  # it waits for the message


async def _send_when_blocked(peer: RawPeer, message: str) -> None:
    await trio.testing.wait_all_tasks_blocked()
    await peer.send(TextMessage(message))


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("role", ROLES)
async def test_ping_cancelled_at_each_schedule_point(
    opener: Opener, role: str, transport: str, budget: str
) -> None:
    async def attempt(n: int) -> bool:
        ws, peer, pump = await opener(role, transport)  # the pump answers pings
        with trio.fail_after(LIMIT):
            with trio.CancelScope() as scope, cancelled_at(n, scope, budget):
                await ws.ping(b"first")
            if not scope.cancelled_caught:
                assert pump.pings == [b"first"]
            else:
                # Nothing was sent, or it only stopped waiting for the pong (which
                # is ignored when it comes): never an abort, the connection works on.
                assert ws.closed is None
                await ws.ping(b"second")
                assert pump.pings in ([b"second"], [b"first", b"second"])
                await ws.send_message("still works")
                await pump.until(lambda: pump.messages)
                assert pump.messages == ["still works"]
            await finish(ws, peer)
        return scope.cancelled_caught

    assert await at_each_schedule_point(attempt) >= 1  # it waits for the pong


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("role", ROLES)
async def test_aclose_cancelled_at_each_schedule_point(
    opener: Opener, role: str, transport: str, budget: str
) -> None:
    async def attempt(n: int) -> bool:
        ws, peer, pump = await opener(role, transport)  # the pump answers a close
        with trio.fail_after(LIMIT):
            with trio.CancelScope() as scope, cancelled_at(n, scope, budget):
                await ws.aclose()
            if not scope.cancelled_caught:
                assert ws.closed == CloseReason(1000, None)
                assert [close.code for close in pump.closes] == [1000]
            else:
                # Trio's rule for aclose: cancelled, it aborts. ``closed`` says
                # whether our close frame was on its way: never 1006 if it went.
                assert ws.closed is not None
                await pump.ended.wait()
                if pump.closes:
                    assert ws.closed == CloseReason(1000, None)
                await ws.aclose()  # the transport is closed: nothing to wait for
            with pytest.raises(ConnectionClosed):
                await ws.send_message("after the close")
            await pump.ended.wait()
            await finish(ws, peer)
        return scope.cancelled_caught

    assert await at_each_schedule_point(attempt) >= 1  # it waits for the peer's answer


async def _echoes(ws: WebSocketConnection) -> None:
    await ws.send_message("echo?")
    assert await ws.get_message() == "echo?"


async def test_open_websocket_cancelled_at_each_schedule_point(echo_server: Any) -> None:
    async def attempt(n: int) -> bool:
        before = open_descriptors()
        entered = False
        with trio.fail_after(LIMIT):
            with trio.CancelScope() as scope, cancelled_at(n, scope) as point:
                async with open_websocket(HOST, echo_server.port, "/", use_ssl=False) as ws:
                    point.stop()
                    entered = True
                    if not scope.cancel_called:  # else: asked at the last, shielded point
                        await _echoes(ws)
            assert entered or scope.cancelled_caught  # the cancellation, not another error
            await trio.testing.wait_all_tasks_blocked()  # the server sees us go
        assert open_descriptors() == before  # no socket left open, on either side
        return not entered

    assert await at_each_schedule_point(attempt) >= 1


async def test_connect_websocket_cancelled_at_each_schedule_point(
    echo_server: Any, nursery: trio.Nursery
) -> None:
    async def attempt(n: int) -> bool:
        before = open_descriptors()
        ws = None
        with trio.fail_after(LIMIT):
            with trio.CancelScope() as scope, cancelled_at(n, scope):
                ws = await connect_websocket(nursery, HOST, echo_server.port, "/", use_ssl=False)
            if ws is not None:
                assert not scope.cancelled_caught
                await _echoes(ws)
                await ws.aclose()
            else:
                assert scope.cancelled_caught
            await trio.testing.wait_all_tasks_blocked()
        assert open_descriptors() == before
        return ws is None

    assert await at_each_schedule_point(attempt) >= 1


async def test_wrap_client_stream_cancelled_at_each_schedule_point(
    memory_server: Any, nursery: trio.Nursery
) -> None:
    listener = await memory_server(echo_handler)

    async def attempt(n: int) -> bool:
        stream = await listener.connect()
        ws = None
        with trio.fail_after(LIMIT):
            with trio.CancelScope() as scope, cancelled_at(n, scope):
                ws = await wrap_client_stream(nursery, stream, "localhost", "/")
            if ws is not None:
                await _echoes(ws)
                await ws.aclose()
            else:
                assert scope.cancelled_caught
                with pytest.raises(trio.ClosedResourceError):  # it closed the stream
                    await stream.send_all(b"GET")
        return ws is None

    assert await at_each_schedule_point(attempt) >= 1


async def _assert_rejected(peer: RawPeer, first: Event | None) -> None:
    assert isinstance(first, RejectConnection) and first.status_code == 403
    body = b""
    while isinstance(event := await peer.next_event(), RejectData):
        body += event.data
        if event.body_finished:
            break
    assert body == b"not you"
    assert await peer.next_event() is None  # and the stream is closed


@pytest.mark.parametrize("answer", ["accept", "reject"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_servers_answer_cancelled_at_each_schedule_point(
    nursery: trio.Nursery, transport: str, answer: str
) -> None:
    async def attempt(n: int) -> bool:
        ours, theirs = await stream_pair(transport)
        peer = RawPeer(theirs, ConnectionType.CLIENT)
        await peer.send(Request(host="localhost", target="/"))
        request = await wrap_server_stream(nursery, ours)
        ws = None
        with trio.fail_after(LIMIT):
            with trio.CancelScope() as scope, cancelled_at(n, scope):
                if answer == "accept":
                    ws = await request.accept()
                else:
                    await request.reject(403, body=b"not you")
            first = None if ws is not None else await peer.next_event()
            if scope.cancelled_caught:
                # The stream is closed, and the client sees it end: with no answer,
                # or, for reject(), whose closing is like aclose() (trio: cancelled,
                # it still closes), with the whole answer if it was out already.
                if answer == "accept":
                    assert first is None
                elif first is not None:
                    await _assert_rejected(peer, first)
                with pytest.raises(RuntimeError):  # either way the request is answered
                    await request.accept()
            elif ws is not None:
                assert isinstance(await peer.next_event(), AcceptConnection)
                await peer.send(TextMessage("hello"))
                assert await ws.get_message() == "hello"
            else:
                await _assert_rejected(peer, first)
            await trio.aclose_forcefully(peer.stream)
            if ws is not None:
                await ws.aclose()
        return scope.cancelled_caught

    cancelled = await at_each_schedule_point(attempt)
    if transport == "memory":
        assert cancelled >= 1  # a memory stream checkpoints before it takes the bytes

