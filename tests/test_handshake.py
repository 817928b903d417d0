"""The opening handshake: negotiation, headers, rejection and malformed requests."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, TextMessage
from wsproto.utilities import generate_accept_token as accept_token

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketRequest,
    connect_websocket,
    open_websocket,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket_core._http import Header

from .conftest import HOST, RawPeer


async def start_server(nursery: trio.Nursery, handler: Any, **options: Any) -> int:
    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    return int(server.port)


async def raw_http(port: int, request: bytes) -> bytes:
    """Send raw bytes to the server and return everything it answers before closing."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(request)
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
    return response


async def test_subprotocol_negotiation(nursery: trio.Nursery) -> None:
    seen: list[tuple[str, ...]] = []

    async def handler(request: WebSocketRequest) -> None:
        seen.append(request.proposed_subprotocols)
        ws = await request.accept(subprotocol="chat.v2")
        assert ws.subprotocol == "chat.v2"
        await ws.send_message(ws.subprotocol)

    port = await start_server(nursery, handler)
    async with open_websocket(HOST, port, "/", use_ssl=False,
                              subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert await ws.get_message() == "chat.v2"
    assert seen == [("chat.v1", "chat.v2")]


async def test_no_subprotocol_when_server_picks_none(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.accept()

    port = await start_server(nursery, handler)
    async with open_websocket(HOST, port, "/", use_ssl=False, subprotocols=["x"]) as ws:
        assert ws.subprotocol is None


async def test_accepting_an_unproposed_subprotocol_is_an_error(nursery: trio.Nursery) -> None:
    errors: list[BaseException] = []

    async def handler(request: WebSocketRequest) -> None:
        try:
            await request.accept(subprotocol="other")
        except ValueError as exc:
            errors.append(exc)
        await request.accept()

    port = await start_server(nursery, handler)
    async with open_websocket(HOST, port, "/", use_ssl=False, subprotocols=["mine"]) as ws:
        assert ws.subprotocol is None
    assert len(errors) == 1


async def test_extra_headers_both_ways(nursery: trio.Nursery) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: WebSocketRequest) -> None:
        seen["request"] = request.headers
        ws = await request.accept(extra_headers=[(b"X-Server", b"two"), ("X-Text", "str ok")])
        seen["server"] = ws.handshake_headers
        await ws.get_message()

    port = await start_server(nursery, handler)
    async with open_websocket(HOST, port, "/", use_ssl=False, extra_headers=[
            (b"X-Client", b"one"), (b"Sec-WebSocket-Key", b"ignored")]) as ws:
        assert ("x-server", "two") in ws.handshake_headers
        assert ("x-text", "str ok") in ws.handshake_headers
        assert all(name == name.lower() for name, _ in ws.handshake_headers)
        await ws.send_message("bye")
    assert (b"x-client", b"one") in seen["request"]
    # The handshake's own key wins over a user's copy.
    assert (b"sec-websocket-key", b"ignored") not in seen["request"]
    assert ("x-client", "one") in seen["server"]


async def test_path_and_query_reach_the_handler(nursery: trio.Nursery) -> None:
    paths: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        paths.append(request.path)
        ws = await request.accept()
        paths.append(ws.path)

    port = await start_server(nursery, handler)
    async with open_websocket_url(f"ws://{HOST}:{port}/chat/room?id=7&x=y") as ws:
        assert ws.path == "/chat/room?id=7&x=y"
    async with open_websocket_url(f"ws://{HOST}:{port}") as ws:
        assert ws.path == "/"
    assert paths == ["/chat/room?id=7&x=y"] * 2 + ["/"] * 2


async def test_reject_with_status_headers_and_body(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.reject(401, extra_headers=[(b"WWW-Authenticate", b"Basic")],
                             body=b"who are you?")

    port = await start_server(nursery, handler)
    with pytest.raises(ConnectionRejected) as caught:
        async with open_websocket(HOST, port, "/", use_ssl=False):
            pytest.fail("should not connect")
    assert caught.value.status_code == 401
    assert (b"www-authenticate", b"Basic") in caught.value.headers
    assert caught.value.body == b"who are you?"


async def test_reject_without_body(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.reject(404)

    port = await start_server(nursery, handler)
    with pytest.raises(ConnectionRejected) as caught:
        async with open_websocket(HOST, port, "/", use_ssl=False):
            pass
    assert caught.value.status_code == 404
    assert caught.value.body is None


async def test_request_is_answered_once(nursery: trio.Nursery) -> None:
    outcomes: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        with pytest.raises(ValueError):
            await request.reject(101)
        await request.accept()
        for answer in (request.accept(), request.reject(400)):
            try:
                await answer
            except RuntimeError:
                outcomes.append("refused")

    port = await start_server(nursery, handler)
    async with open_websocket(HOST, port, "/", use_ssl=False):
        pass
    assert outcomes == ["refused", "refused"]


async def test_handler_that_neither_accepts_nor_rejects_gives_403(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        pass

    port = await start_server(nursery, handler)
    with pytest.raises(ConnectionRejected) as caught:
        async with open_websocket(HOST, port, "/", use_ssl=False):
            pass
    assert caught.value.status_code == 403


async def test_handler_raising_before_accept_gives_500(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: WebSocketRequest) -> None:
        raise RuntimeError("boom")

    port = await start_server(nursery, handler)
    with pytest.raises(ConnectionRejected) as caught:
        async with open_websocket(HOST, port, "/", use_ssl=False):
            pass
    assert caught.value.status_code == 500
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


async def test_handler_raising_after_accept_closes_with_1011(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()
        raise RuntimeError("handler bug")

    port = await start_server(nursery, handler)
    async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
        await ws.send_message("trigger")
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
    assert caught.value.reason.code == 1011
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].name == "trio_websocket_server"


# The headers of a valid upgrade request, for the bad ones below to spoil.
UPGRADE = (b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"garbage\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # plain HTTP, no upgrade
    (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 426),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.0\r\nHost: x\r\n" + UPGRADE + b"\r\n", 400),  # not HTTP/1.1
    (b"GET / HTTP/1.1\r\n" + UPGRADE + b"\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: \xff\r\n" + UPGRADE + b"\r\n", 400),  # not a host name
    (b"GET / HTTP/1.1\r\nHost: x\r\n X-Folded: yes\r\n" + UPGRADE + b"\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n" + UPGRADE + b"\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + UPGRADE + b"\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + UPGRADE.replace(b"websocket", b"h2c") + b"\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n"
     + UPGRADE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"") + b"\r\n", 400),
    (b"GET /a b HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"\r\n", 400),
])
async def test_bad_requests_get_http_errors_and_server_lives_on(
        nursery: trio.Nursery, request_bytes: bytes, status: int) -> None:
    port = await start_server(nursery, _echo_once)
    response = await raw_http(port, request_bytes)
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    if status == 426:
        assert b"sec-websocket-version: 13" in response.lower()
    async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
        await ws.send_message("still here")
        assert await ws.get_message() == "still here"


async def _echo_once(request: WebSocketRequest) -> None:
    ws = await request.accept()
    await ws.send_message(await ws.get_message())


async def test_frames_right_behind_the_handshake_are_kept(nursery: trio.Nursery) -> None:
    # Client side: the server's 101 and its first frame arrive in one read.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = RawPeer(server_stream, ConnectionType.SERVER)

    async def eager_server() -> None:
        await server.next_event()
        await server_stream.send_all(server.ws.send(AcceptConnection())
                                     + server.ws.send(TextMessage("early")))

    nursery.start_soon(eager_server)
    client = await wrap_client_stream(nursery, client_stream, "localhost", "/")
    assert await client.get_message() == "early"

    # Server side: the request and the first frame arrive in one read.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    raw_client = RawPeer(client_stream)
    from wsproto.events import Request
    head = raw_client.ws.send(Request(host="localhost", target="/"))
    await client_stream.send_all(head + _masked_text(b"eager"))
    request = await wrap_server_stream(nursery, server_stream)
    ws = await request.accept()
    assert await ws.get_message() == "eager"


def _masked_text(payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def test_client_refuses_a_bad_accept_token(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def liar() -> None:
        await server_stream.receive_some()
        await server_stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n")

    nursery.start_soon(liar)
    with pytest.raises(HandshakeError):
        await wrap_client_stream(nursery, client_stream, "localhost", "/")


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: {accept}\r\nBroken header\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: never-offered\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: x-unknown\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: {accept}\r\n\r\n",  # no Upgrade
    b"HTTP/2 101\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: {accept}\r\n\r\n",
])
async def test_client_refuses_an_invalid_acceptance(nursery: trio.Nursery,
                                                    response: bytes) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def server() -> None:
        request = await server_stream.receive_some()
        key = re.search(rb"Sec-WebSocket-Key: (\S+)", request)
        assert key is not None
        await server_stream.send_all(response.replace(b"{accept}", accept_token(key.group(1))))

    nursery.start_soon(server)
    with pytest.raises(HandshakeError):
        await wrap_client_stream(nursery, client_stream, "localhost", "/")


@pytest.mark.parametrize("headers", [
    [("X-Evil", "a\r\nSet-Cookie: forged=1")],
    [("X-Evil\r\nSet-Cookie", "forged=1")],
    [(b"X-Nul", b"a\x00b")],
])
async def test_headers_that_would_forge_others_are_refused(nursery: trio.Nursery,
                                                           headers: list[Header]) -> None:
    outcome: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        try:
            await request.accept(extra_headers=headers)
        except ValueError:
            outcome.append("accept refused")
        try:
            await request.reject(400, extra_headers=headers)
        except ValueError:
            outcome.append("reject refused")
        await request.reject(400)

    port = await start_server(nursery, handler)
    with pytest.raises(ValueError):
        await connect_websocket(nursery, HOST, port, "/", use_ssl=False, extra_headers=headers)
    with pytest.raises(ValueError):
        await connect_websocket(nursery, HOST, port, "/", use_ssl=False,
                                subprotocols=["chat, evil"])
    with pytest.raises(ConnectionRejected):
        await connect_websocket(nursery, HOST, port, "/", use_ssl=False)
    assert outcome == ["accept refused", "reject refused"]


async def test_server_hanging_up_mid_handshake(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def hang_up() -> None:
        await server_stream.receive_some()
        await server_stream.send_all(b"HTTP/1.1 101 Swi")
        await server_stream.aclose()

    nursery.start_soon(hang_up)
    with pytest.raises(HandshakeError) as caught:
        await wrap_client_stream(nursery, client_stream, "localhost", "/")
    assert not isinstance(caught.value, ConnectionRejected)


async def test_rejection_seen_by_raw_client_has_exact_body(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await request.reject(418, body=b"short and stout")

    port = await start_server(nursery, handler)
    stream = await trio.open_tcp_stream(HOST, port)
    peer = RawPeer(stream)
    answer = await peer.open()
    assert isinstance(answer, RejectConnection) and answer.status_code == 418
    body = b""
    while (event := await peer.next_event()) is not None:
        assert isinstance(event, RejectData)
        body += event.data
        if event.body_finished:
            break
    assert body == b"short and stout"
    await stream.aclose()


async def test_connection_refused_is_an_oserror() -> None:
    listener = trio.socket.socket()
    await listener.bind((HOST, 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(OSError):
        async with open_websocket(HOST, port, "/", use_ssl=False):
            pass


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "127.0.0.1:80", "ws:///nohost",
                                 "ws://127.0.0.1:0/"])
async def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        async with open_websocket_url(url):
            pass


async def test_ssl_context_with_plain_url_is_refused() -> None:
    import ssl

    with pytest.raises(ValueError):
        async with open_websocket_url("ws://127.0.0.1:1/", ssl.create_default_context()):
            pass
