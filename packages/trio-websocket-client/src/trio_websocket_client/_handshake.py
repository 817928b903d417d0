"""The client's side of the opening handshake, over any trio stream."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import RejectConnection, RejectData, Request
from wsproto.utilities import RemoteProtocolError

from trio_websocket_core import (
    DEFAULT_COMPRESSION,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    ConnectionFailed,
    ConnectionRejected,
    HandshakeError,
    PerMessageDeflate,
    WebSocketConnection,
)
from trio_websocket_core.toolkit import (
    RECEIVE_SIZE,
    FrameProtocol,
    Header,
    headers_except,
    receive_http_head,
)

from ._upgrade import check_accept, new_key, request, status_of

__all__ = ["wrap_client_stream"]

logger = logging.getLogger("trio_websocket_client")

# Headers the handshake writes itself; a user's copy would duplicate them.
_RESERVED = frozenset({
    b"host", b"upgrade", b"connection", b"sec-websocket-key",
    b"sec-websocket-version", b"sec-websocket-protocol", b"sec-websocket-extensions",
})


async def wrap_client_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    subprotocols: Iterable[str] | None = None,
    extra_headers: Iterable[Header] | None = None,
    message_queue_size: float = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: float = DEFAULT_MAX_MESSAGE_SIZE,
    compression: PerMessageDeflate | None = DEFAULT_COMPRESSION,
) -> WebSocketConnection:
    """Run the client handshake over an already connected stream.

    ``host`` goes into the ``Host`` header as given; ``resource`` is the
    path (and query) requested. ``compression`` is offered to the server
    (``None``, or ``max_message_size=math.inf``: no offer). The connection's reader task runs in
    ``nursery``. On any failure the stream is closed.

    :raises ConnectionRejected: if the server answers with an HTTP error.
    :raises HandshakeError: if the server's answer is not a valid upgrade.
    :raises ValueError: for a header or subprotocol that is not valid HTTP.
    """
    if max_message_size == math.inf:
        # Nothing would bound what a compressed message inflates to (deflate
        # reaches about 1,000 to 1): with no limit, memory follows the bytes
        # received only if they are not compressed.
        compression = None
    try:
        return await _handshake(
            nursery, stream, host, resource, list(subprotocols or ()),
            headers_except(extra_headers, _RESERVED), message_queue_size, max_message_size,
            compression,
        )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def _handshake(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    subprotocols: list[str],
    extra_headers: list[tuple[bytes, bytes]],
    message_queue_size: float,
    max_message_size: float,
    compression: PerMessageDeflate | None,
) -> WebSocketConnection:
    key = new_key()
    data = request(host, resource, key, subprotocols, compression, extra_headers)
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        if isinstance(exc.__cause__, OSError):  # a TLS failure is a network error, as in connect
            raise ConnectionFailed.wrap(exc.__cause__, host) from exc.__cause__
        raise HandshakeError(f"connection lost during the opening handshake: {exc!r}") from exc
    head, rest = await receive_http_head(stream)
    status = status_of(head)
    if 100 <= status < 200 and status != 101:
        # We never ask for one (no Expect: 100-continue), so it answers nothing of ours.
        raise HandshakeError(f"unexpected interim response: HTTP {status}")
    if status == 101:
        accepted = check_accept(head, key, subprotocols, compression)
        protocol = FrameProtocol(True, accepted.deflate, max_message_size)
        protocol.receive_data(rest)  # frames the server sent right behind the handshake
        return WebSocketConnection(
            nursery, stream, protocol,
            path=resource,
            subprotocol=accepted.subprotocol,
            handshake_headers=accepted.headers,
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
        )
    # A refusal: wsproto's HTTP machinery reads its body however it is framed.
    ws = WSConnection(ConnectionType.CLIENT)
    ws.send(Request(host=host, target=resource))
    try:
        ws.receive_data(head)
        response = next(ws.events(), None)
    except (RemoteProtocolError, ValueError) as exc:  # ValueError: e.g. bytes that are not ASCII
        raise HandshakeError(f"invalid handshake response: {exc}") from exc
    if isinstance(response, RejectConnection):
        body = b""
        if response.has_body:
            body = await _rejection_body(stream, ws, rest, max_message_size)
        logger.debug("server rejected the handshake with HTTP %d", response.status_code)
        raise ConnectionRejected(response.status_code, tuple(response.headers), body or None)
    raise HandshakeError(f"unexpected handshake response: {response!r}")


async def _rejection_body(
    stream: trio.abc.Stream, ws: WSConnection, data: bytes | bytearray, limit: float
) -> bytes:
    """Collect a rejection's body, up to ``limit`` bytes or until the stream ends."""
    body = bytearray()
    while True:
        # Events first, even with no new data: an empty body (Content-Length: 0)
        # already ended with the head, and the server may keep the connection open.
        try:
            if data:
                ws.receive_data(bytes(data))
            for event in ws.events():
                if isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        return bytes(body)
        except (RemoteProtocolError, ValueError):
            return bytes(body)
        if len(body) >= limit:
            return bytes(body)
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return bytes(body)
        if not data:
            return bytes(body)
