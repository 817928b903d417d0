"""examples/broadcast.py: clients of several servers reached through one broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing
from wsproto.events import AcceptConnection

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket_core._connection import WRITE_BUFFER_SIZE

from ..conftest import TCP_HOLDS_AT_MOST, RawPeer
from . import load

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "broadcast.py"


def example() -> ModuleType:
    return load(EXAMPLE)


def test_the_example_runs() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["alice got 'hello from the first server'",
                                          "bob got 'hello from the first server'"]


async def test_a_client_that_falls_behind_is_closed_and_holds_up_no_one(
        nursery: trio.Nursery) -> None:
    broadcast = example()
    broker = broadcast.MemoryBroker()
    hub = broadcast.Hub(broker, queue_size=2)
    await nursery.start(hub.relay)
    server = await nursery.start(lambda task_status: serve_websocket(
        hub.handler, "127.0.0.1", 0, None, compression=None, task_status=task_status))
    url = f"ws://127.0.0.1:{server.port}/"
    # Enough to fill the slow client's TCP buffers and its queue several times over.
    messages = [f"{n:04} " + os.urandom(32 * 2**10).hex() for n in range(300)]
    with trio.fail_after(20):
        async with open_websocket_url(url, compression=None) as fast, \
                open_websocket_url(url, compression=None) as slow:
            await trio.testing.wait_all_tasks_blocked()  # both handlers have joined the hub
            assert hub.clients == 2
            for message in messages:  # the fast client reads each as it comes
                await broker.publish(message)
                assert await fast.get_message() == message
            got = 0
            with pytest.raises(ConnectionClosed) as caught:
                for _ in messages:
                    assert await slow.get_message() == messages[got]
                    got += 1
            assert caught.value.reason == CloseReason(1013, "too far behind")
            assert got < len(messages)


async def test_a_client_that_never_reads_again_is_closed_and_its_handler_ends(
        nursery: trio.Nursery) -> None:
    broadcast = example()
    hub = broadcast.Hub(broadcast.MemoryBroker(), queue_size=2, close_timeout=0.5)
    slow_handler_done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        try:
            await hub.handler(request)
        finally:
            if request.path == "/slow":
                slow_handler_done.set()

    await nursery.start(hub.relay)
    server = await nursery.start(lambda task_status: serve_websocket(
        handler, "127.0.0.1", 0, None, compression=None, task_status=task_status))
    size = 64 * 2**10
    # What it takes, at most, to fill the slow peer's TCP window, the server's
    # send buffer, the connection's write buffer and the hub's queue.
    most = (TCP_HOLDS_AT_MOST + WRITE_BUFFER_SIZE) // size + hub.queue_size + 2
    with trio.fail_after(30):
        # The slow peer: a raw TCP socket with a small receive window that
        # completes the handshake and then never reads again.
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect(("127.0.0.1", server.port))
            slow = RawPeer(trio.SocketStream(sock))
            assert isinstance(await slow.open("/slow"), AcceptConnection)
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/fast",
                                          compression=None) as fast:
                # Each handler joins the hub just after its handshake: once
                # every task waits, both have.
                await trio.testing.wait_all_tasks_blocked()
                assert hub.clients == 2
                sent = 0
                while hub.clients == 2:  # until the hub gives up on the slow peer
                    assert sent < most, "the slow peer's sends never filled up"
                    message = f"{sent:05} " + "x" * size
                    await hub.broker.publish(message)
                    assert await fast.get_message() == message  # every one, in order
                    sent += 1
                await slow_handler_done.wait()
                # Whatever was in flight when the hub gave up, the fast client
                # carries on once the slow one is gone.
                for n in range(sent, sent + 5):
                    await hub.broker.publish(f"{n:05} after")
                    assert await fast.get_message() == f"{n:05} after"


async def test_clients_that_leave_while_broadcasts_flow_leave_the_hub_serving() -> None:
    broadcast = example()
    broker = broadcast.MemoryBroker()
    hub = broadcast.Hub(broker)
    published = 0

    async def publish_without_pause() -> None:
        nonlocal published
        while True:
            await broker.publish(f"{published:06}")
            published += 1
            # A publish with no subscriber left (the relay gone) awaits
            # nothing: this keeps the loop cancellable all the same.
            await trio.lowlevel.checkpoint()

    # The hub, its server and the publisher run in this nursery, not the
    # fixture's: whatever escapes any of them fails this test, as itself.
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.relay)
            server = await nursery.start(serve_websocket, hub.handler, "127.0.0.1", 0, None)
            url = f"ws://127.0.0.1:{server.port}/"
            async with trio.open_nursery() as publishing:
                publishing.start_soon(publish_without_pause)
                # Each client leaves while its sender is busy sending it more:
                # the connection closes under the sender, which then closes its
                # queue before the handler has taken the client out of the hub.
                for _ in range(100):
                    async with open_websocket_url(url) as leaving:
                        for _ in range(3):
                            try:
                                await leaving.get_message()
                            except ConnectionClosed as closed:  # fell behind the publisher
                                assert closed.reason.code == 1013
                                break
                publishing.cancel_scope.cancel()
            assert published > 0
            # The hub still delivers: a new client gets what is published next.
            async with open_websocket_url(url) as staying:
                await trio.testing.wait_all_tasks_blocked()  # it has joined the hub
                # Every client that left is out of the hub; only this one is in.
                assert hub.clients == 1
                for n in range(5):
                    await broker.publish(f"after {n}")
                    assert await staying.get_message() == f"after {n}"
            nursery.cancel_scope.cancel()


async def test_a_publish_skips_a_subscriber_that_leaves_while_it_waits() -> None:
    broadcast = example()
    broker = broadcast.MemoryBroker()
    received: list[str] = []
    count = 300  # more than a subscriber's channel holds
    published = 0

    async def stalled(*, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        # A subscriber that stops reading, as a relay that is shutting down.
        with trio.CancelScope() as scope:
            async with broker.subscribe():
                task_status.started(scope)
                await trio.sleep_forever()

    async def reading(*, task_status: trio.TaskStatus[None]) -> None:
        async with broker.subscribe() as messages:
            task_status.started()
            async for message in messages:
                received.append(message)

    async def publish_all() -> None:
        nonlocal published
        for n in range(count):
            await broker.publish(f"{n:03}")
            published += 1

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            leave = await nursery.start(stalled)
            await nursery.start(reading)
            async with trio.open_nursery() as publishing:
                publishing.start_soon(publish_all)
                await trio.testing.wait_all_tasks_blocked()
                assert published < count  # waiting for room the stalled subscriber never makes
                leave.cancel()  # it unsubscribes while the publish waits
            # The publish carried on without it: the other subscriber got every message.
            await trio.testing.wait_all_tasks_blocked()
            assert received == [f"{n:03}" for n in range(count)]
            nursery.cancel_scope.cancel()
