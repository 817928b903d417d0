"""Broadcast to the clients of every server process, through a message broker.

    python examples/broadcast.py

A server process knows only its own connections. To reach every client, a
process publishes the message to a broker (Redis pub/sub, NATS, PostgreSQL
LISTEN/NOTIFY, ...); every process subscribes, and each delivers what arrives
to its own clients. Here two servers in one process stand in for two
processes or machines, and ``MemoryBroker`` stands in for the broker: swap
in a real client with the same two methods (docs/deploy.md says what to
mind under Trio).

Each client gets a short queue of its own. A client that falls so far behind
that its queue is full is closed with 1013 (try again later) rather than
holding up everyone else or letting the backlog grow without bound. Such a
client may have stopped reading altogether, so that its task is stuck in a
send that waits for room: the hub cancels that send (a cancelled send sends
nothing) and gives the closing handshake ``close_timeout`` seconds before
the connection is aborted.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


class MemoryBroker:
    """Stands in for a broker's channel: every message published reaches every subscriber."""

    def __init__(self) -> None:
        self._subscribers: set[trio.MemorySendChannel[str]] = set()

    async def publish(self, message: str) -> None:
        """Hand ``message`` to every subscriber, this process's own included.

        A subscriber that leaves meanwhile, even while this waits for room in
        its channel, is skipped: a process going away must not make a publish
        meant for everyone else fail.
        """
        for subscriber in list(self._subscribers):
            try:
                await subscriber.send(message)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # it unsubscribed, or its receiving end is gone

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
        """Receive what is published while the block runs."""
        send, receive = trio.open_memory_channel[str](100)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()


class _Client:
    """What the hub keeps for one connection: its queue, and how to stop its sender."""

    def __init__(self, queue: trio.MemorySendChannel[str]) -> None:
        self.queue = queue
        self.sender = trio.CancelScope()


class Hub:
    """One process's clients, each with a queue of broadcast messages still to send it."""

    def __init__(self, broker: MemoryBroker, queue_size: int = 16,
                 close_timeout: float = 5.0) -> None:
        self.broker = broker
        self.queue_size = queue_size
        self.close_timeout = close_timeout
        self._clients: set[_Client] = set()

    @property
    def clients(self) -> int:
        """How many clients get broadcasts here now: for a health check or a metric."""
        return len(self._clients)

    async def relay(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        """Put every message the broker delivers in every local client's queue."""
        async with self.broker.subscribe() as messages:
            task_status.started()
            async for message in messages:
                for client in list(self._clients):
                    try:
                        client.queue.send_nowait(message)
                    except trio.WouldBlock:  # this client is too far behind: drop it
                        self._drop(client)
                    except trio.BrokenResourceError:
                        # Its connection has closed: its sender has ended,
                        # closing the queue, and its handler has yet to take
                        # it out. There is nothing to close; forget it now.
                        self._clients.discard(client)

    def _drop(self, client: _Client) -> None:
        self._clients.discard(client)
        client.queue.close()
        # Its sender may be waiting for room that a peer which stopped reading
        # never makes; cancelled, that send sends nothing, and the sender goes
        # on to close the connection.
        client.sender.cancel()

    async def handler(self, request: WebSocketRequest) -> None:
        """Publish what the client sends; send it what anyone publishes."""
        ws = await request.accept()
        send, receive = trio.open_memory_channel[str](self.queue_size)
        client = _Client(send)
        self._clients.add(client)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_queued, ws, receive, client.sender)
                await self._publish_received(ws)
                # The connection is closing. If the hub dropped this client,
                # its sender is the one closing it: cancelling now would abort
                # that closing handshake. Otherwise the sender waits for
                # messages that no longer matter.
                if client in self._clients:
                    nursery.cancel_scope.cancel()
        finally:
            self._clients.discard(client)
            send.close()

    async def _publish_received(self, ws: WebSocketConnection) -> None:
        try:
            while True:
                await self.broker.publish(str(await ws.get_message()))
        except ConnectionClosed:
            pass

    async def _send_queued(self, ws: WebSocketConnection, queue: trio.MemoryReceiveChannel[str],
                           scope: trio.CancelScope) -> None:
        # One task per client does the sending, so a slow client holds up only itself.
        try:
            with scope, queue:
                async for message in queue:
                    await ws.send_message(message)
            # The hub dropped this client (or its queue ended). The close frame
            # waits behind what the peer has not read; if it cannot get through
            # in time, the cancelled aclose() aborts the connection, and the
            # handler's get_message() ends with ConnectionClosed.
            with trio.move_on_after(self.close_timeout):
                await ws.aclose(1013, "too far behind")
        except ConnectionClosed:
            pass


async def main() -> int:
    broker = MemoryBroker()
    async with trio.open_nursery() as nursery:
        urls = []
        for _ in range(2):  # two servers, as if in two processes
            hub = Hub(broker)
            await nursery.start(hub.relay)
            server = await nursery.start(serve_websocket, hub.handler, "127.0.0.1", 0, None)
            urls.append(f"ws://127.0.0.1:{server.port}/")
        with trio.fail_after(10):
            async with open_websocket_url(urls[0]) as alice, \
                    open_websocket_url(urls[1]) as bob:
                await alice.send_message("hello from the first server")
                for name, ws in (("alice", alice), ("bob", bob)):
                    print(f"{name} got {await ws.get_message()!r}")
        nursery.cancel_scope.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
