"""Serving WebSockets over TCP listeners, one handler call per connection."""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import trio

from trio_websocket_core import (
    DEFAULT_COMPRESSION,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    ConnectionClosed,
    Endpoint,
    HandshakeError,
    PerMessageDeflate,
)
from trio_websocket_core.toolkit import TLSListener, socket_endpoint, tls_listeners

from ._request import WebSocketRequest, wrap_server_stream

__all__ = ["Handler", "WebSocketServer", "serve_websocket"]

logger = logging.getLogger("trio_websocket_server")

DEFAULT_CONNECT_TIMEOUT = 60.0
DEFAULT_DISCONNECT_TIMEOUT = 60.0

Handler = Callable[[WebSocketRequest], Awaitable[Any]]


class WebSocketServer:
    """Runs ``handler`` for every WebSocket request that arrives on ``listeners``.

    Each connection is independent: a bad handshake, a protocol error, a
    vanished client or a handler that raises closes that connection only.
    A handler that raises is logged at ERROR on the ``trio_websocket_server``
    logger; its connection is closed with 1011 (or answered with HTTP 500 if
    it had not accepted yet). A handler that returns without answering the
    request gets HTTP 403 sent for it.
    """

    def __init__(
        self,
        handler: Handler,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        handler_nursery: trio.Nursery | None = None,
        message_queue_size: float = DEFAULT_MESSAGE_QUEUE_SIZE,
        max_message_size: float = DEFAULT_MAX_MESSAGE_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
        compression: PerMessageDeflate | None = DEFAULT_COMPRESSION,
    ) -> None:
        """Prepare to serve; nothing is accepted until :meth:`run`."""
        if not listeners:
            raise ValueError("a server needs at least one listener")
        self._handler = handler
        self._listeners = list(listeners)
        self._handler_nursery = handler_nursery
        self._connection_nursery: trio.Nursery | None = None  # set by run()
        self._message_queue_size = message_queue_size
        self._max_message_size = max_message_size
        self._connect_timeout = connect_timeout
        self._disconnect_timeout = disconnect_timeout
        self._compression = compression

    @property
    def listeners(self) -> list[Endpoint | str]:
        """Where the server listens: an :class:`Endpoint` per TCP listener, else text."""
        found: list[Endpoint | str] = []
        for listener in self._listeners:
            is_ssl = isinstance(listener, (trio.SSLListener, TLSListener))
            inner = listener.transport_listener if is_ssl else listener  # type: ignore[attr-defined]
            if isinstance(inner, trio.SocketListener):
                found.append(socket_endpoint(inner.socket, is_ssl, peer=False))
            else:
                found.append(repr(listener))
        return found

    @property
    def port(self) -> int:
        """The TCP port the server listens on.

        :raises RuntimeError: if the listeners are not TCP, or listen on
            different ports (possible with ``host=None`` and port 0).
        """
        ports = {ep.port for ep in self.listeners if isinstance(ep, Endpoint)}
        if len(ports) != 1:
            raise RuntimeError(f"no single TCP port: listening on {self.listeners}")
        return ports.pop()

    async def run(
        self, *, task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Serve until cancelled; with ``nursery.start``, report ``self`` once listening."""
        async with trio.open_nursery() as nursery:
            # Each connection's reader runs beside its handler, in the same
            # nursery, so that both live as long as the handlers may.
            self._connection_nursery = self._handler_nursery or nursery
            await nursery.start(functools.partial(
                trio.serve_listeners, self._serve_connection, self._listeners,
                handler_nursery=self._connection_nursery,
            ))
            task_status.started(self)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        # No nursery of its own per connection: that is about 1 KiB each.
        assert self._connection_nursery is not None
        request = None
        with trio.move_on_after(self._connect_timeout):
            try:
                request = await wrap_server_stream(
                    self._connection_nursery, stream, self._message_queue_size,
                    self._max_message_size, compression=self._compression)
            except HandshakeError:
                return  # answered, closed and logged by wrap_server_stream
        if request is None:
            logger.debug("no handshake within %s seconds", self._connect_timeout)
            return  # wrap_server_stream closed the stream when it was cancelled
        # The handler runs right here rather than in a helper: every frame
        # below this one stays alive for the whole connection.
        failed = False
        try:
            await self._handler(request)
        except ConnectionClosed as exc:
            logger.debug("connection from %s closed under its handler: %s", request.remote, exc)
        except Exception:
            failed = True
            logger.exception("handler for %s raised", request.remote)
        finally:
            connection = request._connection
            if connection is not None:
                with trio.move_on_after(self._disconnect_timeout):
                    await connection.aclose(1011 if failed else 1000)
            elif not request._answered:
                await request.reject(500 if failed else 403)


async def serve_websocket(
    handler: Handler,
    host: str | bytes | None,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    handler_nursery: trio.Nursery | None = None,
    message_queue_size: float = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: float = DEFAULT_MAX_MESSAGE_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    compression: PerMessageDeflate | None = DEFAULT_COMPRESSION,
) -> NoReturn:
    """Listen on ``host:port`` and serve WebSockets until cancelled.

    Use ``server = await nursery.start(serve_websocket, ...)`` to get the
    :class:`WebSocketServer` once it is listening (port 0 picks a free
    port: read it from ``server.port``). ``host=None`` binds every
    interface. ``ssl_context`` turns on TLS (``wss://``). ``compression``
    bounds the permessage-deflate a client may agree to (``None``: never).
    """
    listeners: Sequence[trio.abc.Listener[Any]]
    listeners = await trio.open_tcp_listeners(port, host=host)
    if ssl_context is not None:
        listeners = tls_listeners(listeners, ssl_context)
    server = WebSocketServer(
        handler, listeners, handler_nursery=handler_nursery,
        message_queue_size=message_queue_size, max_message_size=max_message_size,
        connect_timeout=connect_timeout, disconnect_timeout=disconnect_timeout,
        compression=compression,
    )
    await server.run(task_status=task_status)
