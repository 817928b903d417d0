"""wss:// on both sides, with certificates from a throwaway CA."""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
import trustme
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, CloseConnection, Message

from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    open_websocket,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket_core.toolkit import TLSStream

from .conftest import HOST, RawPeer, echo_handler

LIMIT = 10  # seconds: a TLS stall must fail, not hang the suite


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(nursery: trio.Nursery, ca: trustme.CA) -> int:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "localhost").configure_cert(context)
    server = await nursery.start(serve_websocket, echo_handler, HOST, 0, context)
    assert server.listeners[0].is_ssl
    return int(server.port)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_wss_echo_by_url(tls_server: int, ca: trustme.CA) -> None:
    async with open_websocket_url(f"wss://{HOST}:{tls_server}/secure", client_context(ca)) as ws:
        await ws.send_message("secret")
        assert await ws.get_message() == "secret"
        assert isinstance(ws.remote, Endpoint) and ws.remote.is_ssl
        assert ws.remote.url == f"wss://{HOST}:{tls_server}"


async def test_wss_echo_by_host(tls_server: int, ca: trustme.CA) -> None:
    async with open_websocket("localhost", tls_server, "/", use_ssl=client_context(ca)) as ws:
        await ws.send_message(b"bytes")
        assert await ws.get_message() == b"bytes"


async def test_client_verifies_certificates_by_default(tls_server: int, ca: trustme.CA) -> None:
    from trio_websocket import ConnectionFailed, HandshakeError

    with pytest.raises(ConnectionFailed) as url_failure:
        async with open_websocket_url(f"wss://{HOST}:{tls_server}/"):
            pass
    with pytest.raises(ConnectionFailed) as host_failure:
        async with open_websocket(HOST, tls_server, "/", use_ssl=True):
            pass
    # Either way of catching it works, and the TLS error is the cause.
    for failure in (url_failure.value, host_failure.value):
        assert isinstance(failure, HandshakeError) and isinstance(failure, OSError)
        assert isinstance(failure.__cause__, ssl.SSLCertVerificationError)
        assert failure.filename == f"{HOST}:{tls_server}"
    # The failed clients did not hurt the server.
    async with open_websocket_url(f"wss://{HOST}:{tls_server}/", client_context(ca)) as ws:
        await ws.send_message("ok")
        assert await ws.get_message() == "ok"


async def test_plain_client_against_tls_server(tls_server: int, ca: trustme.CA) -> None:
    from trio_websocket import HandshakeError

    with pytest.raises(HandshakeError):
        async with open_websocket(HOST, tls_server, "/", use_ssl=False, connect_timeout=5):
            pass


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(context)
    return context


async def hand_made_server(nursery: trio.Nursery, ca: trustme.CA,
                           serve: Callable[[TLSStream], Awaitable[None]]) -> int:
    """A TLS server driven by hand: ``serve`` gets each connection's TLSStream."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    context = server_context(ca)

    async def accept() -> None:
        async with listeners[0] as listener:
            tcp = await listener.accept()
            async with TLSStream(tcp, context, server_side=True) as tls:
                await serve(tls)

    nursery.start_soon(accept)
    return int(listeners[0].socket.getsockname()[1])


async def assert_message_then_close(port: int, ca: trustme.CA, message: str, code: int) -> None:
    """Our client gets ``message`` from the server at ``port``, then the end, with ``code``."""
    with trio.fail_after(LIMIT):
        async with open_websocket_url(f"wss://{HOST}:{port}/", client_context(ca)) as ws:
            assert await ws.get_message() == message
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == code


async def test_a_message_in_its_own_record_right_behind_the_upgrade(
        nursery: trio.Nursery, ca: trustme.CA) -> None:
    # The 101 and a message in two TLS records of one TCP write: reading the
    # head decrypts the first record only, and the second must not wait in the
    # TLS buffers for more bytes that will never come.
    async def serve(tls: TLSStream) -> None:
        peer = RawPeer(tls, ConnectionType.SERVER)
        await peer.next_event()  # the request
        records = (tls.encrypt(peer.ws.send(AcceptConnection()))
                   + tls.encrypt(peer.ws.send(Message(data="right behind"))))
        await tls.transport_stream.send_all(records)
        await peer.next_event()  # until the client goes

    port = await hand_made_server(nursery, ca, serve)
    with trio.fail_after(LIMIT):
        async with open_websocket_url(f"wss://{HOST}:{port}/", client_context(ca)) as ws:
            assert await ws.get_message() == "right behind"


async def test_bytes_that_are_not_tls_after_the_upgrade_end_in_1006(
        nursery: trio.Nursery, ca: trustme.CA) -> None:
    async def serve(tls: TLSStream) -> None:
        peer = RawPeer(tls, ConnectionType.SERVER)
        await peer.next_event()
        await peer.send(AcceptConnection())
        await tls.transport_stream.send_all(b"\x17\x03\x03\x00\x05hello")  # a forged record

    port = await hand_made_server(nursery, ca, serve)
    with trio.fail_after(LIMIT):
        async with open_websocket_url(f"wss://{HOST}:{port}/", client_context(ca)) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1006


async def test_close_notify_without_a_close_frame_ends_in_1006(
        nursery: trio.Nursery, ca: trustme.CA) -> None:
    listeners = await trio.open_tcp_listeners(0, host=HOST)

    async def serve() -> None:
        async with listeners[0] as listener:
            tls = trio.SSLStream(await listener.accept(), server_context(ca), server_side=True)
            peer = RawPeer(tls, ConnectionType.SERVER)
            await peer.next_event()
            await peer.send(AcceptConnection())
            await peer.send(Message(data="last words"))
            # Not https_compatible: close_notify goes out, then it waits for
            # the client's, which never comes (it closes TCP instead).
            with contextlib.suppress(trio.BrokenResourceError):
                await tls.aclose()

    nursery.start_soon(serve)
    port = listeners[0].socket.getsockname()[1]
    await assert_message_then_close(port, ca, "last words", 1006)


async def test_large_and_small_messages_interleaved_both_ways(tls_server: int,
                                                              ca: trustme.CA) -> None:
    # Many records per message, and many messages per record, in order.
    big = [os.urandom(2**20), "é" * 300_000]
    small = [f"small {i}" for i in range(300)]
    sent: list[str | bytes] = [*small[:100], big[0], *small[100:200], big[1], *small[200:]]
    with trio.fail_after(LIMIT):
        async with open_websocket_url(f"wss://{HOST}:{tls_server}/", client_context(ca),
                                      max_message_size=2**21) as ws:
            async with trio.open_nursery() as nursery:
                async def send_all() -> None:
                    for message in sent:
                        await ws.send_message(message)
                nursery.start_soon(send_all)
                received = [await ws.get_message() for _ in sent]
    assert received == sent


async def test_a_forged_record_right_behind_a_message_ends_in_1006(
        nursery: trio.Nursery, ca: trustme.CA) -> None:
    # The getter that took the message reads the socket itself next (raw
    # path): a record that fails to decrypt must end the connection there too,
    # not leave it waiting for bytes that will never be valid.
    async def serve(tls: TLSStream) -> None:
        peer = RawPeer(tls, ConnectionType.SERVER)
        await peer.next_event()
        await peer.send(AcceptConnection())
        await peer.send(Message(data="first"))
        await tls.transport_stream.send_all(b"\x17\x03\x03\x00\x05hello")
        # Silent until the client goes (it may answer the forgery with an alert).
        with contextlib.suppress(trio.BrokenResourceError):
            await peer.next_event()

    port = await hand_made_server(nursery, ca, serve)
    await assert_message_then_close(port, ca, "first", 1006)


async def test_frames_and_close_notify_in_the_read_behind_the_upgrade(
        nursery: trio.Nursery, ca: trustme.CA) -> None:
    # The 101, a message and a close frame in one record, close_notify right
    # behind it, in one TCP write: the message and the peer's close code arrive.
    async def serve(tls: TLSStream) -> None:
        peer = RawPeer(tls, ConnectionType.SERVER)
        await peer.next_event()
        frames = b"".join(peer.ws.send(event) for event in (
            AcceptConnection(), Message(data="goodbye"), CloseConnection(code=4000)))
        records = tls.encrypt(frames)
        # Our TLSStream never sends close_notify itself; its SSLObject can.
        with contextlib.suppress(ssl.SSLWantReadError):
            tls._object.unwrap()
        await tls.transport_stream.send_all(records + tls.pending_output())
        await peer.next_event()

    port = await hand_made_server(nursery, ca, serve)
    await assert_message_then_close(port, ca, "goodbye", 4000)


async def test_a_server_that_closes_during_the_tls_handshake_is_a_connection_failure(
        nursery: trio.Nursery) -> None:
    from trio_websocket import ConnectionFailed

    listeners = await trio.open_tcp_listeners(0, host=HOST)

    async def serve() -> None:
        async with listeners[0] as listener, await listener.accept() as tcp:
            await tcp.receive_some()  # the ClientHello, then EOF

    nursery.start_soon(serve)
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(LIMIT), pytest.raises(ConnectionFailed) as failed:
        async with open_websocket_url(f"wss://{HOST}:{port}/", ssl.create_default_context()):
            pass
    assert isinstance(failed.value.__cause__, ssl.SSLError)


async def test_our_tls_stream_over_any_stream_takes_the_generic_path(
        nursery: trio.Nursery, ca: trustme.CA) -> None:
    # Only a TLSStream straight over TCP lets the connection use the socket.
    client_side, server_side = trio.testing.memory_stream_pair()
    client_tls = TLSStream(client_side, client_context(ca), server_side=False,  # type: ignore[arg-type]
                           server_hostname=HOST)
    server_tls = TLSStream(server_side, server_context(ca), server_side=True)  # type: ignore[arg-type]

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_tls)
        ws = await request.accept()
        await ws.send_message(await ws.get_message())

    nursery.start_soon(serve)
    with trio.fail_after(LIMIT):
        ws = await wrap_client_stream(nursery, client_tls, HOST, "/")
        await ws.send_message("over memory")
        assert await ws.get_message() == "over memory"
        await ws.aclose()


async def test_tls_stream_keeps_the_stream_contract(ca: trustme.CA) -> None:
    client_side, server_side = trio.testing.memory_stream_pair()
    client = TLSStream(client_side, client_context(ca), server_side=False,  # type: ignore[arg-type]
                       server_hostname=HOST)
    server = TLSStream(server_side, server_context(ca), server_side=True)  # type: ignore[arg-type]
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            # A sending and a receiving task may both start the handshake.
            nursery.start_soon(client.send_all, b"ping")
            nursery.start_soon(server.send_all, b"pong and more")
            assert await client.receive_some(4) == b"pong"
            assert await server.receive_some() == b"ping"
        with pytest.raises(ValueError):
            await client.receive_some(0)
        # With plaintext already decrypted it is still a checkpoint, and a
        # cancellation there loses nothing.
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await client.receive_some()
        assert await client.receive_some() == b" and more"


async def test_both_ends_may_handshake_explicitly_then_wait(ca: trustme.CA) -> None:
    # do_handshake() itself sends the last flight: a peer waiting for data
    # after its own do_handshake() must not wait for a Finished never sent.
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        client_side, server_side = trio.testing.memory_stream_pair()
        context = client_context(ca)
        context.maximum_version = version
        client = TLSStream(client_side, context, server_side=False,  # type: ignore[arg-type]
                           server_hostname=HOST)
        server = TLSStream(server_side, server_context(ca), server_side=True)  # type: ignore[arg-type]
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.do_handshake)
                await server.do_handshake()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.send_all, b"server first")
                assert await client.receive_some() == b"server first"
