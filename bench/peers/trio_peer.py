"""Benchmark peer for trio_websocket: ours, or trio-websocket 0.12.2 (same API).

    python trio_peer.py server [MAX_MESSAGE_SIZE [default]]   prints "PORT n", serves until killed
    python trio_peer.py client WORKLOAD URL                    prints {"value": ...} as JSON

Compression is off wherever the library has it, as for the other peers,
except in the ``text`` and ``binary`` workloads (see payloads.py), which run
the library's defaults on both ends (the server started with ``default``).
The server also answers /burst (see stall_get) and /burst-queued.
"""

import inspect
import json
import math
import os
import resource
import sys
import time

import tls
import trio
from payloads import measured_echo
from stall import COUNT, LIMIT, Sibling, result

import trio_websocket as tw

HAS_COMPRESSION = "compression" in inspect.signature(tw.serve_websocket).parameters
OFF = {"compression": None} if HAS_COMPRESSION else {}
TLS = {"ssl_context": tls.client_context()} if tls.enabled() else {}
SMALL = "x" * 32
BURST_QUEUED: trio.Event  # set by the server once a /burst client has queued all of it


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def echo(request):
    if request.path == "/rss":
        ws = await request.accept()
        await ws.send_message(str(rss_kib()))
        return
    if request.path == "/burst":
        ws = await request.accept()
        for _ in range(COUNT):
            await ws.send_message(SMALL)
        # The client's reader answers the ping only after the messages before
        # it: once the pong is back, all of them are queued in the client.
        await ws.ping(b"burst")
        BURST_QUEUED.set()
        await until_closed(ws)
        return
    if request.path == "/burst-queued":
        ws = await request.accept()
        await BURST_QUEUED.wait()
        await ws.send_message("queued")
        await until_closed(ws)
        return
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except tw.ConnectionClosed:
        pass


async def until_closed(ws):
    try:
        while True:
            await ws.get_message()
    except tw.ConnectionClosed:
        pass


async def serve(max_size: int, defaults: bool) -> None:
    global BURST_QUEUED
    BURST_QUEUED = trio.Event()
    settings = {} if defaults else OFF
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: tw.serve_websocket(
            echo, "127.0.0.1", 0, tls.server_context(), max_message_size=max_size,
            task_status=task_status, **settings))
        print(f"PORT {server.port}", flush=True)


def connect(url):
    return tw.open_websocket_url(url, **OFF, **TLS)


async def rtt(url):
    async with connect(url) as ws:
        start = time.perf_counter()
        for _ in range(20000):
            await ws.send_message(SMALL)
            await ws.get_message()
        return 20000 / (time.perf_counter() - start)


async def pipe(url):
    async with connect(url) as ws:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            async def reader():
                for _ in range(100000):
                    await ws.get_message()
            nursery.start_soon(reader)
            for _ in range(100000):
                await ws.send_message(SMALL)
        return 100000 / (time.perf_counter() - start)


async def large(url):
    blob = os.urandom(2**20)
    async with connect(url) as ws:
        start = time.perf_counter()
        for _ in range(64):
            await ws.send_message(blob)
            await ws.get_message()
        return 64 * 2**20 / 1e6 / (time.perf_counter() - start)


async def text(url):
    async with tw.open_websocket_url(url, **TLS) as ws:
        return await measured_echo(ws.send_message, ws.get_message, "text")


async def binary(url):
    async with tw.open_websocket_url(url, **TLS) as ws:
        return await measured_echo(ws.send_message, ws.get_message, "binary")


async def conns(url):
    start = time.perf_counter()
    for _ in range(1000):
        async with connect(url) as ws:
            await ws.send_message(SMALL)
            await ws.get_message()
    return 1000 / (time.perf_counter() - start)


async def fanin(url):
    async def client():
        async with connect(url) as ws:
            for _ in range(100):
                await ws.send_message(SMALL)
                await ws.get_message()
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(client)
    return 20000 / (time.perf_counter() - start)


async def memory(url):
    async def server_rss():
        async with connect(url.rstrip("/") + "/rss") as ws:
            return int(await ws.get_message())
    before = await server_rss()
    async with trio.open_nursery() as nursery:
        ready = trio.Semaphore(0)
        done = trio.Event()
        async def idle():
            async with connect(url):
                ready.release()
                await done.wait()
        for _ in range(2000):
            nursery.start_soon(idle)
        for _ in range(2000):
            await ready.acquire()
        after = await server_rss()
        done.set()
    return (after - before) / 2000


async def stall_send(url):
    """Longest wait of a sibling task while we send COUNT messages back to back (ms)."""
    with trio.fail_after(LIMIT):
        async with connect(url) as ws, trio.open_nursery() as nursery:
            sibling = Sibling(trio.sleep)
            nursery.start_soon(sibling.run)
            idle = await sibling.idle()
            async def reader():
                for _ in range(COUNT):
                    await ws.get_message()
            sibling.begin()
            async with trio.open_nursery() as pipe:
                pipe.start_soon(reader)
                for _ in range(COUNT):
                    await ws.send_message(SMALL)
            loop = sibling.end()
            sibling.stop()
    return result(loop, idle)


async def stall_get(url):
    """Longest wait of a sibling task while we get COUNT queued messages (ms)."""
    base = url.rstrip("/")
    with trio.fail_after(LIMIT):
        async with tw.open_websocket_url(base + "/burst", message_queue_size=math.inf,
                                         **OFF, **TLS) as ws:
            async with connect(base + "/burst-queued") as queued:
                await queued.get_message()  # all COUNT are in ws's queue now
            async with trio.open_nursery() as nursery:
                sibling = Sibling(trio.sleep)
                nursery.start_soon(sibling.run)
                idle = await sibling.idle()
                sibling.begin()
                for _ in range(COUNT):
                    message = await ws.get_message()
                loop = sibling.end()
                sibling.stop()
            assert message == SMALL
    return result(loop, idle)


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 10000)), hard))
    if sys.argv[1] == "server":
        trio.run(serve, int(sys.argv[2]) if len(sys.argv) > 2 else 2**20,
                 sys.argv[3:] == ["default"])
    else:
        workload, url = sys.argv[2], sys.argv[3]
        value = trio.run(globals()[workload], url)
        print(json.dumps(value if isinstance(value, dict) else {"value": value}), flush=True)


if __name__ == "__main__":
    main()
