"""Interop with a real browser: headless Chromium runs a page whose script talks to our server.

Browsers cannot send fragmented messages or pings from JavaScript, so those
are covered by the other peers; everything a page can do is checked here.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest
import trio

from trio_websocket import CloseReason

from .harness import OurServer, require

pytestmark = pytest.mark.peer("chromium")

PAGE = (Path(__file__).resolve().parent / "browser" / "page.html").read_bytes()
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic"]


async def serve_page(nursery: trio.Nursery) -> int:
    """A one-page HTTP server on loopback."""
    async def respond(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                request += chunk
            body = PAGE if request.startswith(b"GET / ") or request.startswith(b"GET /?") else b""
            status = b"200 OK" if body else b"404 Not Found"
            await stream.send_all(b"HTTP/1.1 " + status + b"\r\ncontent-type: text/html; "
                                  b"charset=utf-8\r\ncontent-length: " + str(len(body)).encode()
                                  + b"\r\nconnection: close\r\n\r\n" + body)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, respond, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


@pytest.fixture
def chromium() -> str:
    # A plain fixture: a skip raised inside a trio test loses its reason.
    return require("chromium", "Debian's chromium package is the browser peer")


@pytest.mark.parametrize("mode", ["plain", "deflate"])
async def test_chromium_page_with_our_server(nursery: trio.Nursery, tmp_path: Path,
                                             chromium: str, mode: str) -> None:
    server = OurServer()
    ws_url = await server.start(nursery, mode)
    page_port = await serve_page(nursery)
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path}",
               f"http://127.0.0.1:{page_port}/?ws={ws_url}"]
    browser = await nursery.start(functools.partial(
        trio.run_process, command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        check=False))
    try:
        with trio.fail_after(60):
            await server.closed.wait()
    finally:
        browser.kill()
    [report] = server.reports
    assert report["subprotocol"] == "chat.v2"
    assert str(report["extensions"]).startswith("permessage-deflate") == (mode == "deflate")
    assert report["text"] and report["binary"] and report["large"]
    assert server.closes == [CloseReason(4001, "done here")]
