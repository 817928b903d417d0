"""An echo server in a process of its own, for tests/hostile/test_load.py.

    python load_server.py NOFILE

Raises its soft RLIMIT_NOFILE to NOFILE (or exits with a message on stderr
if the hard limit is lower), serves on 127.0.0.1 port 0 and prints ``PORT n``.
Then it answers commands read from stdin, one per line, with one JSON line
on stdout, and ends when stdin closes (so it never outlives the test):

``stats``  its counters, and its own RSS (KiB) and open descriptors, for
           systems where the test cannot read them from /proc
``kick``   cancel every /slow handler's send, which then aborts its connection

Paths: any other path echoes every message back; ``/slow`` sends binary messages
of SLOW_SIZE bytes, up to SLOW_COUNT of them, to a client that does not
read, so that one of its sends waits for room (the count of finished sends
and whether a send is under way are in ``stats``). Cancelled, that send does
nothing and the connection stays open (``slow_open_after_kick``); the
handler then gives up on the client at once, with ``trio.aclose_forcefully``,
rather than wait for a closing handshake it would never read.
"""

from __future__ import annotations

import collections
import json
import os
import random
import resource
import sys
from typing import Any

import trio

from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

SLOW_SIZE = 256 * 1024
#: Far more than loopback buffers hold (32 MiB of receive buffer at most
#: here, plus the client's queue of one message, plus our write buffer):
#: a send must wait.
SLOW_COUNT = 1024
# Random, so that no compression could shrink it; seeded, so that the test
# knows what the slow client should get.
SLOW_PAYLOAD = random.Random(6455).randbytes(SLOW_SIZE)

FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


class Stats:
    def __init__(self) -> None:
        self.accepted = 0  # echo connections accepted, ever
        self.open = 0  # echo handlers running now
        self.echoed = 0  # messages sent back
        self.closes: collections.Counter[int] = collections.Counter()  # close codes seen
        self.slow_running = 0
        self.slow_sent = 0  # /slow sends that returned
        self.slow_in_send = False  # a /slow send is under way
        self.slow_kicked = 0
        self.slow_open_after_kick = 0  # kicked connections still open after the cancelled send
        self.slow_scopes: set[trio.CancelScope] = set()

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted, "open": self.open, "echoed": self.echoed,
            "closes": {str(code): n for code, n in self.closes.items()},
            "slow_running": self.slow_running, "slow_sent": self.slow_sent,
            "slow_in_send": self.slow_in_send, "slow_kicked": self.slow_kicked,
            "slow_open_after_kick": self.slow_open_after_kick,
            "rss_kib": rss_kib(), "fds": len(os.listdir(FD_DIR)) - 1,  # less listdir's own
        }


STATS = Stats()


def rss_kib() -> int:
    """Resident memory now (Linux), or the peak elsewhere (all getrusage offers)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


async def handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    if request.path == "/slow":
        await slow(ws)
        return
    STATS.accepted += 1
    STATS.open += 1
    try:
        while True:
            await ws.send_message(await ws.get_message())
            STATS.echoed += 1
    except ConnectionClosed as exc:
        STATS.closes[exc.reason.code] += 1
    finally:
        STATS.open -= 1


async def slow(ws: WebSocketConnection) -> None:
    STATS.slow_running += 1
    scope = trio.CancelScope()
    STATS.slow_scopes.add(scope)
    try:
        with scope:
            for _ in range(SLOW_COUNT):
                STATS.slow_in_send = True
                await ws.send_message(SLOW_PAYLOAD)
                STATS.slow_in_send = False
                STATS.slow_sent += 1
        if scope.cancelled_caught:
            STATS.slow_kicked += 1
            if ws.closed is None:
                STATS.slow_open_after_kick += 1
            await trio.aclose_forcefully(ws)  # drop it now: it would never read our close
    finally:
        STATS.slow_in_send = False
        STATS.slow_scopes.discard(scope)
        STATS.slow_running -= 1


async def control(cancel_scope: trio.CancelScope) -> None:
    while True:
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        command = line.strip()
        if not line:
            cancel_scope.cancel()
            return
        if command == "kick":
            kicked = len(STATS.slow_scopes)
            for scope in STATS.slow_scopes:
                scope.cancel()
            answer: dict[str, Any] = {"kicked": kicked}
        elif command == "stats":
            answer = STATS.as_dict()
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(f"PORT {server.port}", flush=True)
        nursery.start_soon(control, nursery.cancel_scope)


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"load_server: needs {needed} open files, but the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


if __name__ == "__main__":
    raise_nofile(int(sys.argv[1]))
    trio.run(main)
