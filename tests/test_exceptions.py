"""What comes out of `async with open_websocket(...)`: the user's own exceptions, unwrapped."""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing

from trio_websocket import ConnectionRejected, WebSocketRequest, open_websocket, serve_websocket

from .conftest import HOST

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup


async def test_user_exception_comes_out_as_itself(echo_server: object) -> None:
    port = echo_server.port  # type: ignore[attr-defined]
    error = KeyError("mine")
    with pytest.raises(KeyError) as caught:
        async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
            await ws.send_message("x")
            raise error
    assert caught.value is error
    assert ws.closed is not None and ws.closed.code == 1000


async def test_user_exception_group_is_not_unwrapped(echo_server: object) -> None:
    port = echo_server.port  # type: ignore[attr-defined]
    group = ExceptionGroup("several", [ValueError(1), ValueError(2)])
    with pytest.raises(ExceptionGroup) as caught:
        async with open_websocket(HOST, port, "/", use_ssl=False):
            raise group
    assert caught.value is group


async def test_rejection_comes_out_as_itself(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.reject(503)

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    with pytest.raises(ConnectionRejected):
        async with open_websocket(HOST, server.port, "/", use_ssl=False):
            pass


async def test_cancellation_from_outside_closes_and_returns(echo_server: object) -> None:
    port = echo_server.port  # type: ignore[attr-defined]
    with trio.move_on_after(0.2) as scope:
        async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
            await ws.get_message()  # the echo server never speaks first
    assert scope.cancelled_caught
    assert ws.closed is not None


async def test_cancel_scope_inside_block_is_respected(echo_server: object) -> None:
    port = echo_server.port  # type: ignore[attr-defined]
    async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
        with trio.CancelScope() as scope:
            scope.cancel()
            await ws.get_message()
        assert scope.cancelled_caught
        await ws.send_message("still open")
        assert await ws.get_message() == "still open"


async def test_no_task_is_left_behind(echo_server: object) -> None:
    port = echo_server.port  # type: ignore[attr-defined]
    before = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    for _ in range(3):
        async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
            await ws.send_message("x")
            await ws.get_message()
    await trio.testing.wait_all_tasks_blocked()
    assert len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks) == before
