"""The sibling task of the stall workloads, shared by every peer so that it costs the same.

A sibling loops on ``await sleep(0)`` (trio's or asyncio's) in the client's
event loop and records the longest time between two of its turns, while the
main task runs a tight loop on the connection. Its own work per turn is two
clock reads and two comparisons: the same code for every library; only the
``sleep`` passed in differs. ``idle()`` measures it with nothing else to do,
as the floor each library's figure should be read against.

The figure is wall-clock time (perf_counter), so it also counts time the OS
gave the core to another process. Beside it the sibling keeps the longest gap
in the thread's CPU time (thread_time, about half a microsecond a turn): a
wall gap much longer than any CPU gap was a preemption, not the library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter, thread_time
from typing import Any

COUNT = 200_000  # messages in each stall workload
LIMIT = 300  # seconds: a workload that takes longer fails rather than hangs


class Sibling:
    def __init__(self, sleep: Callable[[float], Awaitable[Any]]) -> None:
        self._sleep = sleep
        self._running = True
        self.begin()

    def begin(self) -> None:
        """Start a measurement: forget the gaps seen so far."""
        self._worst = self._worst_cpu = 0.0
        self._turns = 0
        self._start = self._last = perf_counter()
        self._last_cpu = thread_time()

    def end(self) -> dict[str, float]:
        """The measurement since ``begin()``; the gap still open counts too."""
        now, cpu = perf_counter(), thread_time()
        worst = max(self._worst, now - self._last)
        worst_cpu = max(self._worst_cpu, cpu - self._last_cpu)
        return {"worst_ms": worst * 1e3, "worst_cpu_ms": worst_cpu * 1e3, "turns": self._turns,
                "seconds": now - self._start}

    def stop(self) -> None:
        """Let ``run()`` return at its next turn."""
        self._running = False

    async def run(self) -> None:
        sleep = self._sleep
        while True:
            await sleep(0)
            if not self._running:
                return
            now, cpu = perf_counter(), thread_time()
            gap = now - self._last
            if gap > self._worst:
                self._worst = gap
            gap = cpu - self._last_cpu
            if gap > self._worst_cpu:
                self._worst_cpu = gap
            self._last, self._last_cpu = now, cpu
            self._turns += 1

    async def idle(self, seconds: float = 0.2) -> dict[str, float]:
        """The sibling alone (the main task asleep) for ``seconds``: the floor."""
        self.begin()
        await self._sleep(seconds)
        return self.end()


def result(loop: dict[str, float], idle: dict[str, float]) -> dict[str, float]:
    """What a peer prints: the longest gap in the loop, and the details run.py notes."""
    return {"value": loop["worst_ms"], "cpu_ms": loop["worst_cpu_ms"], "turns": loop["turns"],
            "seconds": loop["seconds"], "idle_ms": idle["worst_ms"],
            "idle_turn_us": idle["seconds"] / max(idle["turns"], 1) * 1e6}
