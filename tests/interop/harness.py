"""Running peers from other libraries as processes, and our side of each exchange."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    PerMessageDeflate,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

PEERS = Path(__file__).resolve().parent / "peers"
LARGE = 4 * 2**20 + 1
MAX_SIZE = 16 * 2**20


def require(tool: str, why: str) -> str:
    """The path of a peer's runtime; a skip on a developer machine, a failure in CI."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed ({why})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must have every interop peer")
        pytest.skip(message)
    return path


def compression_for(mode: str) -> PerMessageDeflate | None:
    return PerMessageDeflate() if mode == "deflate" else None


class OurServer:
    """Our echo server, recording what each connection negotiated and how it closed."""

    def __init__(self) -> None:
        self.subprotocols: list[str | None] = []
        self.closes: list[CloseReason] = []
        self.closed = trio.Event()  # set when the first connection has closed
        self.reports: list[dict[str, object]] = []  # "RESULT:{json}" messages from peers
        self.port = 0

    async def handler(self, request: WebSocketRequest) -> None:
        offered = request.proposed_subprotocols
        ws = await request.accept(subprotocol="chat.v2" if "chat.v2" in offered else None)
        self.subprotocols.append(ws.subprotocol)
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, str) and message.startswith("RESULT:"):
                    self.reports.append(json.loads(message[len("RESULT:"):]))
                await ws.send_message(message)
        except ConnectionClosed as closed:
            self.closes.append(closed.reason)
            self.closed.set()

    async def start(self, nursery: trio.Nursery, mode: str) -> str:
        server = await nursery.start(lambda task_status: serve_websocket(
            self.handler, "127.0.0.1", 0, None, max_message_size=MAX_SIZE,
            compression=compression_for(mode), task_status=task_status))
        self.port = server.port
        return f"ws://127.0.0.1:{server.port}/interop"


async def run_peer_client(command: list[str]) -> dict[str, object]:
    """Run a peer's client script and return the JSON summary it prints."""
    with trio.fail_after(60):
        result = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                        check=False)
    assert result.returncode == 0, result.stderr.decode()
    summary: dict[str, object] = json.loads(result.stdout.decode().strip().splitlines()[-1])
    return summary


class PeerServer:
    """A peer's server script running as a process; it prints PORT n, then CLOSED lines."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    async def line(self) -> str:
        assert self.process.stdout is not None
        with trio.fail_after(30):
            while b"\n" not in self._buffer:
                chunk = await self.process.stdout.receive_some()
                assert chunk, "the peer server exited"
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    @classmethod
    async def start(cls, nursery: trio.Nursery, command: list[str]) -> tuple[PeerServer, str]:
        run = functools.partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
        process = await nursery.start(run)
        peer = cls(process)
        port = (await peer.line()).split()[-1]
        return peer, f"ws://127.0.0.1:{port}/interop"

    def stop(self) -> None:
        self.process.kill()


async def our_client_exchange(url: str, mode: str, peer: PeerServer) -> None:
    """Everything our client does against a peer's server, asserting as it goes."""
    options = {"subprotocols": ["chat.v1", "chat.v2"], "max_message_size": MAX_SIZE,
               "compression": compression_for(mode)}
    large = os.urandom(LARGE)
    async with open_websocket_url(url, **options) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "chat.v2"
        for message in ("héllo", bytes(range(256)), large):
            await ws.send_message(message)
            assert await ws.get_message() == message
        await ws.send_message("fragment-me")
        assert await ws.get_message() == "fragmented"
        with trio.fail_after(10):
            await ws.ping(b"interop")
        await ws.aclose(4002, "bye from trio")
    assert await peer.line() == "CLOSED 4002 bye from trio"
    async with open_websocket_url(url, **options) as ws:  # type: ignore[arg-type]
        await ws.send_message("close-me")
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
    assert caught.value.reason == CloseReason(4003, "peer closing")
    assert await peer.line() == "CLOSED 4003 peer closing"


def python_peer(script: str, *args: str) -> list[str]:
    return [sys.executable, str(PEERS / script), *args]
