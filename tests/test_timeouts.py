"""Connect and disconnect timeouts, on virtual time."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, CloseConnection

from trio_websocket import (
    ConnectionTimeout,
    DisconnectionTimeout,
    WebSocketRequest,
    open_websocket,
)

from .conftest import HOST, MemoryListener, RawPeer


async def silent_tcp_server(nursery: trio.Nursery, answer_handshake: bool) -> int:
    """A TCP server that never speaks, or that accepts and then ignores everything."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)

    async def handle(stream: trio.abc.Stream) -> None:
        if answer_handshake:
            peer = RawPeer(stream, ConnectionType.SERVER)
            await peer.next_event()
            await peer.send(AcceptConnection())
        await trio.sleep_forever()

    await nursery.start(trio.serve_listeners, handle, listeners)
    return int(listeners[0].socket.getsockname()[1])


async def test_connect_timeout(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    port = await silent_tcp_server(nursery, answer_handshake=False)
    start = trio.current_time()
    with pytest.raises(ConnectionTimeout):
        async with open_websocket(HOST, port, "/", use_ssl=False, connect_timeout=7):
            pytest.fail("should not connect")
    assert trio.current_time() - start == pytest.approx(7)


async def test_disconnect_timeout(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    port = await silent_tcp_server(nursery, answer_handshake=True)
    with pytest.raises(DisconnectionTimeout):
        async with open_websocket(HOST, port, "/", use_ssl=False,
                                  connect_timeout=math.inf, disconnect_timeout=3) as ws:
            start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(3)
    assert ws.closed is not None


async def test_server_drops_silent_clients_without_calling_handler(
        memory_server: object, autojump_clock: trio.testing.MockClock) -> None:
    called = False

    async def handler(request: WebSocketRequest) -> None:
        nonlocal called
        called = True

    listener: MemoryListener = await memory_server(handler, connect_timeout=5)  # type: ignore[operator]
    stream = await listener.connect()
    start = trio.current_time()
    assert await stream.receive_some() == b""  # the server hung up
    assert trio.current_time() - start == pytest.approx(5)
    assert not called


async def test_server_disconnect_timeout_aborts_unanswered_close(
        memory_server: object, autojump_clock: trio.testing.MockClock) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.accept()

    listener: MemoryListener = await memory_server(handler, disconnect_timeout=4)  # type: ignore[operator]
    peer = RawPeer(await listener.connect())
    assert isinstance(await peer.open(), AcceptConnection)
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1000
    start = trio.current_time()
    # We never answer the close; the server gives up after disconnect_timeout.
    assert await peer.stream.receive_some() == b""
    assert trio.current_time() - start == pytest.approx(4)
