"""Trio's promises, held over every transport: memory streams (the generic path),
lock-step streams (writes that wait for the peer) and real loopback sockets
(the raw-descriptor path on POSIX, unless TRIO_WEBSOCKET_GENERIC_IO=1).

- every public async call raises a cancellation that is already pending;
- a cancelled call did nothing: nothing reaches the peer, the connection still
  works, the compressor is untouched (checked by wsproto as an independent
  peer, with and without compression); sends wait for room in the write buffer,
  or (a plain SocketStream on the generic path) for the kernel before any
  byte went out, so even a cancelled send that waited never aborts the
  connection;
- a tight loop of calls lets other tasks run within the cooperative budget.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate

from trio_websocket import (
    ConnectionClosed,
    ConnectionFailed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
    wrap_server_stream,
)
from trio_websocket_core._budget import BUDGET
from trio_websocket_core._connection import RAW_SOCKET_IO

from .conftest import HOST, TCP_HOLDS_AT_MOST, Flood, RawPeer, client_and_raw_server

LIMIT = 10  # seconds: a hang must fail, not stall the suite
TRANSPORTS = ["memory", "lockstep", "tcp"]


async def stream_pair(transport: str) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """(ours, the peer's) connected by ``transport``."""
    if transport == "memory":
        return trio.testing.memory_stream_pair()
    if transport == "lockstep":
        return trio.testing.lockstep_stream_pair()
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    peer = await trio.open_tcp_stream(HOST, port)
    ours = await listeners[0].accept()
    await listeners[0].aclose()
    return ours, peer


class Peer(RawPeer):
    """The wsproto peer, which also knows our end of the stream (to ask its buffers)."""

    def __init__(self, ours: trio.abc.Stream, theirs: trio.abc.Stream) -> None:
        super().__init__(theirs, ConnectionType.CLIENT)
        self.ours = ours


Opener = Callable[..., Awaitable[tuple[WebSocketConnection, Peer]]]


@pytest.fixture
async def open_pair(nursery: trio.Nursery) -> AsyncIterator[Opener]:
    """Opens our server end and a wsproto client (deflate if ``compress``); closes the peers."""
    peers: list[Peer] = []

    async def open_(transport: str, compress: bool,
                    **options: Any) -> tuple[WebSocketConnection, Peer]:
        ours, theirs = await stream_pair(transport)
        peer = Peer(ours, theirs)
        peers.append(peer)
        extensions = [WsprotoDeflate()] if compress else []

        async def handshake() -> None:
            await peer.send(Request(host="localhost", target="/", extensions=extensions))

        nursery.start_soon(handshake)
        request = await wrap_server_stream(nursery, ours, **options)
        accepted: list[WebSocketConnection] = []

        async def accept() -> None:  # on lock-step streams its write waits for the peer
            accepted.append(await request.accept())

        nursery.start_soon(accept)
        assert isinstance(await peer.next_event(), AcceptConnection)
        await trio.testing.wait_all_tasks_blocked()
        return accepted[0], peer

    yield open_
    for peer in peers:
        await trio.aclose_forcefully(peer.stream)


async def next_message(peer: RawPeer, *, strict: bool = False) -> str | bytes | None:
    """The peer's next whole message (pings and pongs skipped); None at the end.

    ``strict``: a ping or pong fails the test instead (one that should not have been sent).
    """
    parts: list[Any] = []
    while True:
        event = await peer.next_event()
        if event is None or isinstance(event, CloseConnection):
            return None
        assert not strict or isinstance(event, Message), f"unexpected {event!r}"
        if isinstance(event, Message):
            parts.append(event.data)
            if event.message_finished:
                return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)


@pytest.fixture(params=[False, True], ids=["plain", "deflate"])
def compress(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# -- a pending cancellation -------------------------------------------------

CALLS: dict[str, Callable[[WebSocketConnection], Awaitable[object]]] = {
    "send_message": lambda ws: ws.send_message("never sent"),
    "get_message": lambda ws: ws.get_message(),
    "ping": lambda ws: ws.ping(b"never"),
    "pong": lambda ws: ws.pong(b"never"),
    "aclose": lambda ws: ws.aclose(),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_a_pending_cancellation_is_raised_before_anything_happens(
    open_pair: Opener, nursery: trio.Nursery, call: str, transport: str, compress: bool
) -> None:
    ws, peer = await open_pair(transport, compress, message_queue_size=10)
    await ws.send_message("context")  # gives the compressor a history to corrupt
    assert await next_message(peer) == "context"
    await peer.send(TextMessage("queued"))
    await peer.send(Ping(b"flush"))  # answered once the reader has queued "queued"
    assert await peer.next_event() == Pong(b"flush")
    with trio.fail_after(LIMIT):
        with trio.CancelScope() as scope:
            scope.cancel()
            await CALLS[call](ws)
    assert scope.cancelled_caught
    if call == "aclose":  # trio's rule for aclose: cancelled, it aborts
        assert ws.closed is not None and ws.closed.code == 1006
        assert await next_message(peer) is None  # and nothing else was sent
        return
    # Nothing was taken, nothing was sent, and the connection works on.
    assert await ws.get_message() == "queued"
    await ws.send_message("context and more")
    assert await peer.next_event() == TextMessage("context and more")


# -- cancelled while the write buffer is full ----------------------------------


def flood_size(transport: str) -> int:
    # Random bytes do not compress, so the buffer fills with deflate too.
    return 2**16 if transport == "tcp" else 2**14


#: More than loopback TCP takes in from a peer that does not read: a buffer
#: holding such a message never has room again until the peer reads.
STALL = 8 * 2**20


def held_by(transport: str) -> int:
    """The most the transport may take in from a peer that does not read.

    A lock-step stream takes nothing: a batch it is writing stays in our buffer.
    """
    return TCP_HOLDS_AT_MOST if transport == "tcp" else 0


WAITING_CALLS: dict[str, Callable[[WebSocketConnection], Awaitable[object]]] = {
    "send_message": lambda ws: ws.send_message("cancelled while waiting for room"),
    "ping": lambda ws: ws.ping(b"cancelled"),
    "pong": lambda ws: ws.pong(b"cancelled"),
}


@pytest.mark.parametrize("call", list(WAITING_CALLS))
@pytest.mark.parametrize("transport", ["lockstep", "tcp"])
async def test_a_call_cancelled_behind_a_blocked_write_sends_nothing(
    open_pair: Opener, nursery: trio.Nursery, transport: str, compress: bool, call: str
) -> None:
    ws, peer = await open_pair(transport, compress, max_message_size=2**24)
    # Over TCP the kernel may take in a little more later on, which would let
    # the call go on: messages it can never take keep the buffer full.
    flood = Flood(ws, STALL if transport == "tcp" else flood_size(transport))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as inner:
            inner.start_soon(flood.run)  # the peer does not read: a send soon waits for room
            await trio.testing.wait_all_tasks_blocked()
            flood.assert_bounded(held_by(transport))
            flood.stop = True  # the send that waits is its last
            expected = [*flood.sent, flood.pending]
            with trio.CancelScope() as scope:
                inner.start_soon(_cancel_when_blocked, scope)
                await WAITING_CALLS[call](ws)
            assert scope.cancelled_caught
            assert ws.closed is None
            # Now the peer reads: every message sent before, whole and in order
            # (the waiting one too, once there is room), then only what was
            # sent after the cancellation, decoded correctly.
            for message in expected:
                assert await next_message(peer, strict=True) == message
            await flood.done.wait()
            assert flood.sent == expected and flood.error is None
            assert ws.closed is None
            # It repeats the cancelled message: a compressor that had taken that
            # in would refer back to bytes the peer never got.
            after = "after the cancellation: cancelled while waiting for room"
            inner.start_soon(ws.send_message, after)
            assert await peer.next_event() == TextMessage(after)


@pytest.mark.parametrize("transport", ["lockstep", "tcp"])
async def test_a_send_cancelled_while_it_waits_for_room_does_nothing(
    open_pair: Opener, nursery: trio.Nursery, transport: str, compress: bool
) -> None:
    ws, peer = await open_pair(transport, compress, max_message_size=2**24)
    flood = Flood(ws, flood_size(transport))
    with trio.fail_after(LIMIT):
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_when_blocked, scope)
            await flood.run()  # the peer does not read: a send soon waits for room
        assert scope.cancelled_caught
        flood.assert_bounded(held_by(transport))
        assert flood.pending is not None  # the cancelled send's message
        # The cancelled send did nothing: the connection is not aborted, and
        # the peer gets every message whose send returned, whole and in order,
        # then the next one sent, and nothing of the cancelled one. The next
        # one repeats the end of it: a compressor that had taken it in would
        # refer back to bytes the peer never got.
        assert ws.closed is None
        after = b"after: " + flood.pending[-1000:]
        async with trio.open_nursery() as inner:
            inner.start_soon(ws.send_message, after)  # it waits for room too
            for message in flood.sent:
                assert await next_message(peer, strict=True) == message
            assert await peer.next_event() == BytesMessage(after)
        assert ws.closed is None
        await peer.send(TextMessage("and back"))
        assert await ws.get_message() == "and back"


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "deflate"])
async def test_a_send_cancelled_while_the_kernel_is_full_and_nothing_is_queued(
    nursery: trio.Nursery, compress: bool
) -> None:
    # Junk written under the connection fills the kernel's buffers while our
    # queue is empty. A send then either waits for the socket itself (the
    # generic path writes a plain SocketStream from the sending task) or
    # queues its frame and returns (raw descriptors): cancelled, it must have
    # done nothing; returned, its message must arrive. The peer skips the junk.
    ours, theirs = await stream_pair("tcp")
    assert isinstance(ours, trio.SocketStream)
    peer = RawPeer(theirs, ConnectionType.CLIENT)
    await peer.send(Request(host="localhost", target="/",
                            extensions=[WsprotoDeflate()] if compress else []))
    ws = await (await wrap_server_stream(nursery, ours)).accept()
    assert isinstance(await peer.next_event(), AcceptConnection)
    junk = 0
    filler = socket.socket(fileno=os.dup(ours.socket.fileno()))
    filler.setblocking(False)
    with filler:
        with contextlib.suppress(BlockingIOError):
            for _ in range(100_000):  # bounded: loopback holds a few MiB at most
                junk += filler.send(b"\0" * 65536)
    with trio.fail_after(LIMIT):
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_when_blocked, scope)
            await ws.send_message("sent or not at all")
        # Which of the two happens is the path's: only the generic one waits.
        assert scope.cancelled_caught is not RAW_SOCKET_IO
        assert ws.closed is None
        await ws.send_message("after")
        while junk:  # the peer reads again: first the junk, then the frames
            data = await theirs.receive_some(min(junk, 65536))
            assert data == b"\0" * len(data)
            junk -= len(data)
        if not scope.cancelled_caught:
            assert await peer.next_event() == TextMessage("sent or not at all")
        assert await peer.next_event() == TextMessage("after")
        assert ws.closed is None
        await peer.send(TextMessage("and back"))
        assert await ws.get_message() == "and back"
    await theirs.aclose()


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def test_a_ping_cancelled_while_waiting_for_its_pong_leaves_the_connection_working(
    open_pair: Opener,
) -> None:
    ws, peer = await open_pair("memory", compress=False)
    with trio.move_on_after(1) as scope:  # no pong comes: the peer is hand-driven
        await ws.ping(b"heartbeat")
    assert scope.cancelled_caught
    assert await peer.next_event() == Ping(b"heartbeat")  # it was sent once
    await peer.send(Pong(b"heartbeat"))  # late: ignored
    await ws.send_message("fine")
    assert await peer.next_event() == TextMessage("fine")
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as inner:
            inner.start_soon(ws.ping, b"heartbeat")  # the payload is free again
            assert await peer.next_event() == Ping(b"heartbeat")
            await peer.send(Pong(b"heartbeat"))


# -- fairness ----------------------------------------------------------------


async def count_turns(turns: list[int], done: trio.Event) -> None:
    while not done.is_set():
        turns[0] += 1
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_a_tight_send_loop_lets_other_tasks_run(
    open_pair: Opener, nursery: trio.Nursery, transport: str, compress: bool
) -> None:
    ws, peer = await open_pair(transport, compress)
    calls = 8 * BUDGET
    turns = [0]
    done = trio.Event()
    nursery.start_soon(count_turns, turns, done)
    for number in range(calls):
        await ws.send_message(f"m{number}")
    done.set()
    # At least one turn for every BUDGET calls, however full the budget was.
    assert turns[0] >= calls // BUDGET - 1
    for number in range(calls):
        assert await next_message(peer) == f"m{number}"


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_a_tight_get_loop_over_queued_messages_lets_other_tasks_run(
    open_pair: Opener, nursery: trio.Nursery, transport: str
) -> None:
    calls = 8 * BUDGET
    ws, peer = await open_pair(transport, False, message_queue_size=calls)
    for number in range(calls):
        await peer.send(TextMessage(f"m{number}"))
    await peer.send(Ping(b"all queued"))
    assert await peer.next_event() == Pong(b"all queued")
    turns = [0]
    done = trio.Event()
    nursery.start_soon(count_turns, turns, done)
    for number in range(calls):
        assert await ws.get_message() == f"m{number}"
    done.set()
    assert turns[0] >= calls // BUDGET - 1


def test_the_raw_descriptor_path_can_be_turned_off() -> None:
    # CI runs the whole suite a second time with it off (the generic path).
    code = "import trio_websocket_core._connection as c; print(c.RAW_SOCKET_IO)"
    for setting, expected in (("1", "False"), ("0", str(os.name == "posix"))):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env={**os.environ, "TRIO_WEBSOCKET_GENERIC_IO": setting},
                                check=True)
        assert result.stdout.strip() == expected


# -- streams their owner closes ----------------------------------------------


@pytest.mark.parametrize("when", ["idle", "after a hand-over"])
async def test_a_stream_closed_by_its_owner_ends_in_1006(
    nursery: trio.Nursery, when: str
) -> None:
    ours, theirs = await stream_pair("tcp")
    peer = RawPeer(theirs, ConnectionType.CLIENT)
    await peer.send(Request(host="localhost", target="/"))
    ws = await (await wrap_server_stream(nursery, ours)).accept()
    assert isinstance(await peer.next_event(), AcceptConnection)
    if when == "after a hand-over":
        # A message handed to a waiting getter: the reader then stands aside.
        async with trio.open_nursery() as inner:
            inner.start_soon(peer.send, TextMessage("hello"))
            assert await ws.get_message() == "hello"
    await trio.testing.wait_all_tasks_blocked()
    assert isinstance(ours, trio.SocketStream)
    number = ours.socket.fileno()
    await ours.aclose()  # the owner closes the stream it handed over
    # A new socket may take the same descriptor number: it must not be read.
    reused_a, reused_b = trio.socket.socketpair()
    with reused_a, reused_b:
        if reused_a.fileno() == number:
            await reused_b.send(b"\x81\x02hi")
        with trio.fail_after(LIMIT):
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1006
            with pytest.raises(ConnectionClosed):
                await ws.send_message("x")
            await ws.aclose()
        if reused_a.fileno() == number:
            assert await reused_a.recv(10) == b"\x81\x02hi"  # untouched
    await peer.stream.aclose()


async def test_a_client_stream_closed_by_its_owner_ends_in_1006(nursery: trio.Nursery) -> None:
    ours, theirs = await stream_pair("tcp")
    ws, peer = await client_and_raw_server(nursery, (ours, theirs))
    await trio.testing.wait_all_tasks_blocked()
    await ours.aclose()
    with trio.fail_after(LIMIT):
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1006
    await peer.stream.aclose()


# -- the protocol points -----------------------------------------------------


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_a_ping_and_a_close_in_one_read_are_answered_in_order(
    open_pair: Opener, nursery: trio.Nursery, transport: str
) -> None:
    ws, peer = await open_pair(transport, compress=False)
    await peer.stream.send_all(peer.ws.send(Ping(b"first")) + peer.ws.send(
        CloseConnection(1000, "bye")))
    with trio.fail_after(LIMIT):
        assert await peer.next_event() == Pong(b"first")
        assert await peer.next_event() == CloseConnection(1000, "bye")
        with pytest.raises(ConnectionClosed):
            await ws.get_message()


async def test_a_close_frame_without_a_reason_gives_none(open_pair: Opener) -> None:
    ws, peer = await open_pair("memory", compress=False)
    await peer.send(CloseConnection(1001))
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason.code == 1001
    assert closed.value.reason.reason is None
    ws, peer = await open_pair("memory", compress=False)
    await peer.stream.send_all(b"\x88\x80abcd")  # a masked close frame with no payload
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert (closed.value.reason.code, closed.value.reason.reason) == (1005, None)


async def test_a_client_does_not_wait_forever_for_the_servers_eof(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    from trio_websocket import wrap_client_stream
    from trio_websocket_core._connection import CLOSE_EOF_TIMEOUT

    ours, theirs = trio.testing.memory_stream_pair()
    peer = RawPeer(theirs, ConnectionType.SERVER)

    async def answer() -> None:
        await peer.next_event()
        await peer.send(AcceptConnection())
        close = await peer.next_event()
        assert isinstance(close, CloseConnection)
        await peer.send(close.response())  # ... and keeps TCP open

    nursery.start_soon(answer)
    ws = await wrap_client_stream(nursery, ours, "localhost", "/")
    start = trio.current_time()
    await ws.aclose()
    assert trio.current_time() - start == pytest.approx(CLOSE_EOF_TIMEOUT)
    assert ws.closed is not None and ws.closed.code == 1000


async def test_a_refused_connection_is_both_a_handshake_error_and_an_os_error() -> None:
    probe = trio.socket.socket()
    await probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(ConnectionFailed) as failure:
        async with open_websocket_url(f"ws://{HOST}:{port}/"):
            pass
    assert isinstance(failure.value, HandshakeError)
    assert isinstance(failure.value, OSError)
    assert isinstance(failure.value.__cause__, ConnectionRefusedError)
    assert failure.value.errno == failure.value.__cause__.errno
    try:  # the reference's own example catches OSError
        async with open_websocket_url(f"ws://{HOST}:{port}/"):
            pass
    except OSError as error:
        assert "Connection refused" in str(error)



@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_one_read_of_many_tiny_frames_lets_other_tasks_run(
    open_pair: Opener, nursery: trio.Nursery, transport: str
) -> None:
    from trio_websocket_core._protocol import FRAMES_PER_BATCH

    count = 6000  # 36 KB of empty text frames, well within one read
    ws, peer = await open_pair(transport, False, message_queue_size=math.inf)
    burst = b"".join(peer.ws.send(TextMessage("")) for _ in range(count))
    done = trio.Event()
    seen = [0]  # nothing is queued before the burst is sent

    async def watch() -> None:  # how many messages are queued at each of its turns
        while not done.is_set():
            seen.append(len(ws._inbox._items or ()))
            await trio.lowlevel.checkpoint()

    nursery.start_soon(watch)
    await peer.stream.send_all(burst + peer.ws.send(Ping(b"all read")))
    with trio.fail_after(LIMIT):
        assert await peer.next_event() == Pong(b"all read")
    done.set()
    steps = [later - earlier for earlier, later in itertools.pairwise(seen)]
    # Trio may run the reader last in one pass of its scheduler and first in
    # the next, so two batches at most come between two of the watcher's turns.
    assert max(steps) <= 2 * FRAMES_PER_BATCH
    assert len(ws._inbox._items or ()) == count


async def test_a_pong_goes_out_beside_a_write_under_way_and_a_send_that_fails(
        open_pair: Opener) -> None:
    # A ping parsed while the writer task hands over a frame the peer reads
    # only later, and a send that fails before anything is queued: the pong
    # must still go out. The order of the tasks is the scheduler's choice, so
    # try a few times.
    for attempt in range(20):
        ws, peer = await open_pair("lockstep", False)
        ping = b"ping %d" % attempt
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as inner:
                inner.start_soon(ws.send_message, b"first")  # blocks until the peer reads

                async def doomed(ws: WebSocketConnection = ws) -> None:
                    with pytest.raises(UnicodeEncodeError):
                        await ws.send_message("\ud800")  # fails once it is its turn

                inner.start_soon(doomed)
                await trio.testing.wait_all_tasks_blocked()
                peer.ws.receive_data(await peer.stream.receive_some())  # "first" is out
                assert list(peer.ws.events()) == [BytesMessage(b"first")]
                inner.start_soon(peer.stream.send_all, peer.ws.send(Ping(ping)))
                assert await peer.next_event() == Pong(ping)


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_every_ping_is_answered_in_order(open_pair: Opener, transport: str) -> None:
    # Autobahn 2.10 and 2.11 expect a pong for each ping, sent in a burst or apart.
    _, peer = await open_pair(transport, False)
    await peer.stream.send_all(b"".join(peer.ws.send(Ping(b"%d" % n)) for n in range(10)))
    for n in range(10, 20):
        await peer.send(Ping(b"%d" % n))
    with trio.fail_after(LIMIT):
        for n in range(20):
            assert await peer.next_event() == Pong(b"%d" % n)


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_a_flood_of_pings_owes_a_bounded_number_of_pongs(
    open_pair: Opener, transport: str
) -> None:
    # RFC 6455 5.5.3 lets older pings go unanswered; the most recent never is.
    # So however many pings one read holds, at most MAX_OWED_PONGS answers are
    # built and written, in one write.
    from trio_websocket_core._connection import MAX_OWED_PONGS

    ws, peer = await open_pair(transport, False)
    flood = b"".join(peer.ws.send(Ping(b"%d" % number)) for number in range(500))
    await peer.stream.send_all(flood + peer.ws.send(TextMessage("after the pings")))
    pongs = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as inner:
            inner.start_soon(lambda: _echo_once(ws))  # its echo ends the peer's reading
            while isinstance(event := await peer.next_event(), Pong):
                pongs.append(event.payload)
    assert event == TextMessage("after the pings")
    assert pongs[-1] == b"499"
    assert len(pongs) <= 2 * MAX_OWED_PONGS  # a read may end mid-flood: two batches
    assert pongs == sorted(pongs, key=int)  # in order


async def _echo_once(ws: WebSocketConnection) -> None:
    await ws.send_message(await ws.get_message())


async def test_a_getter_never_reads_a_descriptor_its_owner_closed_meanwhile(
    nursery: trio.Nursery,
) -> None:
    # The owner closes the stream in the same pass of the scheduler that wakes
    # a getter reading the socket, and a new socket takes the number at once.
    for _ in range(20):
        ours, theirs = await stream_pair("tcp")
        peer = RawPeer(theirs, ConnectionType.CLIENT)
        await peer.send(Request(host="localhost", target="/"))
        ws = await (await wrap_server_stream(nursery, ours)).accept()
        assert isinstance(await peer.next_event(), AcceptConnection)
        got: list[object] = []
        answered = trio.Event()

        async def getter(ws: WebSocketConnection = ws, got: list[object] = got,
                         answered: trio.Event = answered) -> None:
            assert await ws.get_message() == "hello"  # handed over: the reader stands aside
            try:
                got.append(await ws.get_message())  # asked at once: reads the socket itself
            except ConnectionClosed as closed:
                got.append(closed.reason.code)
            answered.set()

        async with trio.open_nursery() as inner:
            inner.start_soon(getter)
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(TextMessage("hello"))
            await trio.testing.wait_all_tasks_blocked()
            assert isinstance(ours, trio.SocketStream)
            assert isinstance(peer.stream, trio.SocketStream)
            # The frame that wakes the getter, written without a checkpoint.
            sender = socket.socket(fileno=peer.stream.socket.fileno())
            sender.send(peer.ws.send(TextMessage("real")))
            sender.detach()
            await trio.lowlevel.checkpoint()  # the getter is woken in the next pass...
            ours.socket.close()  # ...in which the owner closes its socket
            first, second = trio.socket.socketpair()
            with first, second:
                stolen = peer.ws.send(TextMessage("stolen"))  # a frame a server would take
                await first.send(stolen)
                await second.send(stolen)
                with trio.fail_after(LIMIT):
                    await answered.wait()
        assert got[0] in ("real", 1006)
        await peer.stream.aclose()


@pytest.mark.parametrize("with_ping", [True, False], ids=["ping", "full queue"])
async def test_batches_split_between_a_getter_and_the_reader_keep_order(
    open_pair: Opener, with_ping: bool
) -> None:
    # One read holds three batches of frames. A getter that takes the first
    # batch's message leaves the rest to the next get_message(), which may
    # start parsing before the reader runs; whatever each of them parses, the
    # messages must come out in the order they were sent.
    from trio_websocket_core._protocol import FRAMES_PER_BATCH

    for _ in range(20):
        ws, peer = await open_pair("tcp", False)
        await peer.send(BytesMessage(b"prime"))
        assert await ws.get_message() == b"prime"  # handed over: the reader stands aside
        filler = peer.ws.send(Pong(b""))
        middle = [b"X", b"Y"] if with_ping else [b"X", b"Y1", b"Y2", b"Y"]
        middle_frames = [peer.ws.send(BytesMessage(middle[0]))]
        if with_ping:
            middle_frames.append(peer.ws.send(Ping(b"between")))
        middle_frames += [peer.ws.send(BytesMessage(text)) for text in middle[1:]]
        burst = b"".join([
            filler * (FRAMES_PER_BATCH - 1), peer.ws.send(BytesMessage(b"A")),
            *middle_frames, filler * (FRAMES_PER_BATCH - len(middle_frames)),
            peer.ws.send(BytesMessage(b"Z")),
        ])
        wanted = [b"A", *middle, b"Z"]
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as inner:
                inner.start_soon(peer.stream.send_all, burst)
                got = [await ws.get_message() for _ in wanted]  # back to back
        assert got == wanted


@pytest.mark.parametrize("ending", ["protocol error", "message too big"])
async def test_a_ping_before_we_fail_the_connection_is_answered_first(
    open_pair: Opener, ending: str
) -> None:
    _, peer = await open_pair("memory", False, max_message_size=10)
    if ending == "protocol error":
        bad, code = b"\x83\x80abcd", 1002  # a masked frame with a reserved opcode
    else:
        bad, code = peer.ws.send(TextMessage("far more than ten characters")), 1009
    await peer.stream.send_all(peer.ws.send(Ping(b"first")) + bad)
    with trio.fail_after(LIMIT):
        assert await peer.next_event() == Pong(b"first")
        close = await peer.next_event()
    assert isinstance(close, CloseConnection) and close.code == code


@pytest.mark.parametrize("written", ["owed pong", "message"])
@pytest.mark.parametrize("fault", [trio.BrokenResourceError, OSError])
async def test_a_transport_fault_in_the_writer_task_ends_that_connection_only(
    nursery: trio.Nursery, fault: type[Exception], written: str
) -> None:
    # A custom stream whose send_all fails: as trio's own streams do when the
    # transport is broken, or in a way they never do. Either way the writer
    # task, which writes whatever the stream did not take at once, ends this
    # connection (1006) and nothing else.
    from wsproto.frame_protocol import FrameProtocol as WsprotoFrames

    from trio_websocket_core.toolkit import FrameProtocol

    class Failing(trio.abc.Stream):
        def __init__(self, inner: trio.abc.Stream) -> None:
            self.inner = inner
            self.writes = 0

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            self.writes += 1
            await trio.lowlevel.checkpoint()
            raise fault("this transport failed")

        async def wait_send_all_might_not_block(self) -> None:
            await trio.lowlevel.checkpoint()

        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            return await self.inner.receive_some(max_bytes)

        async def aclose(self) -> None:
            await self.inner.aclose()

    bystander, bystander_peer = await client_and_raw_server(nursery)
    ours, theirs = trio.testing.memory_stream_pair()
    failing = Failing(ours)
    ws = WebSocketConnection(nursery, failing, FrameProtocol(client=False), path="/")
    if written == "owed pong":
        await theirs.send_all(WsprotoFrames(client=True, extensions=[]).ping(b"owed"))
    else:
        await ws.send_message("doomed")  # handed on without waiting for the stream
    with trio.fail_after(LIMIT):
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1006
    assert failing.writes == 1  # the writer task's write failed, and nothing else wrote
    assert ws.closed is not None and ws.closed.code == 1006
    with pytest.raises(ConnectionClosed) as closed:
        await ws.send_message("after the fault")
    assert closed.value.reason.code == 1006
    await ws.aclose()  # the transport is gone: nothing to wait for
    await theirs.aclose()
    # The nursery carries on: another connection in it works as before.
    await bystander.send_message("still here")
    assert await bystander_peer.next_event() == TextMessage("still here")
    await bystander_peer.send(TextMessage("and here"))
    assert await bystander.get_message() == "and here"
