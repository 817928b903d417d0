"""The echo server that the Autobahn fuzzing client tests: trio_websocket_server only.

Usage: python autobahn/server.py [PORT]  (prints "listening on PORT" once ready)
"""

from __future__ import annotations

import sys

import trio

from trio_websocket_server import ConnectionClosed, WebSocketRequest, serve_websocket

# Section 9 sends messages of up to 16 MiB.
MAX_MESSAGE_SIZE = 32 * 2**20


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve_websocket(
            echo, "127.0.0.1", port, None, max_message_size=MAX_MESSAGE_SIZE,
            task_status=task_status))
        print(f"listening on {server.port}", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 9001)
