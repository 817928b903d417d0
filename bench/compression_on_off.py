"""Throughput and wire bytes over loopback: compression off, "auto" (the default), "always".

Run: hatch run python bench/compression_on_off.py
One trio process, our server and our client: 20,000 JSON messages (290 bytes
on average) echoed one after another, then 500 random (incompressible) binary
messages of 64 KiB, then the two interleaved with 32-byte-or-shorter texts.
Prints messages per second, the IP bytes on the wire both ways (Linux:
OutOctets in /proc/net/netstat, so run it on a quiet machine), and the traced
memory each connection holds. Then, for the line under which "auto" leaves
messages alone (MIN_SIZE), what compressing one message of each size saves
and costs.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
import zlib
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
sys.path.insert(0, str(Path(__file__).parent / "peers"))
from deflate_settings import json_messages
from payloads import wire_bytes


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def run(messages: list[bytes | str], compression: PerMessageDeflate | None
              ) -> tuple[float, int]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve_websocket(
            echo, "127.0.0.1", 0, None, compression=compression, task_status=task_status))
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False,
                                  compression=compression) as ws:
            wire = wire_bytes()
            start = time.perf_counter()
            for message in messages:
                await ws.send_message(message)
                await ws.get_message()
            elapsed = time.perf_counter() - start
            wire = wire_bytes() - wire
        nursery.cancel_scope.cancel()
    return len(messages) / elapsed, wire


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


def sizes() -> None:
    """Bytes saved and CPU spent compressing one message, by size, with context takeover."""
    texts = [m.decode() for m in json_messages(4000)]
    print(f"\n{'message size':>12} {'JSON saves':>11} {'random saves':>13} {'us a message':>13}")
    for size in (8, 16, 24, 32, 48, 64, 128, 256):
        saved: dict[str, float] = {}
        for kind in ("json", "random"):
            compressor = zlib.compressobj(3, zlib.DEFLATED, -12, 5)
            messages = ([text[-size:].encode() for text in texts] if kind == "json"
                        else [os.urandom(size) for _ in texts])
            start = time.perf_counter()
            out = sum(len(compressor.compress(m) + compressor.flush(zlib.Z_SYNC_FLUSH)) - 4
                      for m in messages)
            if kind == "json":
                micros = (time.perf_counter() - start) / len(messages) * 1e6
            saved[kind] = size - out / len(messages)
        print(f"{size:>12} {saved['json']:>11.1f} {saved['random']:>13.1f} {micros:>13.1f}")


async def main() -> None:
    texts = [m.decode() for m in json_messages(20000)]
    blobs = [os.urandom(65536) for _ in range(500)]
    mixed: list[bytes | str] = [m for i, blob in enumerate(blobs)
                                for m in (*texts[i * 8:i * 8 + 8], blob, "ok")]
    modes = (("off", None), ("auto (default)", PerMessageDeflate()),
             ("always", PerMessageDeflate(compress="always")))
    print(f"{'workload':<34} {'compression':<15} {'msg/s':>8} {'bytes on the wire':>18}")
    for name, messages in (("20,000 JSON texts", list(texts)), ("500 x 64 KiB random", list(blobs)),
                           ("mixed: 8 JSON, 64 KiB random, 'ok'", mixed)):
        for label, compression in modes:
            rate, wire = await run(messages, compression)
            print(f"{name:<34} {label:<15} {rate:>8.0f} {wire:>18,}")
    for label, compression in modes[:2]:
        print(f"memory per connection pair, compression {label}: "
              f"{await memory(compression):.1f} KiB")
    sizes()


if __name__ == "__main__":
    trio.run(main)
