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
POLL = 0.02  # seconds between looks at what gives no event

# Linux spreads connections over SO_REUSEPORT sockets, FreeBSD over
# SO_REUSEPORT_LB ones. macOS and the other BSDs have SO_REUSEPORT but hand
# every connection to one socket, and Windows has neither: the recipe does not
# apply there (docs/deploy.md says what to do instead).
pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") or hasattr(socket, "SO_REUSEPORT_LB")),
    reason=f"SO_REUSEPORT does not spread connections across processes on {sys.platform}")


class Supervisor:
    def __init__(self, process: trio.Process, count: int) -> None:
        self.process = process
        self.count = count
        self.port = 0
        self.workers: dict[int, int] = {}  # worker id -> pid, as the workers report them
        self.output = b""  # everything the supervisor has printed so far
        self.output_ended = trio.Event()

    async def read_output(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
                          ) -> None:
        """Read the supervisor's output to its end; report its first line."""
        assert self.process.stdout is not None
        reported = False
        try:
            while chunk := await self.process.stdout.receive_some():
                self.output += chunk
                if not reported and b"\n" in self.output:
                    task_status.started(self.output.split(b"\n", 1)[0].decode())
                    reported = True
            assert reported, "the supervisor exited before listening"
        finally:
            self.output_ended.set()

    async def connect(self, stack: AsyncExitStack) -> WebSocketConnection:
        """A connection kept open until ``stack`` closes; records who served it."""
        ws = await stack.enter_async_context(open_websocket_url(f"ws://127.0.0.1:{self.port}/"))
        await ws.send_message("whoami")
        _, worker, _, pid = str(await ws.get_message()).split()
        self.workers.setdefault(int(worker), int(pid))
        assert self.workers[int(worker)] == int(pid)
        return ws

    def alive(self) -> list[int]:
        """The worker pids that still run (a worker orphaned and not yet reaped has exited)."""
        return [pid for pid in self.workers.values() if running(pid)]


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # Linux: a zombie still has a pid, but its state is Z
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def port_is_free(port: int) -> bool:
    """Whether a new listener may take ``port``: no socket of the workers' holds it."""
    with socket.socket() as probe:
        # Connections the workers closed may linger in TIME_WAIT: they do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
    return True


@asynccontextmanager
async def supervisor(nursery: trio.Nursery, workers: int = WORKERS,
                     ) -> AsyncIterator[Supervisor]:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLE), "--workers", str(workers), "--host", "127.0.0.1",
         "--port", "0", "--grace", "5"],
        stdout=subprocess.PIPE, start_new_session=True)
    running = Supervisor(process, workers)
    try:
        with trio.fail_after(TIMEOUT):
            word, host, port = (await nursery.start(running.read_output)).split()
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
            # Every process that held the pipe is gone: the reader sees its end.
            with trio.move_on_after(TIMEOUT):
                await running.output_ended.wait()
            assert process.stdout is not None
            await process.stdout.aclose()


async def test_workers_share_the_port_and_drain_on_sigterm(nursery: trio.Nursery) -> None:
    async with supervisor(nursery) as running:
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


async def test_a_worker_that_dies_takes_the_others_down(nursery: trio.Nursery) -> None:
    async with supervisor(nursery, workers=2) as running:
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


async def test_workers_drain_and_free_the_port_when_the_supervisor_is_killed(
        nursery: trio.Nursery) -> None:
    async with supervisor(nursery) as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                connections = await connect_to_every_worker(running, stack)
                # SIGKILL: the supervisor can neither stop its workers nor tell them.
                running.process.kill()
                await running.process.wait()
                for ws in connections:
                    with pytest.raises(ConnectionClosed) as caught:
                        await ws.get_message()
                    assert caught.value.reason == CloseReason(1001, "server shutting down")
            # The orphaned workers exit, and their port can be listened on again.
            # Neither gives an event to wait on: they are not the test's children.
            for _ in range(int(TIMEOUT / POLL)):
                if not running.alive() and port_is_free(running.port):
                    break
                await trio.sleep(POLL)
            else:
                raise AssertionError(f"workers {running.alive()} still run or hold the port")


async def test_a_worker_that_prints_a_lot_goes_on_serving(nursery: trio.Nursery) -> None:
    # Far more than a pipe holds (64 KiB on Linux): a supervisor that stopped
    # reading its workers' output would leave this worker stuck in print().
    text = "x" * 2**19
    async with supervisor(nursery, workers=1) as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                ws = await running.connect(stack)
                for _ in range(3):
                    await ws.send_message(f"print {text}")
                    assert await ws.get_message() == "printed"
                await ws.send_message("still echoing")
                assert await ws.get_message() == "still echoing"
            running.process.send_signal(signal.SIGTERM)
            assert await running.process.wait() == 0
            await running.output_ended.wait()
    # The supervisor passed the worker's lines on, whole.
    assert running.output.split(b"\n")[1:] == [text.encode()] * 3 + [b""]


def worker_command(port: int) -> list[str]:
    """A worker of the example's, started by hand instead of by a supervisor."""
    return [sys.executable, str(EXAMPLE), "--worker", "0", "--host", "127.0.0.1",
            "--port", str(port), "--grace", "5"]


async def test_a_worker_whose_supervisor_died_before_it_was_ready_exits_quietly(
        tmp_path: Path) -> None:
    # What a worker finds when its supervisor was killed while it started: the
    # end of its input, and an output pipe that nobody reads any more.
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    os.close(stdin_write)
    os.close(stdout_read)
    try:
        with (tmp_path / "stderr").open("wb") as stderr, trio.fail_after(TIMEOUT):
            result = await trio.run_process(worker_command(0), stdin=stdin_read,
                                            stdout=stdout_write, stderr=stderr, check=False)
    finally:
        os.close(stdin_read)
        os.close(stdout_write)
    # It drains and exits like any worker whose supervisor is gone, with no traceback.
    assert ((tmp_path / "stderr").read_text(), result.returncode) == ("", 0)


async def test_a_worker_goes_on_serving_when_its_output_breaks(tmp_path: Path) -> None:
    # The port, held as the supervisor holds it, so that the test knows it.
    placeholder = socket.socket()
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    placeholder.setsockopt(socket.SOL_SOCKET, getattr(
        socket, "SO_REUSEPORT_LB", None) or socket.SO_REUSEPORT, 1)
    with placeholder, (tmp_path / "stderr").open("wb") as stderr:
        placeholder.bind(("127.0.0.1", 0))
        process = await trio.lowlevel.open_process(
            worker_command(placeholder.getsockname()[1]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        assert process.stdin is not None and process.stdout is not None
        try:
            with trio.fail_after(TIMEOUT):
                output = b""
                while b"\n" not in output:
                    chunk = await process.stdout.receive_some()
                    assert chunk, "the worker exited before it was ready"
                    output += chunk
                assert output.startswith(b"READY 0 ")
                # Nobody reads its output any more; its input stays open.
                await process.stdout.aclose()
                url = f"ws://127.0.0.1:{placeholder.getsockname()[1]}/"
                async with open_websocket_url(url) as ws:
                    # What it prints goes nowhere, and it carries on.
                    for message in ("print lost", "print lost again"):
                        await ws.send_message(message)
                        assert await ws.get_message() == "printed"
                    await ws.send_message("echo")
                    assert await ws.get_message() == "echo"
                    # The end of its input still tells it to drain.
                    await process.stdin.aclose()
                    with pytest.raises(ConnectionClosed) as caught:
                        await ws.get_message()
                    assert caught.value.reason == CloseReason(1001, "server shutting down")
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
                await process.stdin.aclose()
                await process.stdout.aclose()
    assert (tmp_path / "stderr").read_text() == ""
