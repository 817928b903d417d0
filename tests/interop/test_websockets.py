"""Interop with the websockets library (asyncio), in both directions."""

from __future__ import annotations

import pytest
import trio

from trio_websocket import CloseReason

from .harness import OurServer, PeerServer, our_client_exchange, python_peer, run_peer_client

pytestmark = pytest.mark.peer("websockets")

MODES = ["plain", "deflate"]


@pytest.mark.parametrize("mode", MODES)
async def test_websockets_client_with_our_server(nursery: trio.Nursery, mode: str) -> None:
    server = OurServer()
    url = await server.start(nursery, mode)
    summary = await run_peer_client(python_peer("websockets_client.py", url, mode))
    assert summary["subprotocol"] == "chat.v2"
    assert bool(summary["extensions"]) == (mode == "deflate")
    assert all(summary[check] for check in ("text", "binary", "large", "fragmented", "ping"))
    with trio.fail_after(10):
        await server.closed.wait()
    assert server.closes == [CloseReason(4001, "done here")]
    assert server.subprotocols == ["chat.v2"]


@pytest.mark.parametrize("mode", MODES)
async def test_our_client_with_websockets_server(nursery: trio.Nursery, mode: str) -> None:
    peer, url = await PeerServer.start(nursery, python_peer("websockets_server.py", mode))
    try:
        await our_client_exchange(url, mode, peer)
    finally:
        peer.stop()
