"""The library logs through per-package loggers and never prints."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import trio
from trio_websocket import (ConnectionClosed, ConnectionRejected, open_websocket,
                            serve_websocket)

async def handler(request):
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    ws = await request.accept()
    await ws.get_message()
    raise RuntimeError("bug after accept")

async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        try:
            async with open_websocket("127.0.0.1", server.port, "/boom", use_ssl=False):
                pass
        except ConnectionRejected:
            pass
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as ws:
            await ws.send_message("x")
            try:
                await ws.get_message()
            except ConnectionClosed:
                pass
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"not http at all\\r\\n\\r\\n")
        while await stream.receive_some():
            pass
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def test_errors_are_logged_not_printed() -> None:
    # No logging configuration at all: the library must stay silent.
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


def test_errors_reach_a_configured_logger() -> None:
    configured = "import logging; logging.basicConfig(level=logging.DEBUG)\n" + SCRIPT
    result = subprocess.run([sys.executable, "-c", configured], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ERROR:trio_websocket_server:handler for" in result.stderr
    assert "RuntimeError: handler bug" in result.stderr
    assert "DEBUG:trio_websocket_server:refusing a handshake with HTTP 400" in result.stderr
