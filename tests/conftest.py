"""Shared fixtures: an echo server on loopback, an in-memory listener, a hand-driven peer."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, Request

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
    wrap_client_stream,
)

HOST = "127.0.0.1"


def pytest_report_header() -> str:
    from trio_websocket_core._connection import RAW_SOCKET_IO

    path = "raw descriptors on plain TCP" if RAW_SOCKET_IO else "the generic stream methods"
    return f"trio-websocket I/O: {path} (TRIO_WEBSOCKET_GENERIC_IO=1 for the generic path)"


async def echo_handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


@pytest.fixture
async def echo_server(nursery: trio.Nursery) -> AsyncIterator[WebSocketServer]:
    server = await nursery.start(serve_websocket, echo_handler, HOST, 0, None)
    yield server


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Gives a WebSocketServer the server halves of in-memory stream pairs."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    async def connect(self) -> trio.testing.MemoryStapledStream[Any, Any]:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self._receive.close()
        await trio.lowlevel.checkpoint()


class RawPeer:
    """A peer driven by hand through wsproto, able to send any bytes at all."""

    def __init__(self, stream: trio.abc.Stream, role: ConnectionType = ConnectionType.CLIENT):
        self.stream = stream
        self.ws = WSConnection(role)
        self._pending: deque[Event] = deque()

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self) -> Event | None:
        """The next event from the other side, or None once its stream ends."""
        while not self._pending:
            data = await self.stream.receive_some()
            if not data:
                return None
            self.ws.receive_data(data)
            self._pending.extend(self.ws.events())
        return self._pending.popleft()

    async def open(self, target: str = "/", **request: Any) -> Event | None:
        """Send a handshake request and return the server's answer."""
        await self.send(Request(host="localhost", target=target, **request))
        return await self.next_event()


async def client_and_raw_server(
    nursery: trio.Nursery, streams: tuple[Any, Any] | None = None
) -> tuple[WebSocketConnection, RawPeer]:
    """Our client, connected over memory streams to a server driven by hand."""
    client_stream, server_stream = streams or trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream, ConnectionType.SERVER)

    async def answer() -> None:
        await peer.next_event()
        await peer.send(AcceptConnection())

    nursery.start_soon(answer)
    client = await wrap_client_stream(nursery, client_stream, "localhost", "/")
    return client, peer


@pytest.fixture
def memory_server(nursery: trio.Nursery) -> Any:
    """Start a WebSocketServer on a MemoryListener; returns an async starter."""

    async def start(handler: Any, **options: Any) -> MemoryListener:
        listener = MemoryListener()
        server = WebSocketServer(handler, [listener], **options)
        await nursery.start(server.run)
        return listener

    return start
