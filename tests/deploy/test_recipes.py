"""deploy/recipes.py, the code docs/deploy.md shows: each piece does what the page says."""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from trio_websocket import ConnectionRejected, WebSocketRequest, open_websocket_url, serve_websocket

from . import recipes

HOST = "127.0.0.1"
# The kernel picks a socket by a hash of each connection's addresses: 60
# connections all miss one of two sockets with a chance of about 1 in 10**18.
MAX_CONNECTIONS = 60


async def test_client_address_ignores_x_real_ip_from_anyone_but_the_proxy(
        nursery: trio.Nursery) -> None:
    seen: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        seen.append(recipes().client_address(request, proxies=("192.0.2.1",)))
        seen.append(recipes().client_address(request))  # 127.0.0.1 counts as the proxy
        await request.reject(403)

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    with trio.fail_after(10), pytest.raises(ConnectionRejected):
        async with open_websocket_url(f"ws://{HOST}:{server.port}/",
                                      extra_headers=[("X-Real-IP", "203.0.113.9")]):
            pass
    assert seen == ["127.0.0.1", "203.0.113.9"]


async def test_keepalive_waits_for_a_slow_pong_and_gives_up_on_a_missing_one(
        autojump_clock: trio.testing.MockClock) -> None:
    # Pongs that take five times the ping interval are fine; one that takes
    # longer than the timeout ends it. (The clock is trio's virtual one.)
    pong_delays = [5.0, 5.0, math.inf]
    pings: list[float] = []

    class Peer:
        async def ping(self) -> None:
            pings.append(trio.current_time())
            await trio.sleep(pong_delays[len(pings) - 1])

    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await recipes().keepalive(Peer(), interval=1.0, pong_timeout=10.0)
    assert [at - start for at in pings] == pytest.approx([1.0, 7.0, 13.0])
    assert trio.current_time() - start == pytest.approx(23.0)


async def test_stay_connected_comes_back_after_a_refusal_and_a_close(
        nursery: trio.Nursery) -> None:
    attempts = 0

    async def handler(request: WebSocketRequest) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await request.reject(503)
            return
        ws = await request.accept()
        await ws.send_message(f"connection {attempts}")
        await ws.aclose(1001, "going away")

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    got: list[str | bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as client:

            async def on_message(message: str | bytes) -> None:
                got.append(message)
                if len(got) == 3:
                    client.cancel_scope.cancel()

            client.start_soon(lambda: recipes().stay_connected(
                f"ws://{HOST}:{server.port}/", on_message, first_delay=0.01))
    assert got == ["connection 2", "connection 3", "connection 4"]


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason=f"SO_REUSEPORT spreads connections over sockets on Linux only, not on {sys.platform}")
async def test_serve_on_shared_port_spreads_connections(nursery: trio.Nursery) -> None:
    def tagged(tag: str) -> Callable[[WebSocketRequest], Awaitable[None]]:
        async def handler(request: WebSocketRequest) -> None:
            ws = await request.accept()
            await ws.send_message(tag)
        return handler

    serve = recipes().serve_on_shared_port
    port = await nursery.start(serve, tagged("first"), HOST, 0)
    assert await nursery.start(serve, tagged("second"), HOST, port) == port
    seen: set[str | bytes] = set()
    with trio.fail_after(10):
        for _ in range(MAX_CONNECTIONS):
            async with open_websocket_url(f"ws://{HOST}:{port}/") as ws:
                seen.add(await ws.get_message())
            if len(seen) == 2:
                break
    assert seen == {"first", "second"}
    # Anyone else can join the port only with SO_REUSEPORT too.
    with socket.socket() as other, pytest.raises(OSError):
        other.bind((HOST, port))
