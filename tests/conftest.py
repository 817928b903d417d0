"""Shared fixtures: an echo server on loopback, an in-memory listener, a hand-driven peer,
and a check after every test that it left no descriptor, thread or stranded task behind."""

from __future__ import annotations

import functools
import gc
import inspect
import math
import os
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, Request

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
    wrap_client_stream,
)
from trio_websocket_core._connection import CLOSE_EOF_TIMEOUT, WRITE_BUFFER_SIZE

from . import peer_summary

HOST = "127.0.0.1"


def pytest_configure(config: pytest.Config) -> None:
    # The summary's "interop peers" section: what ran against which outside
    # peer, and what was skipped for want of one (tests/peer_summary.py).
    peer_summary.register(config)


def pytest_report_header() -> str:
    from trio_websocket_core._connection import RAW_SOCKET_IO

    path = "raw descriptors on plain TCP" if RAW_SOCKET_IO else "the generic stream methods"
    return f"trio-websocket I/O: {path} (TRIO_WEBSOCKET_GENERIC_IO=1 for the generic path)"


async def echo_handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


@pytest.fixture
async def echo_server(nursery: trio.Nursery) -> AsyncIterator[WebSocketServer]:
    server = await nursery.start(serve_websocket, echo_handler, HOST, 0, None)
    yield server


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Gives a WebSocketServer the server halves of in-memory stream pairs."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    async def connect(self) -> trio.testing.MemoryStapledStream[Any, Any]:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self._receive.close()
        await trio.lowlevel.checkpoint()


class RawPeer:
    """A peer driven by hand through wsproto, able to send any bytes at all."""

    def __init__(self, stream: trio.abc.Stream, role: ConnectionType = ConnectionType.CLIENT):
        self.stream = stream
        self.ws = WSConnection(role)
        self._pending: deque[Event] = deque()

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self) -> Event | None:
        """The next event from the other side, or None once its stream ends."""
        while not self._pending:
            data = await self.stream.receive_some()
            if not data:
                return None
            self.ws.receive_data(data)
            self._pending.extend(self.ws.events())
        return self._pending.popleft()

    async def open(self, target: str = "/", **request: Any) -> Event | None:
        """Send a handshake request and return the server's answer."""
        await self.send(Request(host="localhost", target=target, **request))
        return await self.next_event()


async def client_and_raw_server(
    nursery: trio.Nursery, streams: tuple[Any, Any] | None = None
) -> tuple[WebSocketConnection, RawPeer]:
    """Our client, connected over memory streams to a server driven by hand."""
    client_stream, server_stream = streams or trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream, ConnectionType.SERVER)

    async def answer() -> None:
        await peer.next_event()
        await peer.send(AcceptConnection())

    nursery.start_soon(answer)
    client = await wrap_client_stream(nursery, client_stream, "localhost", "/")
    return client, peer


def _tcp_buffer_ceiling() -> int:
    """The most loopback TCP may hold of a stream nobody reads.

    The kernel's ceilings for an autotuned send buffer and receive buffer
    (Linux; elsewhere a generous guess), plus a segment the send buffer may
    overshoot by.
    """
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as wmem, \
                open("/proc/sys/net/ipv4/tcp_rmem") as rmem:
            return int(wmem.read().split()[2]) + int(rmem.read().split()[2]) + 2**16
    except (OSError, IndexError, ValueError):
        return 64 * 2**20


TCP_HOLDS_AT_MOST = _tcp_buffer_ceiling()


class Flood:
    """Sends messages of ``size`` random (incompressible) bytes on ``ws``, one after another.

    Sends never wait for the transport: against a peer that does not read
    they return until the connection holds more than WRITE_BUFFER_SIZE bytes,
    then one waits for room. ``sent`` keeps the messages whose send returned,
    ``pending`` the one a send holds now; ``run()`` ends when ``stop`` is set
    (after the send under way) or a send raises ConnectionClosed (kept in
    ``error``), and then sets ``done``. A cancellation goes through.
    """

    def __init__(self, ws: WebSocketConnection, size: int) -> None:
        self.ws = ws
        self.size = size
        self.sent: list[bytes] = []
        self.pending: bytes | None = None
        self.stop = False
        self.error: ConnectionClosed | None = None
        self.done = trio.Event()

    async def run(self) -> None:
        try:
            while not self.stop:
                # Sends that never wait would loop forever: fail instead (the
                # bound itself is assert_bounded's).
                assert len(self.sent) * self.size <= 2 * (TCP_HOLDS_AT_MOST + WRITE_BUFFER_SIZE), \
                    "the sends never wait"
                self.pending = os.urandom(self.size)
                await self.ws.send_message(self.pending)
                self.sent.append(self.pending)
                self.pending = None
        except ConnectionClosed as exc:
            self.error = exc
        finally:
            self.done.set()

    def assert_bounded(self, held_elsewhere: int, taken: int = 0) -> None:
        """Check where the sends stopped: once the write buffer was full, no sooner, no later.

        ``held_elsewhere``: the most the transport and the peer may have taken
        in; ``taken``: the messages the peer's application took (held by nobody).
        """
        assert self.pending is not None, "no send waits"
        held = len(self.sent) - taken
        assert held >= WRITE_BUFFER_SIZE // self.size  # they never waited for the peer
        # What we hold is bounded: the write buffer, plus the message that took it over.
        assert held * self.size <= WRITE_BUFFER_SIZE + self.size + held_elsewhere


@pytest.fixture
def memory_server(nursery: trio.Nursery) -> Any:
    """Start a WebSocketServer on a MemoryListener; returns an async starter."""

    async def start(handler: Any, **options: Any) -> MemoryListener:
        listener = MemoryListener()
        server = WebSocketServer(handler, [listener], **options)
        await nursery.start(server.run)
        return listener

    return start


# -- the leak check run after every test ---------------------------------------

#: Where the process's open descriptors are listed; None where neither exists
#: (Windows, a BSD without fdescfs mounted): the descriptor check is skipped there.
_FD_DIR = next((path for path in ("/proc/self/fd", "/dev/fd") if os.path.isdir(path)), None)
#: Scheduler passes a trio test may take, after its body returns, for tasks that
#: are ending anyway (an aborted reader closing its stream) to end.
SETTLE_PASSES = 100
#: Seconds a thread the test started may take to end, or go back to trio's cache.
THREAD_GRACE = 2.0


def open_descriptors() -> dict[int, tuple[int, int]]:
    """The open descriptors, each with the (device, inode) it refers to.

    The identity makes a descriptor closed and reopened under the same number
    count as new. Empty where the descriptors cannot be listed.
    """
    if _FD_DIR is None:
        return {}
    found = {}
    for name in os.listdir(_FD_DIR):
        try:
            status = os.fstat(int(name))
        except (OSError, ValueError):
            continue  # the listing's own descriptor, closed by now
        found[int(name)] = (status.st_dev, status.st_ino)
    return found


def _describe_descriptor(fd: int) -> str:
    try:
        return f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}"
    except OSError:
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return f"{fd} (closed meanwhile)"
        kind = "socket" if stat.S_ISSOCK(mode) else "pipe" if stat.S_ISFIFO(mode) else "file"
        return f"{fd} ({kind})"


def _is_idle_trio_worker(thread: threading.Thread) -> bool:
    """Whether ``thread`` is one of trio's cached worker threads, waiting for a job.

    trio keeps finished ``to_thread`` workers for reuse (they exit after ten idle
    seconds): one is idle when its innermost Python frame is the cache's wait
    loop, rather than a job it runs.
    """
    frame = sys._current_frames().get(thread.ident or -1)
    return (frame is not None and frame.f_code.co_name == "_work"
            and frame.f_globals.get("__name__") == "trio._core._thread_cache")


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread not in before and thread.is_alive() and not _is_idle_trio_worker(thread)]


def _all_tasks() -> Iterator[trio.lowlevel.Task]:
    root = trio.lowlevel.current_root_task()
    stack = [root] if root is not None else []
    while stack:
        task = stack.pop()
        yield task
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)


_READ_LOOP = WebSocketConnection._read_loop.__code__


def _stranded_tasks() -> list[str]:
    """What the task check finds wrong now (see ``no_leaks``), one line each."""
    me = trio.lowlevel.current_task()
    readers: dict[WebSocketConnection, trio.lowlevel.Task] = {}
    callers: list[tuple[trio.lowlevel.Task, WebSocketConnection, str]] = []
    for task in _all_tasks():
        if task is me:
            continue
        if getattr(task.coro, "cr_code", None) is _READ_LOOP:
            readers[task.coro.cr_frame.f_locals["self"]] = task  # type: ignore[attr-defined]
            continue
        for frame, _ in task.iter_await_frames():
            ws = frame.f_locals.get("self")
            if (isinstance(ws, WebSocketConnection)
                    and frame.f_globals.get("__name__", "").startswith("trio_websocket")):
                code = frame.f_code
                callers.append((task, ws, getattr(code, "co_qualname", code.co_name)))
                break
    problems = [f"task {task.name!r} waits in {where}() on {ws!r}, whose reader has ended"
                for task, ws, where in callers if ws not in readers]
    now = trio.current_time()
    for ws in readers:
        reason = ws.closed
        if reason is None:
            continue  # open: the test may leave it to its nursery
        if reason.code == 1006:
            problems.append(f"the reader of {ws!r} outlives its abort")
        elif ws._protocol.state.name == "CLOSED":
            if ws.is_server:
                problems.append(f"the reader of {ws!r} outlives the closing handshake")
            elif ws._reader_scope.deadline > now + CLOSE_EOF_TIMEOUT:
                problems.append(f"the reader of {ws!r} waits for EOF past CLOSE_EOF_TIMEOUT")
    return problems


async def _assert_no_stranded_tasks() -> None:
    problems = _stranded_tasks()
    for _ in range(SETTLE_PASSES):
        if not problems:
            return
        await trio.lowlevel.checkpoint()
        problems = _stranded_tasks()
    if problems:
        pytest.fail("stranded tasks at the end of the test:\n  " + "\n  ".join(problems),
                    pytrace=False)


def _check_tasks_after_the_body(item: pytest.Item) -> Callable[[], None] | None:
    """Make a trio test run the task check once its body returns; give back the undo."""
    original = getattr(item, "obj", None)
    if (item.get_closest_marker("trio") is None or not inspect.iscoroutinefunction(original)
            or hasattr(original, "hypothesis")):  # pytest-trio runs those by another path
        return None

    @functools.wraps(original)
    async def checked(*args: Any, **kwargs: Any) -> None:
        await original(*args, **kwargs)
        await _assert_no_stranded_tasks()

    item.obj = checked  # type: ignore[attr-defined]
    return lambda: setattr(item, "obj", original)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a descriptor, a thread or a stranded task behind.

    - Descriptors: every descriptor open after the test and all its fixtures'
      teardown was open before it, as the same object (device and inode, so a
      number closed and reused counts as new). A garbage collection runs before
      blaming one, so only what is still referenced counts. Listed from
      /proc/self/fd or /dev/fd; where neither exists this part is skipped.
    - Threads: every thread started during the test has ended, or is an idle
      worker back in trio's thread cache (which trio keeps for reuse), within
      THREAD_GRACE seconds.
    - Tasks (trio tests): when the test body returns, before pytest-trio tears
      the fixtures down (and its ``nursery`` fixture silently cancels whatever
      still runs), after at most SETTLE_PASSES scheduler passes for tasks that
      are ending anyway: no task waits inside a WebSocketConnection method (a
      get, send, ping, aclose, or the library's own writer task) of a connection
      whose reader task has ended, since nothing could ever wake it; and no
      reader task outlives its connection's close: not once it was aborted or
      lost (1006), not on a server once the closing handshake is complete, and
      on a client then only for the documented CLOSE_EOF_TIMEOUT. A connection
      still open, or waiting for the peer to answer its close frame, is not a
      leak: that wait is the caller's to bound. The check runs in the test's
      own trio run, appended to the test function pytest-trio calls (not for
      Hypothesis tests, which pytest-trio runs another way), and walks every
      task from trio's root task with ``Task.iter_await_frames()``.
    """
    descriptors = open_descriptors()
    threads = set(threading.enumerate())
    undo = _check_tasks_after_the_body(request.node)
    yield
    if undo is not None:
        undo()
    deadline = time.monotonic() + THREAD_GRACE
    while (alive := _new_threads(threads)) and time.monotonic() < deadline:
        alive[0].join(0.05)
    if alive:
        pytest.fail(f"threads left running: {[thread.name for thread in alive]}", pytrace=False)
    if _FD_DIR is not None:
        leaked = [fd for fd, identity in open_descriptors().items()
                  if descriptors.get(fd) != identity]
        if leaked:
            gc.collect()  # an unreachable socket is closed here (and warns)
            now = open_descriptors()
            leaked = [fd for fd in leaked if fd in now and descriptors.get(fd) != now[fd]]
        if leaked:
            pytest.fail("descriptors left open: "
                        + ", ".join(_describe_descriptor(fd) for fd in leaked), pytrace=False)
