"""Load: thousands of connections at once, many short ones, a slow consumer among fast ones.

The server runs in a child process (load_server.py) so that its memory and
open descriptors can be read from outside, from /proc/<pid> on Linux (off
Linux it reports its own, with its peak RSS, all getrusage gives). Clients
are ours, in this process, on loopback, with the default settings
(compression on), as an application would use them.

Descriptors: each process needs one per connection plus its own, so both
raise their soft RLIMIT_NOFILE to NOFILE (CONNECTIONS plus headroom); a hard
limit below that fails the test with a message saying so.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    connect_websocket_url,
    open_websocket_url,
)
from trio_websocket_core._connection import WRITE_BUFFER_SIZE

from .load_server import SLOW_PAYLOAD, SLOW_SIZE

SCRIPT = Path(__file__).with_name("load_server.py")

CONNECTIONS = 5000
NOFILE = CONNECTIONS + 1000  # the connections, plus what the interpreter and pytest hold
# Handshakes under way at once. serve_websocket passes no backlog, so trio
# asks for 65535 and the kernel cuts that to somaxconn (4096 on Linux 5.4+,
# 128 on older kernels and macOS); staying below it keeps SYNs from being
# dropped and retried a second later.
CONNECT_CONCURRENCY = 100

CYCLES = 10_000
WARM_UP = 1_000
CYCLE_CONCURRENCY = 25
# Allowed growth of the server's RSS over the CYCLES - WARM_UP cycles after
# the warm-up. Measured: 0 to 112 KiB in sixteen runs on both I/O paths, so
# this is about 18 times the noise, and still small enough that a leak of 256
# bytes per connection fails (a trial leaking a bytearray(200) per connection
# grew 2,288 KiB).
RSS_MARGIN_KIB = 2048

FAST_CLIENTS = 20
ROUND_TRIPS = 50  # each, while the slow consumer is blocked
# Longest round trip allowed a fast client. Measured: median 0.5 to 2 ms,
# worst 3 to 37 ms on a busy shared machine; the bound leaves room for a
# garbage collection or a descheduled process, while a server held up by the
# blocked send would keep them waiting until the slow client is dropped.
LATENCY_BOUND = 1.0

SETTLE_TIMEOUT = 30  # seconds for descriptors to return to their baseline
FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


def own_fds() -> set[tuple[int, int, int]]:
    """This process's open descriptors, each with the (device, inode) it refers to.

    Compared as sets, so that a descriptor another test left for the garbage
    collector, closed meanwhile, or a number reused, is not mistaken for ours.
    """
    found = set()
    for name in os.listdir(FD_DIR):
        try:
            status = os.fstat(int(name))
        except OSError:
            continue  # the listing's own descriptor, closed by now
        found.add((int(name), status.st_dev, status.st_ino))
    return found


def proc_figures(pid: int) -> tuple[int, int] | None:
    """(VmRSS in KiB, open descriptors) of a process, read from /proc; None without /proc."""
    proc = f"/proc/{pid}"
    if not os.path.isdir(proc):
        return None
    with open(f"{proc}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"{proc}/fd"))


class Lines:
    """Reads a child's stdout one line at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some()
            if not data:
                raise EOFError("the server's stdout closed")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


class LoadServer:
    """The child process: its port, its counters, its memory and descriptors."""

    def __init__(self, process: trio.Process, lines: Lines, port: int) -> None:
        self.process = process
        self._lines = lines
        self.port = port
        self.baseline_fds = 0  # set by the fixture, with no connection open

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(command.encode() + b"\n")
        answer: dict[str, Any] = json.loads(await self._lines.next())
        return answer

    async def figures(self) -> tuple[int, int]:
        """(RSS in KiB, open descriptors): from /proc on Linux, else from the server."""
        figures = proc_figures(self.process.pid)
        if figures is not None:
            return figures
        stats = await self.ask("stats")
        return stats["rss_kib"], stats["fds"]

    async def settle(self) -> tuple[int, int]:
        """Wait until no connection is left and descriptors are back to the baseline."""
        figures = await self.figures()
        with trio.move_on_after(SETTLE_TIMEOUT):
            while True:
                stats = await self.ask("stats")
                figures = await self.figures()
                if (figures[1] == self.baseline_fds and stats["open"] == 0
                        and stats["slow_running"] == 0):
                    return figures
                await trio.sleep(0.01)
        pytest.fail(f"server descriptors stayed at {figures[1]}, baseline "
                    f"{self.baseline_fds}, after {SETTLE_TIMEOUT} s")


@pytest.fixture
def nofile() -> Any:
    """Raise this process's soft descriptor limit to NOFILE for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < NOFILE:
        pytest.fail(f"the load tests need {NOFILE} open files per process (RLIMIT_NOFILE), "
                    f"but the hard limit is {hard}: raise it (ulimit -Hn)")
    if soft != resource.RLIM_INFINITY and soft < NOFILE:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
async def load_server(nofile: None) -> AsyncIterator[LoadServer]:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(SCRIPT), str(NOFILE)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        lines = Lines(process.stdout)
        with trio.fail_after(60):
            try:
                first = await lines.next()
            except EOFError:
                await process.wait()
                pytest.fail(f"load_server.py exited with {process.returncode} before serving")
        assert first.startswith("PORT "), first
        server = LoadServer(process, lines, int(first.split()[1]))
        with trio.fail_after(10):
            await server.ask("stats")  # its control task has started too
            server.baseline_fds = (await server.figures())[1]
        yield server
    finally:
        # Closing its stdin ends the server; kill it only if it does not end.
        assert process.stdin is not None
        with trio.move_on_after(10):
            await process.stdin.aclose()
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        assert process.stdout is not None
        await process.stdout.aclose()
    assert process.returncode == 0, f"load_server.py exited with {process.returncode}"


async def test_thousands_of_connections_open_at_once_each_echoed(
        load_server: LoadServer) -> None:
    server = load_server
    client_baseline = own_fds()
    gate = trio.Semaphore(CONNECT_CONCURRENCY)
    all_open = trio.Event()
    go = trio.Event()
    opened = 0
    echoes: dict[int, str | bytes] = {}
    reasons: dict[int, CloseReason | None] = {}

    async def client(i: int) -> None:
        nonlocal opened
        await gate.acquire()
        async with open_websocket_url(server.url()) as ws:
            gate.release()
            opened += 1
            if opened == CONNECTIONS:
                all_open.set()
            await go.wait()
            await ws.send_message(f"message {i}")
            echoes[i] = await ws.get_message()
        reasons[i] = ws.closed

    start = time.perf_counter()
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            for i in range(CONNECTIONS):
                nursery.start_soon(client, i)
            await all_open.wait()
            open_time = time.perf_counter() - start
            # All are open at once, on both sides, before any message moves.
            stats = await server.ask("stats")
            assert stats["open"] == CONNECTIONS
            assert (await server.figures())[1] == server.baseline_fds + CONNECTIONS
            assert len(own_fds() - client_baseline) == CONNECTIONS
            held_rss = (await server.figures())[0]
            exchange = time.perf_counter()
            go.set()
        exchange_time = time.perf_counter() - exchange
        rss, fds = await server.settle()

    # Every one got exactly its own message back and closed cleanly.
    assert echoes == {i: f"message {i}" for i in range(CONNECTIONS)}
    assert {reason.code if reason else None for reason in reasons.values()} == {1000}
    assert len(reasons) == CONNECTIONS
    stats = await server.ask("stats")
    assert stats["accepted"] == CONNECTIONS
    assert stats["echoed"] == CONNECTIONS
    assert stats["closes"] == {"1000": CONNECTIONS}
    assert fds == server.baseline_fds
    assert not own_fds() - client_baseline  # every socket closed
    print(f"\n{CONNECTIONS} open at once after {open_time:.2f} s (server RSS {held_rss} KiB), "
          f"messages echoed and closed in {exchange_time:.2f} s; then server RSS {rss} KiB, "
          f"fds {fds}")


async def test_cycles_leave_server_memory_and_descriptors_flat(
        load_server: LoadServer) -> None:
    server = load_server
    client_baseline = own_fds()
    clean = 0
    next_cycle = 0

    async def worker(last: int) -> None:
        nonlocal clean, next_cycle
        while next_cycle < last:
            i = next_cycle
            next_cycle += 1
            async with open_websocket_url(server.url()) as ws:
                await ws.send_message(f"cycle {i}")
                assert await ws.get_message() == f"cycle {i}"
            if ws.closed == CloseReason(1000, None):
                clean += 1

    async def run(last: int) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(CYCLE_CONCURRENCY):
                nursery.start_soon(worker, last)

    with trio.fail_after(240):
        start = time.perf_counter()
        await run(WARM_UP)
        warm_rss, warm_fds = await server.settle()
        await run(CYCLES)
        elapsed = time.perf_counter() - start
        end_rss, end_fds = await server.settle()

    assert next_cycle == CYCLES
    assert clean == CYCLES
    stats = await server.ask("stats")
    assert stats["accepted"] == CYCLES
    assert stats["echoed"] == CYCLES
    assert stats["closes"] == {"1000": CYCLES}
    assert warm_fds == end_fds == server.baseline_fds
    assert not own_fds() - client_baseline  # every socket closed
    drift = end_rss - warm_rss
    print(f"\n{CYCLES} cycles in {elapsed:.2f} s; server RSS {warm_rss} KiB after "
          f"{WARM_UP}, {end_rss} KiB at the end ({drift:+d} KiB); fds {warm_fds} -> {end_fds}")
    assert drift <= RSS_MARGIN_KIB, f"server RSS grew {drift} KiB over {CYCLES - WARM_UP} cycles"


async def wait_until_slow_send_blocks(server: LoadServer) -> int:
    """Wait until the server's send to the slow client stays stuck; return its sends done.

    Stuck: a send under way, and no further send finished over several
    answers of the server, each of which lets all its tasks run.
    """
    seen: list[tuple[bool, int]] = []
    with trio.fail_after(30):
        while True:
            stats = await server.ask("stats")
            seen.append((stats["slow_in_send"], stats["slow_sent"]))
            last = seen[-4:]
            if len(last) == 4 and last[0][0] and last[0][1] > 0 and len(set(last)) == 1:
                return int(stats["slow_sent"])
            await trio.sleep(0.02)


async def test_slow_consumer_does_not_stall_the_others(load_server: LoadServer) -> None:
    server = load_server
    client_baseline = own_fds()
    latencies: list[float] = []

    async def fast(i: int) -> None:
        async with open_websocket_url(server.url()) as ws:
            for j in range(ROUND_TRIPS):
                message = f"fast {i} {j}"
                start = time.perf_counter()
                await ws.send_message(message)
                assert await ws.get_message() == message
                latencies.append(time.perf_counter() - start)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            # It never reads, so the server's sends to it fill every buffer, then one waits.
            slow = await connect_websocket_url(nursery, server.url("/slow"), compression=None)
            sent = await wait_until_slow_send_blocks(server)
            async with trio.open_nursery() as fast_nursery:
                for i in range(FAST_CLIENTS):
                    fast_nursery.start_soon(fast, i)
            stats = await server.ask("stats")
            # It stayed blocked all the while the others were served.
            assert stats["slow_in_send"] and stats["slow_sent"] == sent
            assert stats["echoed"] == FAST_CLIENTS * ROUND_TRIPS

            # The server gives up on it: the cancelled send did nothing (the
            # connection stayed open), then the handler aborts the connection.
            assert await server.ask("kick") == {"kicked": 1}
            await server.settle()
            stats = await server.ask("stats")
            assert stats["slow_kicked"] == 1 and stats["slow_open_after_kick"] == 1
            assert stats["slow_sent"] == sent
            # The client gets the messages the server's kernel had taken, whole
            # and in order, then 1006: every message whose send returned but
            # those the server's write buffer still held, at most the buffer's
            # size plus the message that took it over.
            received = 0
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(sent + 1):
                    assert await slow.get_message() == SLOW_PAYLOAD
                    received += 1
            assert sent - (1 + math.ceil(WRITE_BUFFER_SIZE / SLOW_SIZE)) <= received <= sent
            assert closed.value.reason.code == 1006
            await slow.aclose()
    assert not own_fds() - client_baseline  # every socket closed
    assert len(latencies) == FAST_CLIENTS * ROUND_TRIPS
    worst = max(latencies)
    print(f"\nslow client blocked after {sent} messages of {SLOW_SIZE} bytes "
          f"({received} of them delivered); "
          f"{len(latencies)} round trips meanwhile: median "
          f"{statistics.median(latencies) * 1000:.2f} ms, worst {worst * 1000:.2f} ms")
    assert worst < LATENCY_BOUND
