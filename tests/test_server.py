"""The server: ports, nurseries, and connections that cannot harm each other."""

from __future__ import annotations

import logging
import os

import pytest
import trio
import trio.testing

from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketRequest,
    WebSocketServer,
    open_websocket,
    serve_websocket,
)

from .conftest import HOST, echo_handler


async def test_port_zero_reports_the_bound_port(nursery: trio.Nursery) -> None:
    server = await nursery.start(serve_websocket, echo_handler, HOST, 0, None)
    assert isinstance(server, WebSocketServer)
    assert server.port > 0
    [endpoint] = server.listeners
    assert isinstance(endpoint, Endpoint)
    assert (str(endpoint.address), endpoint.port, endpoint.is_ssl) == (HOST, server.port, False)


async def test_port_is_ambiguous_with_several_ports() -> None:
    a = trio.socket.socket()
    b = trio.socket.socket()
    await a.bind((HOST, 0))
    await b.bind((HOST, 0))
    a.listen()
    b.listen()
    server = WebSocketServer(echo_handler, [trio.SocketListener(a), trio.SocketListener(b)])
    assert len(server.listeners) == 2
    with pytest.raises(RuntimeError):
        server.port  # noqa: B018
    a.close()
    b.close()


async def test_handlers_run_in_the_given_nursery(nursery: trio.Nursery) -> None:
    parents: list[trio.Nursery | None] = []

    async def handler(request: WebSocketRequest) -> None:
        parents.append(trio.lowlevel.current_task().parent_nursery)
        await request.accept()

    async with trio.open_nursery() as handlers:
        server = await nursery.start(
            lambda task_status: serve_websocket(handler, HOST, 0, None, handler_nursery=handlers,
                                                task_status=task_status))
        async with open_websocket(HOST, server.port, "/", use_ssl=False):
            pass
    assert parents == [handlers]


async def test_misbehaving_peers_leave_others_unharmed(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = await nursery.start(serve_websocket, echo_handler, HOST, 0, None)
    async with open_websocket(HOST, server.port, "/", use_ssl=False) as good:
        await good.send_message("before")
        assert await good.get_message() == "before"

        # An unmasked frame from a client is a protocol error: 1002 for that one only.
        bad = await trio.open_tcp_stream(HOST, server.port)
        await bad.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                           b"\x81\x02hi")
        reply = b""
        while chunk := await bad.receive_some():
            reply += chunk
        assert b"\x88" in reply and b"\x03\xea" in reply  # a close frame with code 1002
        await bad.aclose()

        # A client that vanishes mid-message.
        gone = await trio.open_tcp_stream(HOST, server.port)
        await gone.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                            b"\x82\xfe\x10\x00abcd" + b"x" * 100)
        await trio.aclose_forcefully(gone)

        await good.send_message("after")
        assert await good.get_message() == "after"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_many_connections_at_once(nursery: trio.Nursery) -> None:
    server = await nursery.start(serve_websocket, echo_handler, HOST, 0, None)

    async def client(n: int) -> None:
        async with open_websocket(HOST, server.port, f"/{n}", use_ssl=False) as ws:
            for i in range(5):
                await ws.send_message(f"{n}-{i}")
                assert await ws.get_message() == f"{n}-{i}"

    with trio.fail_after(20):
        async with trio.open_nursery() as clients:
            for n in range(50):
                clients.start_soon(client, n)


async def test_handler_seeing_closed_connection_is_not_an_error(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    finished = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        finally:
            finished.set()

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    async with open_websocket(HOST, server.port, "/", use_ssl=False):
        pass
    await finished.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_closing_cleanly_from_the_server(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose(4000, "go away")

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    async with open_websocket(HOST, server.port, "/", use_ssl=False) as ws:
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
    assert caught.value.reason.code == 4000 and caught.value.reason.reason == "go away"


async def test_handler_that_does_not_read_holds_the_sender_back(nursery: trio.Nursery) -> None:
    go = trio.Event()
    progressed = trio.Event()

    async def slow_reader(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await go.wait()
        while True:
            await ws.get_message()

    server = await nursery.start(serve_websocket, slow_reader, HOST, 0, None)
    sent = 0
    held_at: int | None = None
    async with open_websocket(HOST, server.port, "/", use_ssl=False) as ws:
        incompressible = os.urandom(2**20)

        async def flood() -> None:
            nonlocal sent
            for _ in range(200):  # 200 MiB if nothing held it back
                await ws.send_message(incompressible)
                sent += 1
                if held_at is not None and sent > held_at:
                    progressed.set()

        async with trio.open_nursery() as senders:
            senders.start_soon(flood)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            # Kernel buffers, one message in the reader and one in the queue: a few MiB.
            held_at = sent
            assert held_at < 32
            go.set()
            with trio.fail_after(10):
                await progressed.wait()  # reading let the sender go on
            senders.cancel_scope.cancel()
