"""Ping/pong: waiting for the matching pong, older pings released, unique payloads."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto.events import BytesMessage, Ping, Pong, TextMessage

from trio_websocket import ConnectionClosed

from .conftest import client_and_raw_server


async def test_ping_waits_for_its_pong(nursery: trio.Nursery) -> None:
    client, peer = await client_and_raw_server(nursery)
    done = trio.Event()

    async def ping() -> None:
        await client.ping(b"abc")
        done.set()

    nursery.start_soon(ping)
    event = await peer.next_event()
    assert event == Ping(payload=b"abc")
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()
    await peer.send(Pong(payload=b"abc"))
    await done.wait()


async def test_pong_releases_older_pings_only(nursery: trio.Nursery) -> None:
    client, peer = await client_and_raw_server(nursery)
    answered: list[bytes] = []

    async def ping(payload: bytes) -> None:
        await client.ping(payload)
        answered.append(payload)

    for payload in (b"1", b"2", b"3"):
        nursery.start_soon(ping, payload)
        assert await peer.next_event() == Ping(payload=payload)
    await peer.send(Pong(payload=b"2"))
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(answered) == [b"1", b"2"]
    await peer.send(Pong(payload=b"unsolicited"))  # ignored
    await peer.send(Pong(payload=b"3"))
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(answered) == [b"1", b"2", b"3"]


async def test_duplicate_in_flight_payload_is_refused(nursery: trio.Nursery) -> None:
    client, peer = await client_and_raw_server(nursery)
    nursery.start_soon(client.ping, b"same")
    await peer.next_event()
    with pytest.raises(ValueError):
        await client.ping(b"same")
    await peer.send(Pong(payload=b"same"))
    await trio.testing.wait_all_tasks_blocked()
    # Answered, so the payload is free again.
    nursery.start_soon(client.ping, b"same")
    assert await peer.next_event() == Ping(payload=b"same")


async def test_default_payloads_are_random_and_distinct(nursery: trio.Nursery) -> None:
    client, peer = await client_and_raw_server(nursery)
    payloads = set()
    for _ in range(20):
        nursery.start_soon(client.ping)
        event = await peer.next_event()
        assert isinstance(event, Ping) and len(event.payload) == 4
        payloads.add(bytes(event.payload))
    assert len(payloads) == 20


async def test_cancelled_ping_frees_its_payload(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    client, peer = await client_and_raw_server(nursery)
    with trio.move_on_after(1):
        await client.ping(b"p")
    await peer.next_event()
    nursery.start_soon(client.ping, b"p")  # no ValueError: the old one is forgotten
    assert await peer.next_event() == Ping(payload=b"p")


async def test_lost_connection_fails_waiting_ping(nursery: trio.Nursery) -> None:
    client, peer = await client_and_raw_server(nursery)

    async def drop() -> None:
        await peer.next_event()
        await trio.aclose_forcefully(peer.stream)

    nursery.start_soon(drop)
    with pytest.raises(ConnectionClosed) as caught:
        await client.ping(b"lost")
    assert caught.value.reason.code == 1006


async def test_unsolicited_pong_and_automatic_reply(nursery: trio.Nursery) -> None:
    client, peer = await client_and_raw_server(nursery)
    await client.pong(b"beat")
    assert await peer.next_event() == Pong(payload=b"beat")
    await client.pong()
    assert await peer.next_event() == Pong(payload=b"")
    await peer.send(Ping(payload=b"hi"))
    assert await peer.next_event() == Pong(payload=b"hi")


async def test_ping_against_our_own_server(echo_server: trio.abc.Stream) -> None:
    from trio_websocket import open_websocket

    async with open_websocket("127.0.0.1", echo_server.port, "/", use_ssl=False) as ws:  # type: ignore[attr-defined]
        with trio.fail_after(5):
            await ws.ping()
            await ws.ping(b"named")


async def test_reader_answers_pings_while_a_large_send_is_under_way(
        nursery: trio.Nursery) -> None:
    # No buffering at all: the client's big send only progresses as the peer reads.
    client, peer = await client_and_raw_server(nursery, trio.testing.lockstep_stream_pair())
    big = b"b" * 2**20
    nursery.start_soon(client.send_message, big)
    await trio.testing.wait_all_tasks_blocked()
    with trio.fail_after(5):
        # The peer pings and then talks before reading; a reader stuck behind
        # the big send would never take these bytes, and both sides would hang.
        await peer.send(Ping(payload=b"during"))
        await peer.send(TextMessage("meanwhile"))
        assert await client.get_message() == "meanwhile"
        received = b""
        while True:
            event = await peer.next_event()
            if isinstance(event, BytesMessage):
                received += event.data
            elif isinstance(event, Pong):
                break
        assert received == big
