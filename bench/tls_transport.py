"""TLS transports alone, no WebSocket: trio's SSLStream against asyncio's SSL transport.

    hatch run python bench/tls_transport.py

Separates what is trio's from what is ours on wss://. Each library runs an
echo server in a child process and a client here, over TLS on 127.0.0.1
(trustme certificates), and is measured on:

- ``writes``: 100,000 writes of 32 bytes, one ``send_all`` (or
  ``transport.write``) each, while the server echoes what it gets; the rate
  of writes.
- ``batched``: the same bytes in writes of 100 x 32 bytes (3.2 KB each).
- ``rtt``: 20,000 round trips of 32 bytes.

Prints rates and trio / asyncio.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import tls  # the benchmark peers' TLS settings

WRITES = 100_000
RTTS = 20_000
SMALL = b"x" * 32


async def trio_server() -> None:
    import trio

    async def echo(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            while data := await stream.receive_some():
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    context = tls.server_context()
    assert context is not None
    listeners = await trio.open_ssl_over_tcp_listeners(0, context, host="127.0.0.1")
    print(f"PORT {listeners[0].transport_listener.socket.getsockname()[1]}", flush=True)
    await trio.serve_listeners(echo, listeners)


async def trio_client(port: int) -> dict[str, float]:
    import trio

    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port,
                                                 ssl_context=tls.client_context())
    await stream.do_handshake()
    rates = {}
    for name, count, chunk in (("writes", WRITES, SMALL), ("batched", WRITES // 100, SMALL * 100)):
        expected = count * len(chunk)
        async with trio.open_nursery() as nursery:
            async def drain(expected: int = expected) -> None:
                got = 0
                while got < expected:
                    got += len(await stream.receive_some())
            nursery.start_soon(drain)
            start = time.perf_counter()
            for _ in range(count):
                await stream.send_all(chunk)
        rates[name] = WRITES / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(RTTS):
        await stream.send_all(SMALL)
        got = 0
        while got < len(SMALL):
            got += len(await stream.receive_some())
    rates["rtt"] = RTTS / (time.perf_counter() - start)
    await stream.aclose()
    return rates


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def asyncio_server() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=tls.server_context())
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Future()


async def asyncio_client(port: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client_context())
    rates = {}
    for name, count, chunk in (("writes", WRITES, SMALL), ("batched", WRITES // 100, SMALL * 100)):
        expected = count * len(chunk)
        async def drain(expected: int = expected) -> None:
            got = 0
            while got < expected:
                got += len(await reader.read(65536))
        task = asyncio.create_task(drain())
        start = time.perf_counter()
        for _ in range(count):
            writer.write(chunk)
            await writer.drain()
        await task
        rates[name] = WRITES / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(RTTS):
        writer.write(SMALL)
        await writer.drain()
        got = 0
        while got < len(SMALL):
            got += len(await reader.read(65536))
    rates["rtt"] = RTTS / (time.perf_counter() - start)
    writer.close()
    return rates


def measure(library: str) -> dict[str, float]:
    server = subprocess.Popen([sys.executable, __file__, "server", library], text=True,
                              stdout=subprocess.PIPE, cwd=tempfile.gettempdir())
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        if library == "trio":
            import trio
            return trio.run(trio_client, port)
        return asyncio.run(asyncio_client(port))
    finally:
        server.kill()
        server.wait()


def main() -> None:
    if sys.argv[1:2] == ["server"]:
        if sys.argv[2] == "trio":
            import trio
            trio.run(trio_server)
        else:
            asyncio.run(asyncio_server())
        return
    import os
    directory = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    tls.write_certificates(directory)
    os.environ["BENCH_TLS"] = str(directory)
    results = {library: measure(library) for library in ("trio", "asyncio")}
    print("| measure | trio SSLStream | asyncio SSL transport | trio / asyncio |")
    print("| --- | --- | --- | --- |")
    for name in results["trio"]:
        a, b = results["trio"][name], results["asyncio"][name]
        unit = "round trips/s" if name == "rtt" else "32-byte writes/s"
        print(f"| {name} ({unit}) | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
