"""Benchmark peer for websockets (asyncio, with its C speedups), compression off.

    python websockets_peer.py server [MAX_MESSAGE_SIZE]
    python websockets_peer.py client WORKLOAD URL
"""

import asyncio
import json
import os
import resource
import sys
import time

from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

SMALL = "x" * 32


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def echo(ws):
    if ws.request.path == "/rss":
        await ws.send(str(rss_kib()))
        return
    async for message in ws:
        await ws.send(message)


async def serve(max_size: int) -> None:
    async with ws_serve(echo, "127.0.0.1", 0, compression=None, max_size=max_size) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


def connect(url):
    return ws_connect(url, compression=None)


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


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 10000)), hard))
    if sys.argv[1] == "server":
        asyncio.run(serve(int(sys.argv[2]) if len(sys.argv) > 2 else 2**20))
    else:
        workload, url = sys.argv[2], sys.argv[3]
        print(json.dumps({"value": asyncio.run(globals()[workload](url))}), flush=True)


if __name__ == "__main__":
    main()
