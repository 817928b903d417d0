"""examples/reuseport.py: several server processes sharing one port with SO_REUSEPORT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, open_websocket_url

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "reuseport.py"
WORKERS = 3
# The kernel picks a worker by a hash of each connection's addresses, so 60
# connections miss one of 3 workers with a chance of about 1 in 10**10.
MAX_CONNECTIONS = 60
TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here (Windows)")


class Supervisor:
    def __init__(self, process: trio.Process, count: int) -> None:
        self.process = process
        self.count = count
        self.port = 0
        self.workers: dict[int, int] = {}  # worker id -> pid, as the workers report them

    async def first_line(self) -> str:
        assert self.process.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await self.process.stdout.receive_some()
            assert chunk, "the supervisor exited before listening"
            line += chunk
        return line.decode()

    async def connect(self, stack: AsyncExitStack) -> WebSocketConnection:
        """A connection kept open until ``stack`` closes; records who served it."""
        ws = await stack.enter_async_context(open_websocket_url(f"ws://127.0.0.1:{self.port}/"))
        await ws.send_message("whoami")
        _, worker, _, pid = str(await ws.get_message()).split()
        self.workers.setdefault(int(worker), int(pid))
        assert self.workers[int(worker)] == int(pid)
        return ws

    def alive(self) -> list[int]:
        """The worker pids that still exist."""
        found = []
        for pid in self.workers.values():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            found.append(pid)
        return found


@asynccontextmanager
async def supervisor(workers: int = WORKERS) -> AsyncIterator[Supervisor]:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLE), "--workers", str(workers), "--host", "127.0.0.1",
         "--port", "0", "--grace", "5"],
        stdout=subprocess.PIPE, start_new_session=True)
    running = Supervisor(process, workers)
    try:
        with trio.fail_after(TIMEOUT):
            word, host, port = (await running.first_line()).split()
        assert (word, host) == ("LISTENING", "127.0.0.1")
        running.port = int(port)
        yield running
    finally:
        try:  # the supervisor and its workers: one process group, started here
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        with trio.CancelScope(shield=True):
            await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()


async def test_workers_share_the_port_and_drain_on_sigterm() -> None:
    async with supervisor() as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                connections = await connect_to_every_worker(running, stack)
                running.process.send_signal(signal.SIGTERM)
                # Every worker drains: each open connection is told the server is going away.
                for ws in connections:
                    with pytest.raises(ConnectionClosed) as caught:
                        await ws.get_message()
                    assert caught.value.reason == CloseReason(1001, "server shutting down")
                assert await running.process.wait() == 0  # 0: every worker exited with 0
        assert running.alive() == []


async def connect_to_every_worker(running: Supervisor,
                                  stack: AsyncExitStack) -> list[WebSocketConnection]:
    """Connections, all echoing, until every worker has served one."""
    connections: list[WebSocketConnection] = []
    while len(running.workers) < running.count and len(connections) < MAX_CONNECTIONS:
        ws = await running.connect(stack)
        for message in ("echo", b"\x00\xffbinary"):
            await ws.send_message(message)
            assert await ws.get_message() == message
        connections.append(ws)
    assert sorted(running.workers) == list(range(running.count))
    assert len(set(running.workers.values())) == running.count
    return connections


async def test_a_worker_that_dies_takes_the_others_down() -> None:
    async with supervisor(workers=2) as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                connections = await connect_to_every_worker(running, stack)
                os.kill(running.workers[0], signal.SIGKILL)
                assert await running.process.wait() == 1
                # The others drained as on SIGTERM; the killed one's clients saw it vanish.
                codes = []
                for ws in connections:
                    with pytest.raises(ConnectionClosed) as caught:
                        await ws.get_message()
                    codes.append(caught.value.reason.code)
                assert set(codes) == {1001, 1006}
        assert running.alive() == []
