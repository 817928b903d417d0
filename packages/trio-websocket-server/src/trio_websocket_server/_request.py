"""The server's side of the opening handshake: a request to accept or reject."""

from __future__ import annotations

import http
import logging
from collections.abc import Iterable

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.utilities import RemoteProtocolError

from trio_websocket_core import (
    DEFAULT_COMPRESSION,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    CloseReason,
    ConnectionClosed,
    Endpoint,
    HandshakeError,
    PerMessageDeflate,
    WebSocketConnection,
)
from trio_websocket_core._endpoint import stream_endpoints
from trio_websocket_core._http import (
    Header,
    HeadTooLarge,
    headers_except,
    receive_http_head,
)
from trio_websocket_core._protocol import FrameProtocol

__all__ = ["WebSocketRequest", "wrap_server_stream"]

logger = logging.getLogger("trio_websocket_server")

# Headers the handshake writes itself; a user's copy would duplicate them.
_ACCEPT_RESERVED = frozenset({
    b"upgrade", b"connection", b"sec-websocket-accept",
    b"sec-websocket-protocol", b"sec-websocket-extensions",
})
_REJECT_RESERVED = frozenset({b"content-length", b"transfer-encoding"})


class WebSocketRequest:
    """A client's opening handshake, waiting for the handler to accept or reject it."""

    # A handler usually keeps its request for the connection's whole life, so
    # the request keeps little: slots, and no handshake machinery once answered.
    __slots__ = ("_compression", "_connection", "_endpoints_cache", "_headers",
                 "_max_message_size", "_message_queue_size", "_nursery", "_path", "_stream",
                 "_subprotocols", "_trailing_data", "_ws")

    def __init__(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        ws: WSConnection,
        event: Request,
        trailing_data: bytes,
        message_queue_size: float,
        max_message_size: float,
        compression: PerMessageDeflate | None,
    ) -> None:
        """Built by :func:`wrap_server_stream`; not meant to be built directly."""
        self._nursery = nursery
        self._stream = stream
        self._ws: WSConnection | None = ws  # until the request is answered
        self._headers = event.extra_headers
        self._subprotocols = tuple(event.subprotocols)
        self._path = event.target
        self._trailing_data = trailing_data
        self._endpoints_cache: tuple[Endpoint | str, Endpoint | str] | None = None
        self._message_queue_size = message_queue_size
        self._max_message_size = max_message_size
        self._compression = compression
        self._connection: WebSocketConnection | None = None

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The request's headers as ``(name, value)`` byte pairs, names in lower case.

        wsproto keeps ``Host``, ``Sec-WebSocket-Protocol`` and
        ``Sec-WebSocket-Extensions`` apart: see :attr:`proposed_subprotocols`.
        """
        return list(self._headers)

    @property
    def proposed_subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offered, in its order of preference."""
        return self._subprotocols

    @property
    def path(self) -> str:
        """The requested resource: path and query string."""
        return self._path

    @property
    def _endpoints(self) -> tuple[Endpoint | str, Endpoint | str]:
        # Asked of the stream only if wanted before accept(); after it, the
        # connection has them already.
        if self._connection is not None:
            return self._connection.local, self._connection.remote
        if self._endpoints_cache is None:
            self._endpoints_cache = stream_endpoints(self._stream)
        return self._endpoints_cache

    @property
    def local(self) -> Endpoint | str:
        """The server's end of the connection."""
        return self._endpoints[0]

    @property
    def remote(self) -> Endpoint | str:
        """The client's end of the connection."""
        return self._endpoints[1]

    @property
    def _answered(self) -> bool:
        return self._ws is None

    def _claim(self) -> WSConnection:
        """Mark the request answered and hand over the handshake state, once."""
        ws = self._ws
        if ws is None:
            raise RuntimeError("this request was already accepted or rejected")
        self._ws = None
        return ws

    async def accept(
        self,
        *,
        subprotocol: str | None = None,
        extra_headers: Iterable[Header] | None = None,
    ) -> WebSocketConnection:
        """Complete the handshake and return the open connection.

        :param subprotocol: one of :attr:`proposed_subprotocols`, or ``None``.
        :param extra_headers: more ``(name, value)`` pairs for the response.
        :raises ValueError: if ``subprotocol`` was not proposed.
        :raises RuntimeError: if the request was already answered.
        :raises ConnectionClosed: if the client is gone.
        """
        if subprotocol is not None and subprotocol not in self._subprotocols:
            raise ValueError(f"subprotocol {subprotocol!r} was not proposed by the client")
        ws = self._claim()
        compression = self._compression
        deflate = None if compression is None else compression.extension(self._max_message_size)
        data = ws.send(AcceptConnection(
            subprotocol=subprotocol,
            extra_headers=headers_except(extra_headers, _ACCEPT_RESERVED),
            extensions=[] if deflate is None else [deflate],
        ))
        try:
            await self._stream.send_all(data)
        except BaseException as exc:
            await trio.aclose_forcefully(self._stream)
            if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError)):
                raise ConnectionClosed(CloseReason(1006, None)) from exc
            raise
        # wsproto negotiated; our own frame layer takes the open connection.
        protocol = FrameProtocol(False, deflate, self._max_message_size)
        protocol.receive_data(self._trailing_data)  # frames sent right behind the request
        self._trailing_data = b""
        self._connection = WebSocketConnection(
            self._nursery, self._stream, protocol,
            path=self._path,
            subprotocol=subprotocol,
            handshake_headers=self._headers,
            message_queue_size=self._message_queue_size,
            max_message_size=self._max_message_size,
        )
        return self._connection

    async def reject(
        self,
        status_code: int,
        *,
        extra_headers: Iterable[Header] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Refuse the handshake with an HTTP response, then close the stream.

        :param status_code: an HTTP status other than 101, ideally 300-599.
        :param extra_headers: more ``(name, value)`` pairs for the response.
        :param body: the response body, or ``None`` for an empty one.
        :raises ValueError: for 101 or a status outside 100-599.
        :raises RuntimeError: if the request was already answered.
        """
        if status_code == 101 or not 100 <= status_code <= 599:
            raise ValueError(f"cannot reject a handshake with status {status_code}")
        ws = self._claim()
        headers = headers_except(extra_headers, _REJECT_RESERVED)
        if body:
            headers.append((b"content-length", str(len(body)).encode("ascii")))
        self._endpoints  # noqa: B018  (read them while the stream is still open)
        data = ws.send(RejectConnection(
            status_code=status_code, headers=headers, has_body=bool(body)))
        if body:
            data += ws.send(RejectData(data=body))
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client left; nothing more to tell it
        finally:
            await trio.aclose_forcefully(self._stream)


async def refuse(
    stream: trio.abc.Stream,
    status_code: int,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer a request that cannot become a WebSocket, then close the stream.

    Written by hand because after a parse error the HTTP state machine
    will not produce a response.
    """
    phrase = http.HTTPStatus(status_code).phrase
    body = f"{status_code} {phrase}\n".encode("ascii")
    lines = [
        f"HTTP/1.1 {status_code} {phrase}".encode("ascii"),
        b"content-type: text/plain; charset=utf-8",
        b"content-length: " + str(len(body)).encode("ascii"),
        b"connection: close",
    ]
    lines += [name + b": " + value for name, value in headers]
    try:
        await stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def wrap_server_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    message_queue_size: float = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: float = DEFAULT_MAX_MESSAGE_SIZE,
    *,
    compression: PerMessageDeflate | None = DEFAULT_COMPRESSION,
) -> WebSocketRequest:
    """Read a client's opening handshake from ``stream``.

    Returns the request for the caller to accept or reject; an accepted
    connection's reader task runs in ``nursery``. If the client offers
    compression, ``accept()`` agrees within ``compression`` (``None``:
    never). A request that is not a
    valid WebSocket upgrade is answered with an HTTP error (400, or 426 for
    a wrong version, 431 for a head over 16 KiB) and the stream is closed.

    :raises HandshakeError: if the client sent no valid handshake.
    """
    # Failures are logged before the stream is closed: closing is a
    # checkpoint, where a server shutting down would cancel the log line.
    try:
        head, rest = await receive_http_head(stream)
    except HeadTooLarge as exc:
        logger.debug("refusing a handshake with HTTP 431: %s", exc)
        await refuse(stream, 431)
        raise
    except HandshakeError as exc:
        logger.debug("handshake failed: %s", exc)
        await trio.aclose_forcefully(stream)
        raise
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    ws = WSConnection(ConnectionType.SERVER)
    status: int = 400
    headers: list[tuple[bytes, bytes]] = []
    try:
        ws.receive_data(head)
        event = next(ws.events(), None)
        problem = None if isinstance(event, Request) else f"not a WebSocket request: {event!r}"
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        if isinstance(hint, RejectConnection):
            status, headers = hint.status_code, list(hint.headers)
        problem = f"invalid handshake request: {exc}"
    except (ValueError, UnicodeError) as exc:  # e.g. a Host header idna cannot decode
        problem = f"invalid handshake request: {exc!r}"
    if problem is not None:
        logger.debug("refusing a handshake with HTTP %d: %s", status, problem)
        await refuse(stream, status, headers)
        raise HandshakeError(problem)
    assert isinstance(event, Request)
    return WebSocketRequest(nursery, stream, ws, event, rest, message_queue_size,
                            max_message_size, compression)
