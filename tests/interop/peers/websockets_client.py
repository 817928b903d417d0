"""A websockets (asyncio) client that runs the interop exchange and prints a JSON summary.

argv: URL, "deflate" or "plain".
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect


async def main():
    url, mode = sys.argv[1], sys.argv[2]
    summary = {}
    async with connect(url, subprotocols=["chat.v1", "chat.v2"], max_size=2**24,
                       compression="deflate" if mode == "deflate" else None) as ws:
        summary["subprotocol"] = ws.subprotocol
        summary["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
        large = os.urandom(4 * 2**20 + 1)
        checks = {"text": "héllo", "binary": bytes(range(256)), "large": large}
        for name, message in checks.items():
            await ws.send(message)
            summary[name] = await ws.recv() == message
        await ws.send(["frag", "men", "ted"])
        summary["fragmented"] = await ws.recv() == "fragmented"
        pong = await ws.ping(b"interop")
        await asyncio.wait_for(pong, 10)
        summary["ping"] = True
        await ws.close(4001, "done here")
    print(json.dumps(summary), flush=True)


asyncio.run(main())
