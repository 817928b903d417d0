"""Reading over plain TCP, where a task in get_message() reads the socket itself.

The reader task stands aside while a getter reads and takes the socket back
whenever none does; these tests hold the user-visible promises across those
hand-overs: order, pongs and closing while nobody waits for a message, and a
getter that is cancelled or woken by aclose() from another task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, wrap_server_stream

from .conftest import HOST, RawPeer

LIMIT = 10  # seconds: a broken hand-over hangs, and hanging must fail


@pytest.fixture
async def tcp_pair(
    nursery: trio.Nursery,
) -> AsyncIterator[tuple[WebSocketConnection, RawPeer]]:
    """Our server end on a real loopback socket, and a client driven by hand."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    port = listeners[0].socket.getsockname()[1]
    peer = RawPeer(await trio.open_tcp_stream(HOST, port), ConnectionType.CLIENT)
    server_stream = await listeners[0].accept()
    await listeners[0].aclose()
    assert type(server_stream) is trio.SocketStream  # the path under test
    await peer.send(Request(host="localhost", target="/"))
    request = await wrap_server_stream(nursery, server_stream)
    ws = await request.accept()
    assert isinstance(await peer.next_event(), AcceptConnection)
    yield ws, peer
    await peer.stream.aclose()


@asynccontextmanager
async def reading_socket(
    ws: WebSocketConnection, peer: RawPeer, ready: trio.Event
) -> AsyncIterator[None]:
    """Enter with the reader standing aside, so the next get_message() reads itself.

    A message handed to a getter that waits for it makes the reader stand
    aside; a get_message() right after (no checkpoint between) reads the
    socket itself. ``ready`` is set on entering: once every task is blocked
    after that, the getter is reading.
    """

    async def warm_up() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the getter waits first
        await peer.send(TextMessage("warm-up"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(warm_up)
        assert await ws.get_message() == "warm-up"
        ready.set()
        yield


async def test_echo_with_pings_between_messages(
    tcp_pair: tuple[WebSocketConnection, RawPeer],
) -> None:
    ws, peer = tcp_pair

    async def echo() -> None:
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.send_message(await ws.get_message())

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            for round_trip in range(50):
                await peer.send(TextMessage(f"m{round_trip}"))
                assert await peer.next_event() == TextMessage(f"m{round_trip}")
                if round_trip % 7 == 0:
                    await peer.send(Ping(b"%d" % round_trip))
                    assert await peer.next_event() == Pong(b"%d" % round_trip)
            await peer.send(CloseConnection(1000))
            assert await peer.next_event() == CloseConnection(1000, "")


async def test_ping_is_answered_while_the_user_is_busy_elsewhere(
    tcp_pair: tuple[WebSocketConnection, RawPeer]
) -> None:
    ws, peer = tcp_pair
    now_busy = trio.Event()
    back = trio.Event()
    got: list[str | bytes] = []

    async def user() -> None:
        for _ in range(3):  # each asks again at once: getters read the socket
            got.append(await ws.get_message())
        now_busy.set()
        await back.wait()  # not in get_message: the reader must watch again
        got.append(await ws.get_message())

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as inner:
            inner.start_soon(user)
            for text in ("a", "b", "c"):
                await peer.send(TextMessage(text))
            await now_busy.wait()
            await peer.send(Ping(b"still there?"))
            assert await peer.next_event() == Pong(b"still there?")
            back.set()
            await peer.send(TextMessage("d"))
    assert got == ["a", "b", "c", "d"]


async def test_burst_through_a_full_queue_keeps_order_pongs_and_close(
    tcp_pair: tuple[WebSocketConnection, RawPeer],
) -> None:
    # One write holds more messages than the queue (size 1) and a ping among
    # them: a getter reading the socket keeps the first, and the reader
    # delivers the rest in order and answers the ping. A close then ends the
    # stream only after every message was taken.
    ws, peer = tcp_pair
    ready = trio.Event()
    received: list[str | bytes] = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                async with reading_socket(ws, peer, ready):
                    with pytest.raises(ConnectionClosed) as caught:
                        while True:
                            received.append(await ws.get_message())
                assert caught.value.reason == CloseReason(4001, "done")

            nursery.start_soon(drain)
            await ready.wait()
            await trio.testing.wait_all_tasks_blocked()
            burst = b"".join(peer.ws.send(TextMessage(f"n{i}")) for i in range(20))
            burst += peer.ws.send(Ping(b"mid"))
            burst += b"".join(peer.ws.send(BytesMessage(b"%d" % i)) for i in range(20))
            await peer.stream.send_all(burst)
            assert await peer.next_event() == Pong(b"mid")
            await peer.send(CloseConnection(4001, "done"))
            assert await peer.next_event() == CloseConnection(4001, "done")
    assert received == [f"n{i}" for i in range(20)] + [b"%d" % i for i in range(20)]


async def test_concurrent_getters_are_served_in_arrival_order(
    tcp_pair: tuple[WebSocketConnection, RawPeer]
) -> None:
    ws, peer = tcp_pair
    ready = trio.Event()
    got: dict[str, str | bytes] = {}

    async def first() -> None:
        async with reading_socket(ws, peer, ready):
            got["first"] = await ws.get_message()

    async def second() -> None:
        got["second"] = await ws.get_message()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as inner:
            inner.start_soon(first)
            await ready.wait()
            await trio.testing.wait_all_tasks_blocked()
            inner.start_soon(second)
            await trio.testing.wait_all_tasks_blocked()
            both = peer.ws.send(TextMessage("1")) + peer.ws.send(TextMessage("2"))
            await peer.stream.send_all(both)
    assert got == {"first": "1", "second": "2"}


@pytest.mark.parametrize("checkpoints_after_a_send", [None, 0, 1, 2, 3])
async def test_aclose_from_another_task_wakes_a_reading_getter(
    nursery: trio.Nursery, tcp_pair: tuple[WebSocketConnection, RawPeer],
    checkpoints_after_a_send: int | None,
) -> None:
    # The peer answers the close only after the getter has given up: the
    # getter must not wait for the peer's answer to learn of the close.
    # Whatever the writer is doing then (a send just before aclose() may
    # still be in the stream's send_all) makes no difference.
    ws, peer = tcp_pair
    ready = trio.Event()
    gave_up = trio.Event()
    closed_done = trio.Event()

    async def getter() -> None:
        async with reading_socket(ws, peer, ready):
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        gave_up.set()

    async def closer() -> None:
        if checkpoints_after_a_send is not None:
            await ws.send_message("reply")
            await ws.send_message("reply")  # a second send in a row goes through the writer
            for _ in range(checkpoints_after_a_send):
                await trio.lowlevel.checkpoint()
        await ws.aclose(4002, "leaving")
        closed_done.set()

    with trio.fail_after(LIMIT):
        nursery.start_soon(getter)
        await ready.wait()
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(closer)
        if checkpoints_after_a_send is not None:
            assert await peer.next_event() == TextMessage("reply")
            assert await peer.next_event() == TextMessage("reply")
        assert await peer.next_event() == CloseConnection(4002, "leaving")
        await gave_up.wait()
        assert not closed_done.is_set()  # still waiting for the peer's answer
        await peer.send(CloseConnection(4002, "leaving"))
        await closed_done.wait()
    assert ws.closed == CloseReason(4002, "leaving")


async def test_aclose_during_a_blocked_send_lets_the_send_finish(
    tcp_pair: tuple[WebSocketConnection, RawPeer],
) -> None:
    # Waking the reading getter must not wake a task blocked on writing,
    # from the first aclose() or a second one: the long message goes out
    # whole, then the close frame.
    ws, peer = tcp_pair
    ready = trio.Event()
    long = b"x" * 2**25  # more than the socket buffers hold
    received = bytearray()

    async def getter() -> None:
        async with reading_socket(ws, peer, ready):
            with pytest.raises(ConnectionClosed):
                await ws.get_message()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as inner:
            inner.start_soon(getter)
            await ready.wait()
            await trio.testing.wait_all_tasks_blocked()
            inner.start_soon(ws.send_message, long)
            await trio.testing.wait_all_tasks_blocked()  # the send waits for the peer
            inner.start_soon(ws.aclose, 4003)
            await trio.testing.wait_all_tasks_blocked()
            inner.start_soon(ws.aclose)  # a second close while the first waits
            await trio.testing.wait_all_tasks_blocked()
            while True:
                event = await peer.next_event()
                if not isinstance(event, BytesMessage):
                    break
                received += event.data
            assert event == CloseConnection(4003, "")
            await peer.send(CloseConnection(4003))
    assert received == long
    assert ws.closed == CloseReason(4003, None)


async def test_cancelled_reading_getter_leaves_the_connection_working(
    tcp_pair: tuple[WebSocketConnection, RawPeer],
) -> None:
    ws, peer = tcp_pair
    ready = trio.Event()
    scope = trio.CancelScope()

    async def getter() -> None:
        async with reading_socket(ws, peer, ready):
            with scope:
                await ws.get_message()  # cancelled while reading the socket itself
                raise AssertionError("no message was sent")

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as inner:
            inner.start_soon(getter)
            await ready.wait()
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
        await peer.send(Ping(b"after"))
        assert await peer.next_event() == Pong(b"after")
        await peer.send(TextMessage("next"))
        assert await ws.get_message() == "next"
        await ws.send_message("bye")
        assert await peer.next_event() == TextMessage("bye")


async def test_peer_vanishing_under_a_reading_getter_gives_1006(
    tcp_pair: tuple[WebSocketConnection, RawPeer],
) -> None:
    ws, peer = tcp_pair
    ready = trio.Event()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:

            async def getter() -> None:
                async with reading_socket(ws, peer, ready):
                    with pytest.raises(ConnectionClosed) as caught:
                        await ws.get_message()
                assert caught.value.reason == CloseReason(1006, None)

            nursery.start_soon(getter)
            await ready.wait()
            await trio.testing.wait_all_tasks_blocked()
            await peer.stream.aclose()
    assert ws.closed == CloseReason(1006, None)
