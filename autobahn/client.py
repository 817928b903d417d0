"""The client that runs every Autobahn case against the fuzzing server: trio_websocket_client only.

Usage: python autobahn/client.py ws://127.0.0.1:PORT [--no-context-takeover BITS]

Cases 13.2, 13.5 and 13.6 each describe the offer the client should make:
no context takeover on both sides, and a server window of BITS (0 for no
request). --no-context-takeover makes that offer instead of the default one.
"""

from __future__ import annotations

import argparse
import logging

import trio

from trio_websocket_client import (
    ConnectionClosed,
    HandshakeError,
    PerMessageDeflate,
    open_websocket_url,
)

AGENT = "trio-websocket"
# Section 9 sends messages of up to 16 MiB.
MAX_MESSAGE_SIZE = 32 * 2**20

logger = logging.getLogger("autobahn.client")


async def run_case(url: str, case: int, compression: PerMessageDeflate) -> None:
    try:
        async with open_websocket_url(f"{url}/runCase?case={case}&agent={AGENT}",
                                      max_message_size=MAX_MESSAGE_SIZE,
                                      disconnect_timeout=10, compression=compression) as ws:
            while True:
                await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass
    except (HandshakeError, OSError) as exc:
        logger.warning("case %d: %r", case, exc)


async def main(url: str, compression: PerMessageDeflate) -> None:
    async with open_websocket_url(f"{url}/getCaseCount") as ws:
        count = int(await ws.get_message())
    for case in range(1, count + 1):
        await run_case(url, case, compression)
    async with open_websocket_url(f"{url}/updateReports?agent={AGENT}"):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--no-context-takeover", type=int, metavar="BITS", default=None)
    args = parser.parse_args()
    offer = PerMessageDeflate()
    if args.no_context_takeover is not None:
        offer = PerMessageDeflate(
            client_no_context_takeover=True, server_no_context_takeover=True,
            client_max_window_bits=15, server_max_window_bits=args.no_context_takeover or 15)
    logging.basicConfig(level=logging.WARNING)
    trio.run(main, args.url.rstrip("/"), offer)
