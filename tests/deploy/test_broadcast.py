"""examples/broadcast.py: clients of several servers reached through one broker."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio

from trio_websocket import CloseReason, ConnectionClosed, open_websocket_url, serve_websocket

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "broadcast.py"


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("broadcast_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_runs() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["alice got 'hello from the first server'",
                                          "bob got 'hello from the first server'"]


async def test_a_client_that_falls_behind_is_closed_and_holds_up_no_one(
        nursery: trio.Nursery) -> None:
    broadcast = example()
    broker = broadcast.MemoryBroker()
    hub = broadcast.Hub(broker, queue_size=2)
    await nursery.start(hub.relay)
    server = await nursery.start(lambda task_status: serve_websocket(
        hub.handler, "127.0.0.1", 0, None, compression=None, task_status=task_status))
    url = f"ws://127.0.0.1:{server.port}/"
    # Enough to fill the slow client's TCP buffers and its queue several times over.
    messages = [f"{n:04} " + os.urandom(32 * 2**10).hex() for n in range(300)]
    with trio.fail_after(20):
        async with open_websocket_url(url, compression=None) as fast, \
                open_websocket_url(url, compression=None) as slow:
            for message in messages:  # the fast client reads each as it comes
                await broker.publish(message)
                assert await fast.get_message() == message
            got = 0
            with pytest.raises(ConnectionClosed) as caught:
                for _ in messages:
                    assert await slow.get_message() == messages[got]
                    got += 1
            assert caught.value.reason == CloseReason(1013, "too far behind")
            assert got < len(messages)
