"""Benchmark peer for websockets (asyncio, with its C speedups).

    python websockets_peer.py server [MAX_MESSAGE_SIZE [default]]
    python websockets_peer.py client WORKLOAD URL

Compression is off except in the ``text`` and ``binary`` workloads, which
run websockets' default, ``compression="deflate"``, on both ends.

The server also answers /burst (see stall_get) and /burst-queued, as trio_peer.py does.
"""

import asyncio
import json
import os
import resource
import sys
import time

import tls
from payloads import measured_echo
from stall import COUNT, LIMIT, Sibling, result
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

SMALL = "x" * 32
BURST_QUEUED: asyncio.Event  # set by the server once a /burst client has queued all of it


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def echo(ws):
    if ws.request.path == "/rss":
        await ws.send(str(rss_kib()))
        return
    if ws.request.path == "/burst":
        for _ in range(COUNT):
            await ws.send(SMALL)
        # The client answers the ping only after the messages before it: once
        # the pong is back, all of them are queued in the client.
        await (await ws.ping(b"burst"))
        BURST_QUEUED.set()
        await ws.wait_closed()
        return
    if ws.request.path == "/burst-queued":
        await BURST_QUEUED.wait()
        await ws.send("queued")
        await ws.wait_closed()
        return
    async for message in ws:
        await ws.send(message)


async def serve(max_size: int, defaults: bool) -> None:
    global BURST_QUEUED
    BURST_QUEUED = asyncio.Event()
    compression = "deflate" if defaults else None
    async with ws_serve(echo, "127.0.0.1", 0, compression=compression,
                        max_size=max_size, ssl=tls.server_context()) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


def connect(url):
    return ws_connect(url, compression=None, ssl=tls.client_context())


async def rtt(url):
    async with connect(url) as ws:
        start = time.perf_counter()
        for _ in range(20000):
            await ws.send(SMALL)
            await ws.recv()
        return 20000 / (time.perf_counter() - start)


async def pipe(url):
    async with connect(url) as ws:
        start = time.perf_counter()
        async def reader():
            for _ in range(100000):
                await ws.recv()
        task = asyncio.create_task(reader())
        for _ in range(100000):
            await ws.send(SMALL)
        await task
        return 100000 / (time.perf_counter() - start)


async def large(url):
    blob = os.urandom(2**20)
    async with connect(url) as ws:
        start = time.perf_counter()
        for _ in range(64):
            await ws.send(blob)
            await ws.recv()
        return 64 * 2**20 / 1e6 / (time.perf_counter() - start)


async def text(url):
    async with ws_connect(url, compression="deflate", ssl=tls.client_context()) as ws:
        return await measured_echo(ws.send, ws.recv, "text")


async def binary(url):
    async with ws_connect(url, compression="deflate", ssl=tls.client_context()) as ws:
        return await measured_echo(ws.send, ws.recv, "binary")


async def conns(url):
    start = time.perf_counter()
    for _ in range(1000):
        async with connect(url) as ws:
            await ws.send(SMALL)
            await ws.recv()
    return 1000 / (time.perf_counter() - start)


async def fanin(url):
    async def client():
        async with connect(url) as ws:
            for _ in range(100):
                await ws.send(SMALL)
                await ws.recv()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(200)))
    return 20000 / (time.perf_counter() - start)


async def memory(url):
    async def server_rss():
        async with connect(url.rstrip("/") + "/rss") as ws:
            return int(await ws.recv())
    before = await server_rss()
    done = asyncio.Event()
    ready = asyncio.Semaphore(0)
    async def idle():
        async with connect(url):
            ready.release()
            await done.wait()
    tasks = [asyncio.create_task(idle()) for _ in range(2000)]
    for _ in range(2000):
        await ready.acquire()
    after = await server_rss()
    done.set()
    await asyncio.gather(*tasks)
    return (after - before) / 2000


async def stall_send(url):
    """Longest wait of a sibling task while we send COUNT messages back to back (ms)."""
    async def workload():
        async with connect(url) as ws:
            sibling = Sibling(asyncio.sleep)
            task = asyncio.create_task(sibling.run())
            idle = await sibling.idle()
            async def reader():
                for _ in range(COUNT):
                    await ws.recv()
            sibling.begin()
            echoes = asyncio.create_task(reader())
            for _ in range(COUNT):
                await ws.send(SMALL)
            await echoes
            loop = sibling.end()
            sibling.stop()
            await task
        return result(loop, idle)
    return await asyncio.wait_for(workload(), LIMIT)


async def stall_get(url):
    """Longest wait of a sibling task while we get COUNT queued messages (ms)."""
    base = url.rstrip("/")
    async def workload():
        # max_queue=None: no flow control, the client queues all it is sent.
        async with ws_connect(base + "/burst", compression=None, max_queue=None,
                              ssl=tls.client_context()) as ws:
            async with connect(base + "/burst-queued") as queued:
                await queued.recv()  # all COUNT are in ws's queue now
            sibling = Sibling(asyncio.sleep)
            task = asyncio.create_task(sibling.run())
            idle = await sibling.idle()
            sibling.begin()
            for _ in range(COUNT):
                message = await ws.recv()
            loop = sibling.end()
            sibling.stop()
            await task
            assert message == SMALL
        return result(loop, idle)
    return await asyncio.wait_for(workload(), LIMIT)


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 10000)), hard))
    if sys.argv[1] == "server":
        asyncio.run(serve(int(sys.argv[2]) if len(sys.argv) > 2 else 2**20,
                          sys.argv[3:] == ["default"]))
    else:
        workload, url = sys.argv[2], sys.argv[3]
        value = asyncio.run(globals()[workload](url))
        print(json.dumps(value if isinstance(value, dict) else {"value": value}), flush=True)


if __name__ == "__main__":
    main()
