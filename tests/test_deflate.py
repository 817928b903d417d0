"""permessage-deflate: negotiation, round trips, the off switch, and decompression bombs."""

from __future__ import annotations

import tracemalloc
import zlib
from typing import Any

import pytest
import trio
import trio.testing
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate

from trio_websocket import (
    ConnectionClosed,
    PerMessageDeflate,
    WebSocketConnection,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket_core import DEFAULT_COMPRESSION
from trio_websocket_core._mask import mask

from .conftest import RawPeer


class CountingStream(trio.abc.Stream):
    """Passes everything through, counting the bytes sent."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += len(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self.inner.aclose()


async def open_pair(nursery: trio.Nursery, client: PerMessageDeflate | None,
                    server: PerMessageDeflate | None, **options: Any,
                    ) -> tuple[WebSocketConnection, WebSocketConnection, CountingStream]:
    """Connect our client and server; also return the client's byte-counting stream."""
    raw_client, server_stream = trio.testing.memory_stream_pair()
    client_stream = CountingStream(raw_client)
    accepted: list[WebSocketConnection] = []

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_stream, compression=server, **options)
        accepted.append(await request.accept())

    async with trio.open_nursery() as handshake:
        handshake.start_soon(serve)
        ws = await wrap_client_stream(nursery, client_stream, "localhost", "/",
                                      compression=client, **options)
    return ws, accepted[0], client_stream


async def wire_cost(client: WebSocketConnection, server: WebSocketConnection,
                    counter: CountingStream, message: str) -> int:
    before = counter.sent
    await client.send_message(message)
    assert await server.get_message() == message
    return counter.sent - before


async def server_answer(offer: str, server: PerMessageDeflate | None = DEFAULT_COMPRESSION
                        ) -> str | None:
    """The Sec-WebSocket-Extensions header our server answers an offer with."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        async def serve() -> None:
            request = await wrap_server_stream(nursery, server_stream, compression=server)
            await request.accept()

        nursery.start_soon(serve)
        await client_stream.send_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Extensions: " + offer.encode() + b"\r\n\r\n")
        response = b""
        while b"\r\n\r\n" not in response:
            response += await client_stream.receive_some()
        nursery.cancel_scope.cancel()
    for line in response.decode().split("\r\n"):
        if line.lower().startswith("sec-websocket-extensions:"):
            return line.split(":", 1)[1].strip()
    return None


@pytest.mark.parametrize("settings", [
    PerMessageDeflate(),
    PerMessageDeflate(client_max_window_bits=15, server_max_window_bits=15),
    PerMessageDeflate(client_max_window_bits=9, server_max_window_bits=9),
    PerMessageDeflate(client_no_context_takeover=True, server_no_context_takeover=True),
    PerMessageDeflate(compress_level=0, mem_level=1),
])
async def test_round_trip_with_each_setting(nursery: trio.Nursery,
                                            settings: PerMessageDeflate) -> None:
    client, server, counter = await open_pair(nursery, settings, settings)
    compresses = settings.compress_level > 0
    assert (await wire_cost(client, server, counter, "z" * 10000) < 1000) == compresses
    messages: list[str | bytes] = ["hello " * 100, b"\x00" * 70000, "", "é" * 5000, b"x"]
    for message in messages * 3:  # again and again, across context takeover
        await client.send_message(message)
        assert await server.get_message() == message
        await server.send_message(message)
        assert await client.get_message() == message


async def test_either_side_can_turn_it_off(nursery: trio.Nursery) -> None:
    for client_side, server_side in ((None, PerMessageDeflate()), (PerMessageDeflate(), None)):
        client, server, counter = await open_pair(nursery, client_side, server_side)
        assert await wire_cost(client, server, counter, "z" * 10000) > 10000


async def test_server_answers_within_its_own_limits() -> None:
    # The server compresses with at most 2**12 and asks the client for the same.
    assert await server_answer("permessage-deflate; client_max_window_bits") == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")
    assert await server_answer("permessage-deflate; server_max_window_bits=10") == (
        "permessage-deflate; server_max_window_bits=10")
    assert await server_answer("permessage-deflate; server_no_context_takeover") == (
        "permessage-deflate; server_max_window_bits=12; server_no_context_takeover")
    wide_open = PerMessageDeflate(client_max_window_bits=15, server_max_window_bits=15)
    assert await server_answer("permessage-deflate", wide_open) == "permessage-deflate"


@pytest.mark.parametrize("offer", [
    "permessage-deflate; server_max_window_bits=8",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; client_max_window_bits=x",
    "permessage-deflate; unknown_parameter",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "x-webkit-deflate-frame",
])
async def test_unacceptable_offers_are_declined_not_fatal(offer: str) -> None:
    assert await server_answer(offer) is None


async def test_first_acceptable_offer_wins() -> None:
    answer = await server_answer(
        "permessage-deflate; server_max_window_bits=8, permessage-deflate; "
        "server_max_window_bits=11")
    assert answer == "permessage-deflate; server_max_window_bits=11"


async def test_no_offer_from_a_client_without_compression() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: wrap_client_stream(nursery, client_stream, "h", "/",
                                                      compression=None))
        request = await server_stream.receive_some()
        nursery.cancel_scope.cancel()
    assert b"sec-websocket-extensions" not in request.lower()


async def test_decompression_bomb_closes_with_1009_before_inflating(
        nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream)

    async def serve() -> WebSocketConnection:
        request = await wrap_server_stream(nursery, server_stream, max_message_size=2**20)
        return await request.accept()

    async with trio.open_nursery() as handshake:
        handshake.start_soon(peer.send, Request(host="x", target="/",
                                                extensions=[WsprotoDeflate()]))
        server = await serve()
    await peer.next_event()  # the 101
    # 256 MiB of zeros deflate to about 256 KiB; sent as one compressed message.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    chunk = b"\0" * 2**24
    body = b"".join(compressor.compress(chunk) for _ in range(16))
    body += compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]
    key = b"\x11\x22\x33\x44"
    masked = mask(body, key)
    header = bytes([0xC2, 0xFF]) + len(body).to_bytes(8, "big") + key
    tracemalloc.start()
    try:
        await client_stream.send_all(header + masked)
        with pytest.raises(ConnectionClosed) as caught:
            await server.get_message()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason.code == 1009
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1009
    # The inflated 256 MiB never existed: the peak is the compressed body and change.
    assert peak < 16 * 2**20


async def test_limit_counts_inflated_size_not_wire_size(nursery: trio.Nursery) -> None:
    client, server, _ = await open_pair(nursery, PerMessageDeflate(), PerMessageDeflate(),
                                        max_message_size=1000)
    await client.send_message("a" * 1000)  # compresses to a few bytes, inflates to the limit
    assert await server.get_message() == "a" * 1000
    await client.send_message("a" * 1001)
    with pytest.raises(ConnectionClosed) as caught:
        await server.get_message()
    assert caught.value.reason.code == 1009


async def test_settings_are_validated() -> None:
    for bad in ({"client_max_window_bits": 8}, {"server_max_window_bits": 16},
                {"compress_level": 10}, {"mem_level": 0}):
        with pytest.raises(ValueError):
            PerMessageDeflate(**bad)
    assert "server_max_window_bits=12" in repr(PerMessageDeflate())


async def test_raw_peer_with_wsproto_compression_interoperates(nursery: trio.Nursery) -> None:
    # wsproto's own permessage-deflate as the client: an independent implementation.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream)
    async with trio.open_nursery() as handshake:
        handshake.start_soon(peer.send, Request(host="x", target="/",
                                                extensions=[WsprotoDeflate()]))
        request = await wrap_server_stream(nursery, server_stream)
        server = await request.accept()
    accepted = await peer.next_event()
    assert isinstance(accepted, AcceptConnection) and accepted.extensions
    await peer.send(TextMessage("compressed " * 50))
    assert await server.get_message() == "compressed " * 50
    await server.send_message("and back " * 50)
    event = await peer.next_event()
    assert isinstance(event, TextMessage) and event.data == "and back " * 50
