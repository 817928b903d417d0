"""An echo server in its own process, so an attack's cost shows in its memory alone.

    python attack_server.py MAX_MESSAGE_SIZE   ("inf" lifts the limit)

Prints ``PORT n`` once listening, then serves until killed. The path ``/memory``
answers with the process's memory as JSON: ``rss`` (now) and ``peak`` (the
most it held since the last visit to ``/memory/reset``), both in KiB.
Compression is the library's default.
"""

from __future__ import annotations

import json
import math
import resource
import sys
from functools import partial

import trio

from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket


def memory_kib(reset: bool) -> dict[str, int]:
    """Resident memory now and at its peak, in KiB; ``reset`` starts a new peak.

    On Linux the peak is VmHWM, which writing 5 to /proc/self/clear_refs
    resets, so a reading covers only what came after the reset (the start-up
    peak is far above a quiet server's size). Elsewhere the peak is the
    process's lifetime peak, which only overstates an attack's cost.
    """
    try:
        if reset:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status)
        return {"rss": int(fields["VmRSS"].split()[0]), "peak": int(fields["VmHWM"].split()[0])}
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            peak //= 1024  # bytes there, KiB on Linux
        return {"rss": peak, "peak": peak}


async def handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        if request.path in ("/memory", "/memory/reset"):
            await ws.send_message(json.dumps(memory_kib(request.path == "/memory/reset")))
            return
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def main(max_message_size: float) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(
            serve_websocket, handler, "127.0.0.1", 0, None, max_message_size=max_message_size))
        print(f"PORT {server.port}", flush=True)


if __name__ == "__main__":
    limit = sys.argv[1] if len(sys.argv) > 1 else str(2**20)
    trio.run(main, math.inf if limit == "inf" else int(limit))
