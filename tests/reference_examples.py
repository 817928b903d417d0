"""The examples of the reference docs, run against a loopback server.

Run by test_packaging.py inside a fresh virtual environment that has only
the `trio-websocket` meta-package installed. Changes from the docs: port 0
instead of 8000, 127.0.0.1 instead of remote hosts, short sleeps.
"""

import logging
import math

import trio
import trio.testing

from trio_websocket import (
    ConnectionClosed,
    connect_websocket_url,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)


# Server Example
async def echo_server(request):
    ws = await request.accept()
    while True:
        try:
            message = await ws.get_message()
            await ws.send_message(message)
        except ConnectionClosed:
            break


# Recipes: Heartbeat
async def heartbeat(ws, timeout, interval):  # noqa: ASYNC109 (as in the docs)
    while True:
        with trio.fail_after(timeout):
            await ws.ping()
        await trio.sleep(interval)


async def client_example(url):
    try:
        async with open_websocket_url(url + "/foo") as ws:
            await ws.send_message("hello world!")
            message = await ws.get_message()
            logging.info("Received message: %s", message)
            assert message == "hello world!"
    except OSError as ose:
        logging.error("Connection attempt failed: %s", ose)
        raise


async def timeout_examples(url):
    async with open_websocket_url(url) as ws:
        with trio.fail_after(15):
            await ws.send_message("test")
            assert await ws.get_message() == "test"

    with trio.fail_after(15):
        async with open_websocket_url(url) as ws:
            await ws.send_message("test")
            assert await ws.get_message() == "test"

    with trio.fail_after(10) as cancel_scope:
        async with open_websocket_url(url) as ws:
            cancel_scope.deadline = math.inf
            for _ in range(2):
                await trio.sleep(0.01)
                with trio.fail_after(15):
                    await ws.send_message("test")
                    assert await ws.get_message() == "test"
            cancel_scope.deadline = trio.current_time() + 5

    async with open_websocket_url(url, connect_timeout=10, disconnect_timeout=5) as ws:
        for _ in range(2):
            await trio.sleep(0.01)
            with trio.fail_after(15):
                await ws.send_message("test")
                assert await ws.get_message() == "test"

    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            connection = await connect_websocket_url(nursery, url)
        try:
            with trio.fail_after(15):
                await connection.send_message("test")
                assert await connection.get_message() == "test"
        finally:
            with trio.fail_after(5):
                await connection.aclose()


async def heartbeat_example(url):
    async with open_websocket_url(url) as ws:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat, ws, 5, 0.01)
            await trio.sleep(0.1)  # the application's work
            nursery.cancel_scope.cancel()


async def custom_stream_example():
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        async def serve():
            request = await wrap_server_stream(nursery, server_stream)
            await echo_server(request)

        nursery.start_soon(serve)
        ws = await wrap_client_stream(nursery, client_stream, "localhost", "/")
        await ws.send_message(b"over memory")
        assert await ws.get_message() == b"over memory"
        await ws.aclose()


async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo_server, "127.0.0.1", 0, None)
        timed = await nursery.start(lambda task_status: serve_websocket(
            echo_server, "127.0.0.1", 0, ssl_context=None, connect_timeout=10,
            disconnect_timeout=5, task_status=task_status))
        await client_example(f"ws://127.0.0.1:{server.port}")
        await timeout_examples(f"ws://127.0.0.1:{timed.port}/")
        await heartbeat_example(f"ws://127.0.0.1:{server.port}/")
        await custom_stream_example()
        nursery.cancel_scope.cancel()
    print("reference examples: ok")


if __name__ == "__main__":
    trio.run(main)
