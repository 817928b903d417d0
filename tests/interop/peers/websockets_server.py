"""A websockets (asyncio) server for interop tests.

Prints "PORT n" once listening. Echoes messages; "fragment-me" gets a
fragmented reply, "close-me" a close with 4003. Prints "CLOSED code reason"
when a client closes. argv[1]: "deflate" or "plain".
"""

import asyncio
import sys

from websockets.asyncio.server import serve


async def handler(ws):
    try:
        async for message in ws:
            if message == "fragment-me":
                await ws.send(["frag", "men", "ted"])
            elif message == "close-me":
                await ws.close(4003, "peer closing")
            else:
                await ws.send(message)
    finally:
        print(f"CLOSED {ws.close_code} {ws.close_reason}", flush=True)


async def main():
    compression = "deflate" if sys.argv[1] == "deflate" else None
    async with serve(handler, "127.0.0.1", 0, subprotocols=["chat.v2"], compression=compression,
                     max_size=2**24) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.sleep(120)  # the test ends us long before this


asyncio.run(main())
