"""permessage-deflate: negotiation, round trips, interop with wsproto, the off switch, bombs."""

from __future__ import annotations

import math
import os
import re
import tracemalloc
import zlib
from typing import Any, ClassVar

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate
from wsproto.utilities import generate_accept_token

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    PerMessageDeflate,
    WebSocketConnection,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket_core import DEFAULT_COMPRESSION, _deflate
from trio_websocket_core._deflate import Deflate
from trio_websocket_core._mask import mask
from trio_websocket_core._protocol import FAIL, MESSAGE, PING, TOO_BIG, Event, FrameProtocol

from .conftest import RawPeer
from .test_protocol import frame


class CountingStream(trio.abc.Stream):
    """Passes everything through, counting the bytes sent and received."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent = 0
        self.received = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += len(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        self.received += len(data)
        return data

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


async def server_answer(offer: str, server: PerMessageDeflate | None = DEFAULT_COMPRESSION,
                        max_message_size: float = 2**20) -> str | None:
    """The Sec-WebSocket-Extensions header our server answers an offer with."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        async def serve() -> None:
            request = await wrap_server_stream(nursery, server_stream, compression=server,
                                               max_message_size=max_message_size)
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


async def test_no_size_limit_means_no_compression(nursery: trio.Nursery) -> None:
    # With max_message_size=inf nothing would bound what a compressed message
    # inflates to (about 1,000 to 1): neither side agrees to compress then.
    client, server, counter = await open_pair(nursery, PerMessageDeflate(), PerMessageDeflate(),
                                              max_message_size=math.inf)
    assert await wire_cost(client, server, counter, "z" * 10000) > 10000
    for limit, offered in ((math.inf, False), (2**20, True)):
        client_stream, server_stream = trio.testing.memory_stream_pair()
        heads: list[bytes] = []

        async def refuse(stream: trio.abc.Stream = server_stream,
                         heads: list[bytes] = heads) -> None:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some()
            heads.append(head)
            await stream.send_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

        nursery.start_soon(refuse)
        with pytest.raises(ConnectionRejected):
            await wrap_client_stream(nursery, client_stream, "localhost", "/",
                                     max_message_size=limit)
        assert (b"permessage-deflate" in heads[0].lower()) == offered
    assert await server_answer("permessage-deflate") is not None
    assert await server_answer("permessage-deflate", max_message_size=math.inf) is None


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


async def wsproto_client(
    nursery: trio.Nursery, extension: WsprotoDeflate | None = None,
    wrap: Any = None, **options: Any,
) -> tuple[WebSocketConnection, RawPeer, Any]:
    """Our server over memory streams, and wsproto with its own deflate as the client.

    Returns the connection, the peer (its stream wrapped by ``wrap`` if given)
    and the peer's answer to the handshake.
    """
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(wrap(client_stream) if wrap else client_stream)
    async with trio.open_nursery() as handshake:
        handshake.start_soon(peer.send, Request(host="x", target="/",
                                                extensions=[extension or WsprotoDeflate()]))
        server = await (await wrap_server_stream(nursery, server_stream, **options)).accept()
    return server, peer, await peer.next_event()


async def test_decompression_bomb_closes_with_1009_before_inflating(
        nursery: trio.Nursery) -> None:
    server, peer, _ = await wsproto_client(nursery, max_message_size=2**20)
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
        await peer.stream.send_all(header + masked)
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
    server, peer, accepted = await wsproto_client(nursery)
    assert isinstance(accepted, AcceptConnection) and accepted.extensions
    await peer.send(TextMessage("compressed " * 50))
    assert await server.get_message() == "compressed " * 50
    await server.send_message("and back " * 50)
    event = await peer.next_event()
    assert isinstance(event, TextMessage) and event.data == "and back " * 50


# -- negotiation, Sans-IO ----------------------------------------------------

OURS = PerMessageDeflate()  # windows of 2**12 both ways, context takeover both ways
TAIL = b"\x00\x00\xff\xff"


def test_client_offer_names_both_windows_and_the_flags_chosen() -> None:
    assert Deflate.offer(OURS) == (
        "permessage-deflate; client_max_window_bits=12; server_max_window_bits=12")
    lean = PerMessageDeflate(client_max_window_bits=9, server_max_window_bits=15,
                             client_no_context_takeover=True, server_no_context_takeover=True)
    assert Deflate.offer(lean) == (
        "permessage-deflate; client_max_window_bits=9; server_max_window_bits=15; "
        "client_no_context_takeover; server_no_context_takeover")


async def test_client_sends_its_offer(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as inner:
        inner.start_soon(lambda: wrap_client_stream(nursery, client_stream, "h", "/"))
        request = await server_stream.receive_some()
        inner.cancel_scope.cancel()
    assert (b"\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=12; "
            b"server_max_window_bits=12\r\n") in request


@pytest.mark.parametrize(("offers", "answer"), [
    # The first permessage-deflate offer we can honour wins; the rest are passed over.
    (["x-webkit-deflate-frame", "permessage-deflate"],
     "permessage-deflate; server_max_window_bits=12"),
    (["permessage-deflate; x_unknown", "permessage-deflate; server_max_window_bits=10"],
     "permessage-deflate; server_max_window_bits=10"),
    (["permessage-deflate; server_max_window_bits=9", "permessage-deflate"],
     "permessage-deflate; server_max_window_bits=9"),
    # Our window never exceeds our own limit, nor the client's.
    (["permessage-deflate; server_max_window_bits=15"],
     "permessage-deflate; server_max_window_bits=12"),
    # The client's window is bounded only when it offered to be.
    (["permessage-deflate; client_max_window_bits"],
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    (["permessage-deflate; client_max_window_bits=15"],
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    (["permessage-deflate; client_max_window_bits=10"],
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"),
    # Quoted values and spaces around the separators are valid syntax.
    (['permessage-deflate; server_max_window_bits="10"'],
     "permessage-deflate; server_max_window_bits=10"),
    (["permessage-deflate ; server_max_window_bits = 11 ; client_no_context_takeover"],
     "permessage-deflate; server_max_window_bits=11; client_no_context_takeover"),
    # Flags a client asks for are granted.
    (["permessage-deflate; client_no_context_takeover; server_no_context_takeover"],
     "permessage-deflate; server_max_window_bits=12; server_no_context_takeover; "
     "client_no_context_takeover"),
])
def test_server_answer(offers: list[str], answer: str) -> None:
    agreed = Deflate.accept(OURS, offers)
    assert agreed is not None
    assert agreed[1] == answer


def test_server_adds_its_own_flags_and_window_unasked() -> None:
    strict = PerMessageDeflate(server_max_window_bits=10, client_no_context_takeover=True,
                               server_no_context_takeover=True)
    agreed = Deflate.accept(strict, ["permessage-deflate"])
    assert agreed is not None
    deflate, answer = agreed
    assert answer == ("permessage-deflate; server_max_window_bits=10; "
                      "server_no_context_takeover; client_no_context_takeover")
    assert not deflate.client
    assert (deflate.server_max_window_bits, deflate.client_max_window_bits) == (10, 15)
    assert deflate.server_no_context_takeover and deflate.client_no_context_takeover


def test_server_agreement_records_each_window() -> None:
    agreed = Deflate.accept(OURS, ["permessage-deflate; client_max_window_bits=10; "
                                   "server_max_window_bits=14"])
    assert agreed is not None
    deflate = agreed[0]
    assert (deflate.server_max_window_bits, deflate.client_max_window_bits) == (12, 10)
    assert not deflate.server_no_context_takeover and not deflate.client_no_context_takeover


@pytest.mark.parametrize("offer", [
    "permessage-deflate; server_max_window_bits=8",  # RFC 7692 allows 8; zlib cannot keep to it
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=012",  # no leading zeros
    "permessage-deflate; server_max_window_bits",  # needs a value
    "permessage-deflate; server_max_window_bits=1 2",
    'permessage-deflate; server_max_window_bits="10',
    "permessage-deflate; client_max_window_bits=8",
    "permessage-deflate; client_max_window_bits=x",
    "permessage-deflate; server_no_context_takeover=1",  # flags take no value
    'permessage-deflate; client_no_context_takeover=""',
    "permessage-deflate; unknown_parameter",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
    "permessage-deflate;",
    "permessage-deflate; =10",
    "x-webkit-deflate-frame",
])
def test_server_declines(offer: str) -> None:
    assert Deflate.accept(OURS, [offer]) is None


@pytest.mark.parametrize("settings", [
    OURS,
    PerMessageDeflate(client_max_window_bits=9, server_max_window_bits=15),
    PerMessageDeflate(client_no_context_takeover=True, server_no_context_takeover=True),
])
def test_our_offer_is_one_we_accept_and_our_answer_one_we_confirm(
        settings: PerMessageDeflate) -> None:
    agreed = Deflate.accept(settings, [Deflate.offer(settings)])
    assert agreed is not None
    server, answer = agreed
    client = Deflate.confirm(settings, [answer])
    assert client is not None and client.client
    for name in ("client_max_window_bits", "server_max_window_bits",
                 "client_no_context_takeover", "server_no_context_takeover"):
        assert getattr(client, name) == getattr(server, name), name


@pytest.mark.parametrize(("response", "expected"), [
    # (our window, the server's, our reset, the server's)
    (["permessage-deflate"], (12, 15, False, False)),  # a limit left out: its widest
    (["permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"],
     (12, 12, False, False)),
    (["permessage-deflate; server_max_window_bits=9; client_max_window_bits=10"],
     (10, 9, False, False)),
    (["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
     (12, 15, True, True)),
    (['permessage-deflate; server_max_window_bits="11"'], (12, 11, False, False)),
    # Our offered window is a hint a server may ignore; a wider bound leaves us at ours.
    (["permessage-deflate; client_max_window_bits=15"], (12, 15, False, False)),
])
def test_client_confirms(response: list[str], expected: tuple[int, int, bool, bool]) -> None:
    deflate = Deflate.confirm(OURS, response)
    assert deflate is not None and deflate.client
    assert (deflate.client_max_window_bits, deflate.server_max_window_bits,
            deflate.client_no_context_takeover, deflate.server_no_context_takeover) == expected


def test_client_keeps_the_resets_it_offered() -> None:
    # Offering client_no_context_takeover is a promise we keep whatever the answer;
    # forgetting the server's context waits for the server's word.
    lean = PerMessageDeflate(client_no_context_takeover=True, server_no_context_takeover=True)
    deflate = Deflate.confirm(lean, ["permessage-deflate"])
    assert deflate is not None
    assert deflate.client_no_context_takeover and not deflate.server_no_context_takeover


@pytest.mark.parametrize("response", [
    ["permessage-deflate; server_max_window_bits=13"],  # wider than we offered
    ["permessage-deflate; client_max_window_bits=16"],
    ["permessage-deflate; client_max_window_bits"],  # an answer gives the value
    ["permessage-deflate; server_max_window_bits"],
    ["permessage-deflate; server_max_window_bits=8"],
    ["permessage-deflate; client_max_window_bits=08"],
    ["permessage-deflate; server_no_context_takeover=yes"],
    ["permessage-deflate; x_unknown"],  # a parameter we did not offer
    ["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
    ["permessage-deflate;"],
    ["x-webkit-deflate-frame"],  # an extension we did not offer
    ["permessage-deflate", "permessage-deflate"],
    ["permessage-deflate", "x-other"],
])
def test_client_refuses(response: list[str]) -> None:
    with pytest.raises(ValueError):
        Deflate.confirm(OURS, response)


def test_client_that_offered_nothing_refuses_any_extension() -> None:
    assert Deflate.confirm(None, []) is None
    with pytest.raises(ValueError):
        Deflate.confirm(None, ["permessage-deflate"])


@pytest.mark.parametrize(("compression", "extensions"), [
    (OURS, b"permessage-deflate; server_max_window_bits=15"),
    (OURS, b"permessage-deflate; x_unknown"),
    (OURS, b"permessage-deflate, permessage-deflate"),
    (OURS, b"x-webkit-deflate-frame"),
    (None, b"permessage-deflate"),
])
async def test_bad_extension_answer_is_a_handshake_error(
        nursery: trio.Nursery, compression: PerMessageDeflate | None, extensions: bytes) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def server() -> None:
        request = await server_stream.receive_some()
        key = re.search(rb"Sec-WebSocket-Key: (\S+)", request)
        assert key is not None
        await server_stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + generate_accept_token(key.group(1)) + b"\r\n"
            b"Sec-WebSocket-Extensions: " + extensions + b"\r\n\r\n")

    nursery.start_soon(server)
    with pytest.raises(HandshakeError, match="invalid handshake response"):
        await wrap_client_stream(nursery, client_stream, "localhost", "/",
                                 compression=compression)


# -- the frame layer with deflate, Sans-IO -----------------------------------



def feed(protocol: FrameProtocol, data: bytes) -> list[Event]:
    protocol.receive_data(data)
    return protocol.events()


def deflated(data: bytes, bits: int = 15, compressor: Any = None) -> bytes:
    """``data`` compressed as RFC 7692 sends it: a sync flush without its tail."""
    compressor = compressor or zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def server_protocol(max_message_size: float = float("inf"), **agreed: Any) -> FrameProtocol:
    return FrameProtocol(False, Deflate(False, **agreed), max_message_size)


RSV1 = 0x40


def test_compresses_is_true_only_with_deflate() -> None:
    assert server_protocol().compresses
    assert not FrameProtocol(False).compresses


@pytest.mark.parametrize("agreed", [
    {},
    {"client_max_window_bits": 9, "server_max_window_bits": 10},
    {"client_no_context_takeover": True, "server_no_context_takeover": True},
])
def test_frame_layers_round_trip_compressed(agreed: dict[str, Any]) -> None:
    client = FrameProtocol(True, Deflate(True, compress="always", **agreed))
    server = FrameProtocol(False, Deflate(False, compress="always", **agreed))
    messages: list[str | bytes] = ["hello " * 100, os.urandom(200000), b"\x00" * 70000, "", "é"]
    for message in messages * 2:
        wire = bytes(client.message(message))
        assert wire[0] & RSV1
        assert feed(server, wire) == [(MESSAGE, message)]
        assert feed(client, bytes(server.message(message))) == [(MESSAGE, message)]


@pytest.mark.parametrize("size", [3000, 600000])  # long fragments take the pooled-buffer path
def test_fragmented_compressed_message_inflates_across_frames(size: int) -> None:
    message = b"".join(os.urandom(1000) * 2 for _ in range(size // 2000))  # compresses by half
    body = deflated(message)
    third = len(body) // 3
    assert (third > 65536) == (size > 3000)
    protocol = server_protocol()
    events = feed(protocol, frame(0x2, body[:third], fin=False, rsv=RSV1)
                  + frame(0x9, b"between")
                  + frame(0x0, body[third:2 * third], fin=False)
                  + frame(0x0, b"", fin=False)
                  + frame(0x0, body[2 * third:]))
    assert events == [(PING, b"between"), (MESSAGE, message)]


def test_inflater_keeps_the_context_between_messages() -> None:
    message = os.urandom(1000)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = deflated(message, compressor=compressor)
    again = deflated(message, compressor=compressor)  # refers back into the first
    assert len(again) < 50
    protocol = server_protocol()
    assert feed(protocol, frame(0x2, first, rsv=RSV1) + frame(0x2, again[:5], fin=False, rsv=RSV1)
                + frame(0x0, again[5:])) == [(MESSAGE, message), (MESSAGE, message)]


def test_plain_and_compressed_messages_mix() -> None:
    protocol = server_protocol()
    stream = (frame(0x1, b"plain") + frame(0x1, deflated(b"packed"), rsv=RSV1)
              + frame(0x2, b"pl", fin=False) + frame(0x0, b"ain")
              + frame(0x1, deflated(b"packed again"), rsv=RSV1))
    assert feed(protocol, stream) == [(MESSAGE, "plain"), (MESSAGE, "packed"),
                                      (MESSAGE, b"plain"), (MESSAGE, "packed again")]


@pytest.mark.parametrize(("stream", "deflate"), [
    # RSV1 belongs on the first frame of a message only.
    (frame(0x1, deflated(b"ab"), fin=False, rsv=RSV1) + frame(0x0, b"", rsv=RSV1), True),
    (frame(0x1, b"a", fin=False) + frame(0x0, b"b", rsv=RSV1), True),
    (frame(0x9, b"", rsv=RSV1), True),
    (frame(0xA, b"", rsv=RSV1), True),
    (frame(0x8, b"\x03\xe8", rsv=RSV1), True),
    # RSV2 and RSV3 have no meaning here.
    (frame(0x1, b"a", rsv=0x20), True),
    (frame(0x1, b"a", rsv=0x10), True),
    (frame(0x1, deflated(b"a"), rsv=RSV1 | 0x20), True),
    (frame(0x0, b"a", rsv=0x10), True),
    # RSV1 without permessage-deflate agreed.
    (frame(0x1, deflated(b"a"), rsv=RSV1), False),
])
def test_misplaced_reserved_bits_fail_with_1002(stream: bytes, deflate: bool) -> None:
    protocol = server_protocol() if deflate else FrameProtocol(False)
    events = feed(protocol, stream)
    assert events[-1][0] == FAIL and events[-1][1][0] == 1002
    assert all(kind != MESSAGE for kind, _ in events)


def test_each_side_compresses_within_its_own_window() -> None:
    # The same 1000 bytes twice: a 2**9 window cannot reach back into the first message.
    data = os.urandom(1000)
    for client in (True, False):
        ours = Deflate(client, client_max_window_bits=9 if client else 15,
                       server_max_window_bits=15 if client else 9)
        inflater = zlib.decompressobj(-9)  # fails on a reference past its 512 bytes of history
        for _ in range(2):
            assert inflater.decompress(ours.compress(data) + TAIL) == data
        # The other way about, a 2**15 window does find the repeat.
        wide = Deflate(client)
        wide.compress(data)
        assert len(wide.compress(data)) < 50


def test_inflater_holds_the_peer_to_its_window() -> None:
    # The client agreed to 2**9; a reference 1000 bytes back, into the last message, breaks it.
    data = os.urandom(1000)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first, again = deflated(data, compressor=compressor), deflated(data, compressor=compressor)
    stream = frame(0x2, first, rsv=RSV1) + frame(0x2, again, rsv=RSV1)
    assert feed(server_protocol(), stream) == [(MESSAGE, data), (MESSAGE, data)]
    events = feed(server_protocol(client_max_window_bits=9), stream)
    assert events[0] == (MESSAGE, data)
    assert events[1][0] == FAIL and events[1][1][0] == 1007


def test_no_context_takeover_resets_our_compressor() -> None:
    message = os.urandom(500)
    keeps, resets = Deflate(True), Deflate(True, client_no_context_takeover=True)
    first, second = keeps.compress(message), keeps.compress(message)
    assert len(second) < len(first) // 4  # refers back to the first message
    alone = [resets.compress(message) for _ in range(3)]
    assert alone[0] == alone[1] == alone[2] == first  # each starts afresh
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(alone[2] + TAIL) == message


def test_zlib_state_is_made_on_first_use_and_dropped_when_agreed() -> None:
    # Idle connections hold no zlib state; resets drop it after each message.
    deflate = Deflate(False, client_no_context_takeover=True)
    assert deflate._compressor is None and deflate._inflater is None
    deflate.compress(b"x")
    assert deflate._compressor is not None and deflate._inflater is None
    deflate.start(100)
    deflate.inflate(deflated(b"yy"), False)
    assert deflate._inflater is not None and deflate.inflating
    deflate.inflate(b"", True)
    assert deflate._inflater is None and not deflate.inflating
    keeper = Deflate(False, server_no_context_takeover=True)  # the client keeps its context
    keeper.compress(b"x")
    assert keeper._compressor is None
    keeper.start(100)
    keeper.inflate(deflated(b"yy"), True)
    assert keeper._inflater is not None


def test_a_final_block_ends_a_stream_and_the_next_message_starts_afresh() -> None:
    # RFC 7692 section 7.2.3.3: a sender may end each message's stream with BFINAL.
    def finished(data: bytes) -> bytes:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH)

    protocol = server_protocol()
    assert feed(protocol, frame(0x1, finished(b"one"), rsv=RSV1)
                + frame(0x1, finished(b"two"), rsv=RSV1)) == [(MESSAGE, "one"), (MESSAGE, "two")]
    events = feed(server_protocol(), frame(0x1, finished(b"one") + b"\x02\x00", rsv=RSV1))
    assert events[0][0] == FAIL and events[0][1][0] == 1007


def test_text_is_checked_as_utf8_once_inflated() -> None:
    events = feed(server_protocol(), frame(0x1, deflated(b"ok \xff\xfe"), rsv=RSV1))
    assert events[0][0] == FAIL and events[0][1][0] == 1007


@pytest.mark.parametrize("fragments", [1, 3])
def test_corrupt_deflate_stream_fails_with_1007(fragments: int) -> None:
    good = deflated(b"fine " * 100)
    # After the good blocks, a header with the reserved block type 3.
    corrupt = good + b"\xff\xff\xff\xff\xff\xff"
    protocol = server_protocol()
    assert feed(protocol, frame(0x2, good, rsv=RSV1)) == [(MESSAGE, b"fine " * 100)]
    size = -(-len(corrupt) // fragments)
    parts = [corrupt[i:i + size] for i in range(0, len(corrupt), size)]
    stream = b"".join(frame(0x0 if i else 0x2, part, fin=i == len(parts) - 1,
                            rsv=0 if i else RSV1) for i, part in enumerate(parts))
    events = feed(protocol, stream + frame(0x9, b"never seen"))
    assert events == [(FAIL, (1007, events[0][1][1]))]
    assert events[0][1][1].startswith("compressed data does not inflate")


def test_limits_are_exact_in_bytes_for_binary_and_characters_for_text() -> None:
    protocol = server_protocol(max_message_size=1000)
    assert feed(protocol, frame(0x2, deflated(b"x" * 1000), rsv=RSV1)) == [
        (MESSAGE, b"x" * 1000)]
    assert feed(protocol, frame(0x1, deflated("é".encode() * 1000), rsv=RSV1)) == [
        (MESSAGE, "é" * 1000)]
    events = feed(protocol, frame(0x2, deflated(b"x" * 1001), rsv=RSV1))
    assert events[0][0] == FAIL and events[0][1][0] == 1009
    # Text within 4 bytes a character but over the character count: the usual TOO_BIG.
    protocol = server_protocol(max_message_size=1000)
    assert feed(protocol, frame(0x1, deflated(b"y" * 1001), rsv=RSV1)) == [(TOO_BIG, None)]


class CountingInflater:
    """Wraps a zlib inflater, counting every byte it hands out."""

    made: ClassVar[list[CountingInflater]] = []

    def __init__(self, wbits: int) -> None:
        self.inner = REAL_DECOMPRESSOBJ(wbits)
        self.out = 0
        CountingInflater.made.append(self)

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        result = self.inner.decompress(data, max_length)
        self.out += len(result)
        return result

    @property
    def eof(self) -> bool:
        return self.inner.eof

    @property
    def unused_data(self) -> bytes:
        return self.inner.unused_data


REAL_DECOMPRESSOBJ = zlib.decompressobj


@pytest.mark.parametrize(("opcode", "limit", "fragments", "expected"), [
    (0x2, 2**20, 1, FAIL),
    (0x2, 2**20, 50, FAIL),
    (0x1, 4 * 2**20, 1, FAIL),  # 4 bytes a character
    # Fragments of text are decoded as they inflate, so the character count
    # passes the limit first: the usual close for size, and no more inflating.
    (0x1, 4 * 2**20, 50, TOO_BIG),
])
@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_bomb_closes_with_1009_having_inflated_no_more_than_the_limit(
        monkeypatch: pytest.MonkeyPatch, opcode: int, limit: int, fragments: int,
        expected: int, client: bool) -> None:
    CountingInflater.made = []
    monkeypatch.setattr(_deflate.zlib, "decompressobj", CountingInflater)
    # 64 MiB of zeros deflate to about 64 KiB.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = b"".join(compressor.compress(b"\0" * 2**22) for _ in range(16))
    body += compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]
    assert len(body) < 2**17
    size = -(-len(body) // fragments)
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    # A client's frames are masked; a server's, which our client receives, are not.
    stream = b"".join(frame(0x0 if i else opcode, part, fin=i == len(parts) - 1,
                            rsv=0 if i else RSV1, key=None if client else b"\x01\x02\x03\x04")
                      for i, part in enumerate(parts))
    protocol = (FrameProtocol(True, Deflate(True), 2**20) if client
                else server_protocol(max_message_size=2**20))
    events = feed(protocol, stream)
    assert len(CountingInflater.made) == 1
    inflated = CountingInflater.made[0].out
    if expected == FAIL:
        assert events == [(FAIL, (1009, "message inflates past the size limit"))]
        assert inflated == limit + 1  # one byte past the limit shows it was passed
    else:
        assert events == [(TOO_BIG, None)]
        assert 2**20 < inflated < 2 * 2**20  # one fragment's worth past a million characters


# -- interop with wsproto's own permessage-deflate ----------------------------

SETUPS = {
    # name: (our settings, wsproto's extension's arguments)
    "takeover": (PerMessageDeflate(), {}),
    "no takeover": (PerMessageDeflate(client_no_context_takeover=True,
                                      server_no_context_takeover=True),
                    {"client_no_context_takeover": True, "server_no_context_takeover": True}),
    "wsproto resets unasked": (PerMessageDeflate(),
                               {"client_no_context_takeover": True,
                                "server_no_context_takeover": True}),
    "narrow windows": (PerMessageDeflate(client_max_window_bits=9, server_max_window_bits=9),
                       {"client_max_window_bits": 9, "server_max_window_bits": 9}),
    "wide windows": (PerMessageDeflate(client_max_window_bits=15, server_max_window_bits=15),
                     {}),
}
REPEATED = "the same words over and over, " * 40
INTEROP_MESSAGES: list[str | bytes] = [REPEATED, REPEATED, os.urandom(5000) * 2, b"", "é" * 3000,
                                       b"\x00" * 70000, REPEATED]


async def wsproto_message(peer: RawPeer) -> str | bytes:
    """The next whole message wsproto receives, however many events it comes in."""
    parts: list[Any] = []
    while True:
        event = await peer.next_event()
        assert isinstance(event, Message), event
        parts.append(event.data)
        if event.message_finished:
            return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)


async def wsproto_send(peer: RawPeer, message: str | bytes, pieces: int = 1) -> None:
    """Send ``message`` from wsproto, fragmented into ``pieces`` frames."""
    size = max(1, -(-len(message) // pieces))
    chunks = [message[i:i + size] for i in range(0, len(message), size)] or [message]
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        if isinstance(chunk, str):
            await peer.send(TextMessage(chunk, message_finished=last))
        else:
            await peer.send(BytesMessage(chunk, message_finished=last))


async def exchange(ours: WebSocketConnection, peer: RawPeer, counter: CountingStream) -> None:
    for pieces in (1, 4):
        for message in INTEROP_MESSAGES:
            await wsproto_send(peer, message, pieces)
            assert await ours.get_message() == message
            before = counter.received
            await ours.send_message(message)
            assert await wsproto_message(peer) == message
            if message == REPEATED:  # compressed on the wire, not just agreed
                assert counter.received - before < len(REPEATED) // 4


@pytest.mark.parametrize("setup", sorted(SETUPS))
async def test_our_server_with_a_wsproto_client(nursery: trio.Nursery, setup: str) -> None:
    ours, theirs = SETUPS[setup]
    extension = WsprotoDeflate(**theirs)
    server, peer, accepted = await wsproto_client(nursery, extension, wrap=CountingStream,
                                                  compression=ours)
    assert isinstance(accepted, AcceptConnection)
    assert accepted.extensions == [extension] and extension.enabled()
    assert isinstance(peer.stream, CountingStream)
    await exchange(server, peer, peer.stream)


@pytest.mark.parametrize("setup", sorted(SETUPS))
async def test_our_client_with_a_wsproto_server(nursery: trio.Nursery, setup: str) -> None:
    ours, theirs = SETUPS[setup]
    extension = WsprotoDeflate(**theirs)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    counter = CountingStream(server_stream)
    peer = RawPeer(counter, ConnectionType.SERVER)

    async def answer() -> None:
        request = await peer.next_event()
        assert isinstance(request, Request)
        await peer.send(AcceptConnection(extensions=[extension]))

    nursery.start_soon(answer)
    client = await wrap_client_stream(nursery, client_stream, "localhost", "/",
                                      compression=ours)
    assert extension.enabled()
    await exchange(client, peer, counter)


async def test_corrupt_message_closes_the_connection_with_1007(nursery: trio.Nursery) -> None:
    server, peer, _ = await wsproto_client(nursery)
    await peer.stream.send_all(frame(0x1, b"\xff\xff\xff\xff\xff", rsv=RSV1))
    with pytest.raises(ConnectionClosed) as caught:
        await server.get_message()
    assert caught.value.reason.code == 1007
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1007
