"""The client that runs every Autobahn case against the fuzzing server: trio_websocket_client only.

Usage: python autobahn/client.py ws://127.0.0.1:PORT
"""

from __future__ import annotations

import logging
import sys

import trio

from trio_websocket_client import ConnectionClosed, HandshakeError, open_websocket_url

AGENT = "trio-websocket"
# Section 9 sends messages of up to 16 MiB.
MAX_MESSAGE_SIZE = 32 * 2**20

logger = logging.getLogger("autobahn.client")


async def run_case(url: str, case: int) -> None:
    try:
        async with open_websocket_url(f"{url}/runCase?case={case}&agent={AGENT}",
                                      max_message_size=MAX_MESSAGE_SIZE,
                                      disconnect_timeout=10) as ws:
            while True:
                await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass
    except (HandshakeError, OSError) as exc:
        logger.warning("case %d: %r", case, exc)


async def main(url: str) -> None:
    async with open_websocket_url(f"{url}/getCaseCount") as ws:
        count = int(await ws.get_message())
    for case in range(1, count + 1):
        await run_case(url, case)
    async with open_websocket_url(f"{url}/updateReports?agent={AGENT}"):
        pass


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    trio.run(main, sys.argv[1].rstrip("/"))
