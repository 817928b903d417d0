"""The server's side of the opening handshake: a request to accept or reject."""

from __future__ import annotations

import http
import logging
import math
from collections.abc import Iterable

import trio

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
from trio_websocket_core.toolkit import (
    Deflate,
    FrameProtocol,
    Header,
    HeadTooLarge,
    NotHTTP,
    headers_except,
    receive_http_head,
    stream_endpoints,
)

from ._upgrade import BadRequest, UpgradeRequest, accept_response, parse_request, response

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
    __slots__ = ("_answered", "_compression", "_connection", "_endpoints_cache",
                 "_max_message_size", "_message_queue_size", "_nursery", "_request", "_stream",
                 "_trailing_data")

    def __init__(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        request: UpgradeRequest,
        trailing_data: bytes,
        message_queue_size: float,
        max_message_size: float,
        compression: PerMessageDeflate | None,
    ) -> None:
        """Built by :func:`wrap_server_stream`; not meant to be built directly."""
        self._nursery = nursery
        self._stream = stream
        self._request = request
        self._answered = False
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
        return list(self._request.headers)

    @property
    def proposed_subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offered, in its order of preference."""
        return self._request.subprotocols

    @property
    def path(self) -> str:
        """The requested resource: path and query string."""
        return self._request.path

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

    def _claim(self) -> None:
        if self._answered:
            raise RuntimeError("this request was already accepted or rejected")
        self._answered = True

    async def accept(
        self,
        *,
        subprotocol: str | None = None,
        extra_headers: Iterable[Header] | None = None,
    ) -> WebSocketConnection:
        """Complete the handshake and return the open connection.

        :param subprotocol: one of :attr:`proposed_subprotocols`, or ``None``.
        :param extra_headers: more ``(name, value)`` pairs for the response.
        :raises ValueError: if ``subprotocol`` was not proposed, or for a header
            that is not valid HTTP (the request stays unanswered).
        :raises RuntimeError: if the request was already answered.
        :raises ConnectionClosed: if the client is gone.
        """
        request = self._request
        if subprotocol is not None and subprotocol not in request.subprotocols:
            raise ValueError(f"subprotocol {subprotocol!r} was not proposed by the client")
        headers = headers_except(extra_headers, _ACCEPT_RESERVED)
        self._claim()
        deflate = answer = None
        if self._compression is not None:
            agreed = Deflate.accept(self._compression, request.extensions)
            if agreed is not None:
                deflate, answer = agreed
        data = accept_response(request, subprotocol, answer, headers)
        try:
            await self._stream.send_all(data)
        except BaseException as exc:
            await trio.aclose_forcefully(self._stream)
            if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError)):
                raise ConnectionClosed(CloseReason(1006, None)) from exc
            raise
        # Our own frame layer takes the open connection.
        protocol = FrameProtocol(False, deflate, self._max_message_size)
        protocol.receive_data(self._trailing_data)  # frames sent right behind the request
        self._trailing_data = b""
        self._connection = WebSocketConnection(
            self._nursery, self._stream, protocol,
            path=request.path,
            subprotocol=subprotocol,
            handshake_headers=request.headers,
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
        :raises ValueError: for 101, a status outside 100-599, or a header that
            is not valid HTTP (the request stays unanswered).
        :raises RuntimeError: if the request was already answered.
        """
        if status_code == 101 or not 100 <= status_code <= 599:
            raise ValueError(f"cannot reject a handshake with status {status_code}")
        headers = headers_except(extra_headers, _REJECT_RESERVED)
        self._claim()
        data = response(status_code, headers, body or b"")
        self._endpoints  # noqa: B018  (read them while the stream is still open)
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
    body = f"{status_code} {http.HTTPStatus(status_code).phrase}\n".encode("ascii")
    headers = [(b"content-type", b"text/plain; charset=utf-8"), *headers]
    try:
        await stream.send_all(response(status_code, headers, body))
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
    compression, ``accept()`` agrees within ``compression`` (``None``, or
    ``max_message_size=math.inf``: never). A request that is not a
    valid WebSocket upgrade is answered with an HTTP error (400, or 426 for
    a wrong version, 431 for a head over 16 KiB or 128 header fields) and the
    stream is closed.

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
    except NotHTTP as exc:
        logger.debug("refusing a handshake with HTTP 400: %s", exc)
        await refuse(stream, 400)
        raise
    except HandshakeError as exc:
        logger.debug("handshake failed: %s", exc)
        await trio.aclose_forcefully(stream)
        raise
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    status: int = 400
    headers: list[tuple[bytes, bytes]] = []
    try:
        request = parse_request(head)
    except BadRequest as exc:
        status, headers = exc.status, exc.headers
        problem = f"invalid handshake request: {exc}"
    except UnicodeError as exc:  # e.g. a Host header idna cannot decode
        problem = f"invalid handshake request: {exc!r}"
    else:
        if max_message_size == math.inf:
            # Nothing would bound what a compressed message inflates to
            # (deflate reaches about 1,000 to 1): with no limit, memory
            # follows the bytes received only if they are not compressed.
            compression = None
        return WebSocketRequest(nursery, stream, request, rest, message_queue_size,
                                max_message_size, compression)
    logger.debug("refusing a handshake with HTTP %d: %s", status, problem)
    await refuse(stream, status, headers)
    raise HandshakeError(problem)
