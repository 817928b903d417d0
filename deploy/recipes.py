"""Small pieces of deployment code that docs/deploy.md shows, kept here so that they run.

The page includes each function from this file rather than a copy, and
tests/deploy/ imports this file and runs every function in it, so what the
page shows is what the tests check. Copy what you need into your own code:
this is not a module of the library.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import trio

from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
)


def client_address(request: WebSocketRequest,
                   proxies: Collection[str] = ("127.0.0.1", "::1")) -> str:
    """The client's IP address: nginx's X-Real-IP when nginx made the connection.

    A client that reaches the server directly could send any X-Real-IP it
    likes, so the header counts only on connections from one of ``proxies``.
    """
    remote = request.remote
    if not isinstance(remote, Endpoint):
        return str(remote)
    if str(remote.address) in proxies:
        for name, value in request.headers:
            if name == b"x-real-ip":
                return value.decode("ascii")
    return str(remote.address)


async def keepalive(ws: WebSocketConnection, interval: float, pong_timeout: float) -> None:
    """Ping every ``interval`` seconds, so that a proxy's idle timeout never expires.

    A pong that is not back within ``pong_timeout`` seconds raises
    ``trio.TooSlowError``: the peer is gone. The two are separate because a
    pong crosses the network and every proxy twice, and may take far longer
    than the time between pings on a busy machine.
    """
    while True:
        await trio.sleep(interval)
        with trio.fail_after(pong_timeout):
            await ws.ping()


async def serve_on_shared_port(
    handler: Callable[[WebSocketRequest], Awaitable[None]], host: str, port: int, *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED, **options: Any,
) -> None:
    """Serve on ``host:port`` alongside every other process that does the same (Linux).

    The listening socket has SO_REUSEPORT, so the kernel spreads new
    connections over all such sockets; ``options`` go to ``WebSocketServer``.
    With ``nursery.start``, reports the port (the one chosen, for port 0).
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        server = WebSocketServer(handler, [trio.SocketListener(sock)], **options)
        task_status.started(sock.getsockname()[1])  # listening: connections wait in its queue
        await server.run()


async def stay_connected(url: str, on_message: Callable[[str | bytes], Awaitable[None]], *,
                         first_delay: float = 1.0, longest_delay: float = 60.0) -> None:
    """Stay connected to ``url``, calling ``on_message`` for each message, until cancelled.

    After a close (1001 from a server that drains, 1006 from one that
    vanished) or a failed attempt, waits a random time up to a delay that
    doubles each time, so that thousands of clients do not all come back
    at once; a connection that opens starts the delay again from the first.
    """
    delay = first_delay
    while True:
        try:
            async with open_websocket_url(url) as ws:
                delay = first_delay
                while True:
                    await on_message(await ws.get_message())
        except (ConnectionClosed, HandshakeError):
            pass  # ConnectionFailed (TCP, DNS, TLS) is a HandshakeError too
        await trio.sleep(random.uniform(0, delay))
        delay = min(delay * 2, longest_delay)
