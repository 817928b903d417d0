"""Interop with Node's `ws` library, in both directions."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from trio_websocket import CloseReason

from ..peer_summary import program_version
from .harness import OurServer, PeerServer, our_client_exchange, require, run_peer_client

NODE_DIR = Path(__file__).resolve().parent / "node"
MODES = ["plain", "deflate"]


def ws_version() -> str | None:
    """The ws package's version and Node's, for the summary; None without the ws package."""
    try:
        ws = json.loads((NODE_DIR / "node_modules" / "ws" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    node_version = program_version("node")
    return f"{ws} (node {node_version})" if node_version else str(ws)


pytestmark = pytest.mark.peer("node ws", version=ws_version)


@pytest.fixture
def node() -> Callable[..., list[str]]:
    """How to run one of the peer's scripts: ``node(script, *args)`` is the command.

    A plain fixture: a skip raised inside a trio test loses its reason.
    """
    binary = require("node", "Node.js runs the ws peer")
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        message = f"run 'npm install' in {NODE_DIR} to get the ws peer"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return lambda script, *args: [binary, str(NODE_DIR / script), *args]


@pytest.mark.parametrize("mode", MODES)
async def test_node_client_with_our_server(nursery: trio.Nursery, node: Callable[..., list[str]],
                                           mode: str) -> None:
    command = node("ws_client.js", "", mode)
    server = OurServer()
    command[2] = await server.start(nursery, mode)
    summary = await run_peer_client(command)
    assert summary["subprotocol"] == "chat.v2"
    assert str(summary["extensions"]).startswith("permessage-deflate") == (mode == "deflate")
    assert all(summary[check] for check in ("text", "binary", "large", "fragmented", "ping"))
    with trio.fail_after(10):
        await server.closed.wait()
    assert server.closes == [CloseReason(4001, "done here")]


@pytest.mark.parametrize("mode", MODES)
async def test_our_client_with_node_server(nursery: trio.Nursery, node: Callable[..., list[str]],
                                           mode: str) -> None:
    peer, url = await PeerServer.start(nursery, node("ws_server.js", mode))
    try:
        await our_client_exchange(url, mode, peer)
    finally:
        peer.stop()
