"""Throughput and wire bytes over loopback with and without permessage-deflate.

Run: hatch run python bench/compression_on_off.py
One trio process, our server and our client: 20,000 JSON messages (290 bytes
on average) echoed one after another, then the same with 64 KiB random
(incompressible) binary messages. Prints messages per second, bytes the
client sent, and the traced memory each compressing connection holds.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
from pathlib import Path

import trio

from trio_websocket import (
    ConnectionClosed,
    PerMessageDeflate,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)

sys.path.insert(0, str(Path(__file__).parent))
from deflate_settings import json_messages


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def run(messages: list[bytes] | list[str], compression: PerMessageDeflate | None
              ) -> tuple[float, int]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve_websocket(
            echo, "127.0.0.1", 0, None, compression=compression, task_status=task_status))
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False,
                                  compression=compression) as ws:
            stream = ws._stream
            sent = 0
            original = stream.send_all

            async def counting_send_all(data: bytes | bytearray | memoryview) -> None:
                nonlocal sent
                sent += len(data)
                await original(data)

            stream.send_all = counting_send_all  # type: ignore[method-assign]
            start = time.perf_counter()
            for message in messages:
                await ws.send_message(message)
                await ws.get_message()
            elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return len(messages) / elapsed, sent


async def memory(compression: PerMessageDeflate | None, connections: int = 200) -> float:
    """Traced KiB per connection pair (client + server side) after one message each."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve_websocket(
            echo, "127.0.0.1", 0, None, compression=compression, task_status=task_status))
        tracemalloc.start()
        open_ones = []
        base, _ = tracemalloc.get_traced_memory()
        async with trio.open_nursery() as clients:
            for _ in range(connections):
                done = trio.Event()
                ready = trio.Event()

                async def client(done: trio.Event = done, ready: trio.Event = ready) -> None:
                    async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False,
                                              compression=compression) as ws:
                        await ws.send_message("hello " * 20)
                        await ws.get_message()
                        ready.set()
                        await done.wait()

                clients.start_soon(client)
                await ready.wait()
                open_ones.append(done)
            held, _ = tracemalloc.get_traced_memory()
            for done in open_ones:
                done.set()
        tracemalloc.stop()
        nursery.cancel_scope.cancel()
    return (held - base) / connections / 1024


async def main() -> None:
    texts = [m.decode() for m in json_messages(20000)]
    blobs = [os.urandom(65536) for _ in range(500)]
    print(f"{'workload':<28} {'compression':<12} {'msg/s':>8} {'client bytes sent':>18}")
    for name, messages in (("20,000 JSON texts", texts), ("500 x 64 KiB random", blobs)):
        for label, compression in (("off", None), ("on (default)", PerMessageDeflate())):
            rate, sent = await run(messages, compression)
            print(f"{name:<28} {label:<12} {rate:>8.0f} {sent:>18,}")
    for label, compression in (("off", None), ("on (default)", PerMessageDeflate())):
        print(f"memory per connection pair, compression {label}: "
              f"{await memory(compression):.1f} KiB")


if __name__ == "__main__":
    trio.run(main)
