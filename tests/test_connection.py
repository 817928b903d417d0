"""Messages, the queue, size limits and closing, over in-memory streams."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, TextMessage

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket_core import _budget
from trio_websocket_core._connection import RECEIVE_SIZE

from .conftest import Flood, RawPeer, client_and_raw_server


async def open_pair(
    nursery: trio.Nursery,
    streams: tuple[Any, Any] | None = None,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> tuple[WebSocketConnection, WebSocketConnection]:
    client_stream, server_stream = streams or trio.testing.memory_stream_pair()
    accepted: list[WebSocketConnection] = []

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_stream, **(server or {}))
        accepted.append(await request.accept())

    async with trio.open_nursery() as handshake:
        handshake.start_soon(serve)
        ws = await wrap_client_stream(nursery, client_stream, "localhost", "/", **(client or {}))
    return ws, accepted[0]


async def test_text_and_binary_round_trip(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery)
    await client.send_message("héllo")
    await client.send_message(b"\x00\xff")
    await client.send_message(bytearray(b"ba"))
    assert await server.get_message() == "héllo"
    assert await server.get_message() == b"\x00\xff"
    assert await server.get_message() == b"ba"
    await server.send_message("")
    assert await client.get_message() == ""


async def test_roles_and_metadata(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery)
    assert client.is_client and not client.is_server
    assert server.is_server and not server.is_client
    assert client.path == server.path == "/"
    assert client.subprotocol is None
    assert isinstance(client.local, str) and isinstance(client.remote, str)
    assert client.closed is None and server.closed is None


async def test_rejects_non_message_types(nursery: trio.Nursery) -> None:
    client, _ = await open_pair(nursery)
    with pytest.raises(TypeError):
        await client.send_message(42)  # type: ignore[arg-type]


async def test_fragmented_message_is_reassembled(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream)
    async with trio.open_nursery() as handshake:
        handshake.start_soon(peer.open)
        request = await wrap_server_stream(nursery, server_stream)
        server = await request.accept()
    await peer.send(TextMessage("frag", message_finished=False))
    await peer.send(TextMessage("ment", message_finished=False))
    await peer.send(TextMessage("ed", message_finished=True))
    await peer.send(BytesMessage(b"\x01", message_finished=False))
    await peer.send(BytesMessage(b"\x02", message_finished=True))
    assert await server.get_message() == "fragmented"
    assert await server.get_message() == b"\x01\x02"


async def test_concurrent_sends_arrive_whole_and_complete(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery, server={"message_queue_size": math.inf})

    async def sender(n: int) -> None:
        for i in range(50):
            await client.send_message(f"{n}:{i}:" + "x" * (i * 37))

    async with trio.open_nursery() as senders:
        for n in range(8):
            senders.start_soon(sender, n)
    received = [await server.get_message() for _ in range(400)]
    assert sorted(received) == sorted(f"{n}:{i}:" + "x" * (i * 37)
                                      for n in range(8) for i in range(50))
    # Each sender's own messages keep their order.
    for n in range(8):
        mine = [m for m in received if isinstance(m, str) and m.startswith(f"{n}:")]
        assert [int(m.split(":")[1]) for m in mine] == list(range(50))


async def test_concurrent_long_sends_through_a_slow_stream_arrive_intact(
        nursery: trio.Nursery) -> None:
    # Long frames are built in shared scratch buffers; writes that wait on the
    # stream must still send each frame's own bytes.
    client, server = await open_pair(nursery, streams=trio.testing.lockstep_stream_pair(),
                                     server={"message_queue_size": math.inf})
    messages = {n: [bytes([n, i]) * 40000 for i in range(4)] for n in range(3)}

    async def sender(n: int) -> None:
        for message in messages[n]:
            await client.send_message(message)

    async with trio.open_nursery() as senders:
        for n in messages:
            senders.start_soon(sender, n)
    received = [await server.get_message() for _ in range(12)]
    for n, sent in messages.items():
        assert [m for m in received if m[:1] == bytes([n])] == sent


async def open_raw_client(
    nursery: trio.Nursery, streams: tuple[Any, Any], **server: Any
) -> tuple[RawPeer, WebSocketConnection]:
    """A client driven by hand, connected to our server over ``streams``."""
    client_stream, server_stream = streams
    peer = RawPeer(client_stream)
    async with trio.open_nursery() as handshake:
        handshake.start_soon(peer.open)
        request = await wrap_server_stream(nursery, server_stream, **server)
        ws = await request.accept()
    return peer, ws


async def count_sends(peer: RawPeer, counter: list[int]) -> None:
    """Send the messages m0, m1, ... one write each, counting the writes that returned."""
    while True:
        await peer.send(TextMessage(f"m{counter[0]}"))
        counter[0] += 1


async def test_queue_is_backpressure_not_memory(nursery: trio.Nursery) -> None:
    # A lockstep pair has no buffer: send_all only returns once the reader took
    # the bytes. A peer of our own would first fill its write buffer (see
    # test_a_flood_to_a_peer_that_does_not_read_is_bounded_by_both_buffers),
    # so a hand-driven one writes a frame at a time.
    peer, server = await open_raw_client(nursery, trio.testing.lockstep_stream_pair())
    sent = [0]
    nursery.start_soon(count_sends, peer, sent)
    await trio.testing.wait_all_tasks_blocked()
    # One message sits in the queue (size 1), one waits in the reader, the third send blocks.
    assert sent == [2]
    assert await server.get_message() == "m0"
    await trio.testing.wait_all_tasks_blocked()
    assert sent == [3]
    assert await server.get_message() == "m1"


async def test_queue_size_zero_hands_over_directly(nursery: trio.Nursery) -> None:
    peer, server = await open_raw_client(nursery, trio.testing.lockstep_stream_pair(),
                                         message_queue_size=0)
    sent = [0]
    nursery.start_soon(count_sends, peer, sent)
    await trio.testing.wait_all_tasks_blocked()
    assert sent == [1]  # the reader holds one message until someone takes it
    assert await server.get_message() == "m0"
    await trio.testing.wait_all_tasks_blocked()
    assert sent == [2]  # ... and then reads the next one only
    assert await server.get_message() == "m1"


async def test_a_flood_to_a_peer_that_does_not_read_is_bounded_by_both_buffers(
        nursery: trio.Nursery) -> None:
    # Our sends return until our write buffer is full, then wait: what a
    # sender holds is bounded by it, and what the receiver holds by its queue
    # (size 1) and one read. Reading lets the sender go on, in order.
    client, server = await open_pair(nursery, streams=trio.testing.lockstep_stream_pair())
    flood = Flood(client, 2**10)
    nursery.start_soon(flood.run)
    await trio.testing.wait_all_tasks_blocked()
    flood.assert_bounded(held_elsewhere=RECEIVE_SIZE + 2 * flood.size)
    with trio.fail_after(10):
        for taken in range(3 * len(flood.sent)):
            assert await server.get_message() == flood.sent[taken]
    await trio.testing.wait_all_tasks_blocked()
    assert len(flood.sent) > taken + 1  # it went on as messages were taken
    flood.assert_bounded(held_elsewhere=RECEIVE_SIZE + 2 * flood.size, taken=taken + 1)


async def test_oversized_message_closes_with_1009(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery, server={"max_message_size": 1000})
    await client.send_message(b"a" * 1000)  # exactly the limit is fine
    await client.send_message(b"a" * 1001)
    assert await server.get_message() == b"a" * 1000
    with pytest.raises(ConnectionClosed) as caught:
        await server.get_message()
    assert caught.value.reason.code == 1009
    assert server.closed is not None and server.closed.name == "MESSAGE_TOO_BIG"
    with pytest.raises(ConnectionClosed) as caught:
        await client.get_message()
    assert caught.value.reason.code == 1009


async def test_size_limit_counts_characters_of_text(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery, server={"max_message_size": 10})
    await client.send_message("é" * 10)  # 20 bytes of UTF-8, 10 characters
    assert await server.get_message() == "é" * 10


async def test_size_limit_applies_while_fragments_arrive(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream)
    async with trio.open_nursery() as handshake:
        handshake.start_soon(peer.open)
        request = await wrap_server_stream(nursery, server_stream, max_message_size=1000)
        server = await request.accept()
    await peer.send(BytesMessage(b"x" * 600, message_finished=False))
    await peer.send(BytesMessage(b"x" * 600, message_finished=False))
    # The message never finishes, yet the server closes as soon as it is too big.
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1009
    with pytest.raises(ConnectionClosed):
        await server.get_message()


async def test_unlimited_size_and_queue(nursery: trio.Nursery) -> None:
    client, server = await open_pair(
        nursery, server={"max_message_size": math.inf, "message_queue_size": math.inf})
    for _ in range(20):
        await client.send_message(b"z" * 200_000)
    for _ in range(20):
        assert await server.get_message() == b"z" * 200_000


async def test_close_codes_and_reasons_reach_both_sides(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery)
    await client.aclose(4001, "done here")
    assert client.closed == CloseReason(4001, "done here")
    assert client.closed.name == "PRIVATE_RESERVED"
    with pytest.raises(ConnectionClosed) as caught:
        await server.get_message()
    assert caught.value.reason == CloseReason(4001, "done here")
    await client.aclose()  # idempotent
    await server.aclose()
    assert client.closed == CloseReason(4001, "done here")


async def test_a_waiting_getter_sees_our_close_even_when_aclose_yields(
        nursery: trio.Nursery) -> None:
    # aclose() may pass through the scheduler when the shared call budget runs
    # out; a getter woken in that pass must already find our code and reason.
    # Trio runs the woken tasks in a random order, so the getter runs first
    # about half the time: 16 rounds.
    seen: list[CloseReason] = []
    for _ in range(16):
        client, _server = await open_pair(nursery)

        async def wait_for_a_message(client: WebSocketConnection = client) -> None:
            with pytest.raises(ConnectionClosed) as caught:
                await client.get_message()
            seen.append(caught.value.reason)

        nursery.start_soon(wait_for_a_message)
        await trio.testing.wait_all_tasks_blocked()
        _budget._left = 1  # the next call spends the budget and yields
        await client.aclose(1013, "try later")
        await trio.testing.wait_all_tasks_blocked()
    assert seen == [CloseReason(1013, "try later")] * 16


async def test_messages_before_remote_close_are_still_delivered(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery, client={"message_queue_size": 5})
    await server.send_message("one")
    await server.send_message("two")
    await server.aclose()  # returns after the client answered the close
    assert client.closed is not None and client.closed.code == 1000
    assert await client.get_message() == "one"
    assert await client.get_message() == "two"
    with pytest.raises(ConnectionClosed):
        await client.get_message()


async def test_local_close_discards_pending_messages(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery, client={"message_queue_size": 5})
    await server.send_message("one")
    await trio.testing.wait_all_tasks_blocked()
    await client.aclose()
    with pytest.raises(ConnectionClosed):
        await client.get_message()


async def test_operations_after_close_raise(nursery: trio.Nursery) -> None:
    client, _ = await open_pair(nursery)
    await client.aclose()
    for operation in (client.send_message("x"), client.ping(), client.pong()):
        with pytest.raises(ConnectionClosed):
            await operation


async def test_unsendable_close_code_is_refused(nursery: trio.Nursery) -> None:
    client, _ = await open_pair(nursery)
    for code in (999, 1004, 1005, 1006, 1015, 2000, 5000):
        with pytest.raises(ValueError):
            await client.aclose(code)
    assert client.closed is None


async def test_vanished_peer_gives_1006(nursery: trio.Nursery) -> None:
    client, peer = await client_and_raw_server(nursery)
    await trio.aclose_forcefully(peer.stream)
    with pytest.raises(ConnectionClosed) as caught:
        await client.get_message()
    assert caught.value.reason.code == 1006
    assert client.closed is not None and client.closed.name == "ABNORMAL_CLOSURE"


async def test_cancelled_blocked_send_does_nothing(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    client, server = await open_pair(nursery, streams=trio.testing.lockstep_stream_pair())
    flood = Flood(client, 1000)
    with trio.move_on_after(5) as scope:
        await flood.run()  # the server does not read, so a send soon waits for room
    assert scope.cancelled_caught
    flood.assert_bounded(held_elsewhere=RECEIVE_SIZE + 2 * flood.size)
    # It did nothing: the connection works on, and nothing of it ever arrives.
    assert client.closed is None and server.closed is None
    async with trio.open_nursery() as after:
        after.start_soon(client.send_message, b"after")  # waits for room, then goes last
        for message in flood.sent:
            assert await server.get_message() == message
        assert await server.get_message() == b"after"
    await server.send_message("back")
    assert await client.get_message() == "back"


async def test_connection_is_an_async_context_manager(nursery: trio.Nursery) -> None:
    client, server = await open_pair(nursery)
    async with client:
        await client.send_message("in")
    assert client.closed == CloseReason(1000, None)
    assert await server.get_message() == "in"


async def test_tcp_endpoints(echo_server: Any) -> None:
    async with open_websocket_url(f"ws://127.0.0.1:{echo_server.port}/x") as ws:
        assert isinstance(ws.remote, Endpoint) and isinstance(ws.local, Endpoint)
        assert ws.remote.port == echo_server.port
        assert str(ws.remote.address) == "127.0.0.1"
        assert ws.remote.url == f"ws://127.0.0.1:{echo_server.port}"
        assert not ws.remote.is_ssl


async def test_send_after_peer_close_is_parsed_but_not_yet_seen(nursery: trio.Nursery) -> None:
    # A message and the peer's close frame arrive in one read. While the
    # message is being handed over, the close is already parsed: a reply to
    # that message must fail cleanly with the peer's close, not crash.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream, ConnectionType.SERVER)

    async def answer() -> None:
        await peer.next_event()
        await peer.send(AcceptConnection())

    nursery.start_soon(answer)
    client = await wrap_client_stream(nursery, client_stream, "localhost", "/",
                                      message_queue_size=0)
    await server_stream.send_all(peer.ws.send(TextMessage("last words"))
                                 + peer.ws.send(CloseConnection(4000, "bye")))
    assert await client.get_message() == "last words"
    with pytest.raises(ConnectionClosed) as caught:
        await client.send_message("too late")
    assert caught.value.reason == CloseReason(4000, "bye")
