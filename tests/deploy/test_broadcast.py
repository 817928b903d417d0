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
