"""Connecting to a server by host or URL, with or without a managed nursery."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import sys
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import trio

from trio_websocket_core import (
    DEFAULT_COMPRESSION,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MESSAGE_QUEUE_SIZE,
    ConnectionFailed,
    ConnectionTimeout,
    DisconnectionTimeout,
    PerMessageDeflate,
    WebSocketConnection,
)
from trio_websocket_core.toolkit import Header, tls_stream

from ._handshake import wrap_client_stream

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["connect_websocket", "connect_websocket_url", "open_websocket", "open_websocket_url"]

DEFAULT_CONNECT_TIMEOUT = 60.0
DEFAULT_DISCONNECT_TIMEOUT = 60.0

_default_ssl_context: ssl.SSLContext | None = None


def _ssl_context_for(use_ssl: bool | ssl.SSLContext) -> ssl.SSLContext | None:
    global _default_ssl_context
    if isinstance(use_ssl, ssl.SSLContext):
        return use_ssl
    if use_ssl is True:
        # Loading the CA store costs milliseconds: do it once per process.
        if _default_ssl_context is None:
            _default_ssl_context = ssl.create_default_context()
        return _default_ssl_context
    if use_ssl is False:
        return None
    raise TypeError(f"use_ssl must be a bool or an ssl.SSLContext, not {type(use_ssl).__name__}")


def _host_header(host: str, port: int, default_port: int) -> str:
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return host if port == default_port else f"{host}:{port}"


def _parse_url(url: str) -> tuple[bool, str, int, str]:
    """Split a ws:// or wss:// URL into (secure, host, port, resource)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"WebSocket URLs start with ws:// or wss://, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in URL {url!r}")
    secure = scheme == "wss"
    port = parts.port
    if port == 0:  # port 0 names no server; "or" would quietly dial the default
        raise ValueError(f"port 0 in URL {url!r}")
    if port is None:
        port = 443 if secure else 80
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return secure, parts.hostname, port, resource


async def _open_tcp_stream(host: str, port: int) -> trio.SocketStream:
    """A TCP stream to ``host:port``; an IP address is dialled directly.

    trio.open_tcp_stream resolves the name and races the addresses it gets
    (happy eyeballs) in a nursery of its own, which a literal address does
    not need: skipping it is about a tenth of a loopback connection's cost.
    """
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket(trio.socket.AF_INET6 if version == 6 else trio.socket.AF_INET,
                              trio.socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def connect_websocket(
    nursery: trio.Nursery,
    host: str,
    port: int,
    resource: str,
    *,
    use_ssl: bool | ssl.SSLContext,
    subprotocols: Iterable[str] | None = None,
    extra_headers: Iterable[Header] | None = None,
    message_queue_size: float = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: float = DEFAULT_MAX_MESSAGE_SIZE,
    compression: PerMessageDeflate | None = DEFAULT_COMPRESSION,
) -> WebSocketConnection:
    """Connect to ``host:port`` and open a WebSocket on ``resource``.

    The reader task runs in ``nursery``; closing the connection is up to
    the caller. There is no internal timeout: wrap the call in one.

    :param use_ssl: ``True`` for TLS with a default, verifying context,
        an ``ssl.SSLContext`` to use that one, ``False`` for plain TCP.
    :raises ConnectionFailed: (both a ``HandshakeError`` and an ``OSError``)
        if the TCP connection or the TLS handshake fails.
    :raises HandshakeError: if the WebSocket handshake fails.
    """
    ssl_context = _ssl_context_for(use_ssl)
    stream: trio.abc.Stream
    try:
        stream = await _open_tcp_stream(host, port)
        if ssl_context is not None:
            # Handshaken on first use, inside the opening handshake's timeout.
            stream = tls_stream(stream, ssl_context, host)
    except OSError as exc:
        raise ConnectionFailed.wrap(exc, _host_header(host, port, 0)) from exc
    return await wrap_client_stream(
        nursery, stream, _host_header(host, port, 443 if ssl_context else 80), resource,
        subprotocols=subprotocols, extra_headers=extra_headers,
        message_queue_size=message_queue_size, max_message_size=max_message_size,
        compression=compression,
    )


async def connect_websocket_url(
    nursery: trio.Nursery,
    url: str,
    ssl_context: ssl.SSLContext | None = None,
    *,
    subprotocols: Iterable[str] | None = None,
    extra_headers: Iterable[Header] | None = None,
    message_queue_size: float = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: float = DEFAULT_MAX_MESSAGE_SIZE,
    compression: PerMessageDeflate | None = DEFAULT_COMPRESSION,
) -> WebSocketConnection:
    """Like :func:`connect_websocket`, from a ``ws://`` or ``wss://`` URL.

    ``ssl_context`` applies to ``wss://`` (a default, verifying context if
    ``None``); passing one with a ``ws://`` URL is a ``ValueError``, since
    the connection would not be encrypted.
    """
    secure, host, port, resource = _parse_url(url)
    if not secure and ssl_context is not None:
        raise ValueError(f"ssl_context given for the unencrypted URL {url!r}")
    use_ssl: bool | ssl.SSLContext = (ssl_context or True) if secure else False
    return await connect_websocket(
        nursery, host, port, resource, use_ssl=use_ssl,
        subprotocols=subprotocols, extra_headers=extra_headers,
        message_queue_size=message_queue_size, max_message_size=max_message_size,
        compression=compression,
    )


@contextlib.asynccontextmanager
async def _open(
    connect: Callable[[trio.Nursery], Awaitable[WebSocketConnection]],
    connect_timeout: float,
    disconnect_timeout: float,
) -> AsyncIterator[WebSocketConnection]:
    # Exceptions from the handshake or the block are held outside the
    # nursery and raised after it: inside, trio would wrap them in an
    # ExceptionGroup, and its cancel scope would rebuild a user's own group.
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            connection = None
            try:
                with trio.move_on_after(connect_timeout):
                    connection = await connect(nursery)
                if connection is None:
                    raise ConnectionTimeout(f"not connected within {connect_timeout} seconds")
            except BaseException as exc:
                failure = exc
            if connection is not None:
                try:
                    yield connection
                except BaseException as exc:
                    failure = exc
                try:
                    with trio.move_on_after(disconnect_timeout) as scope:
                        await connection.aclose()
                    # A failure in the block matters more than a slow close.
                    if scope.cancelled_caught and failure is None:
                        failure = DisconnectionTimeout(
                            f"not disconnected within {disconnect_timeout} seconds")
                except BaseException as exc:  # cancelled from outside while closing
                    failure = failure or exc
    except BaseExceptionGroup:
        # Only cancellation can get here (our reader task never raises), and
        # trio raises that again at the next checkpoint if it still applies.
        if failure is None:
            raise
    if failure is not None:
        raise failure


def open_websocket(
    host: str,
    port: int,
    resource: str,
    *,
    use_ssl: bool | ssl.SSLContext,
    subprotocols: Iterable[str] | None = None,
    extra_headers: Iterable[Header] | None = None,
    message_queue_size: float = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: float = DEFAULT_MAX_MESSAGE_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
    compression: PerMessageDeflate | None = DEFAULT_COMPRESSION,
) -> contextlib.AbstractAsyncContextManager[WebSocketConnection]:
    """Connect to ``host:port`` for the duration of an ``async with`` block.

    Yields an open :class:`WebSocketConnection` and closes it when the
    block exits, however it exits; an exception from the block comes out
    unchanged, never wrapped in an exception group.

    :raises ConnectionFailed: (both a ``HandshakeError`` and an ``OSError``)
        if the TCP connection or the TLS handshake fails.
    :raises ConnectionTimeout: if connecting takes over ``connect_timeout``.
    :raises DisconnectionTimeout: if closing takes over ``disconnect_timeout``.
    :raises HandshakeError: (and ``ConnectionRejected``) as for :func:`connect_websocket`.
    """
    async def connect(nursery: trio.Nursery) -> WebSocketConnection:
        return await connect_websocket(
            nursery, host, port, resource, use_ssl=use_ssl,
            subprotocols=subprotocols, extra_headers=extra_headers,
            message_queue_size=message_queue_size, max_message_size=max_message_size,
            compression=compression,
        )
    return _open(connect, connect_timeout, disconnect_timeout)


def open_websocket_url(
    url: str,
    ssl_context: ssl.SSLContext | None = None,
    *,
    subprotocols: Iterable[str] | None = None,
    extra_headers: Iterable[Header] | None = None,
    message_queue_size: float = DEFAULT_MESSAGE_QUEUE_SIZE,
    max_message_size: float = DEFAULT_MAX_MESSAGE_SIZE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT,
    compression: PerMessageDeflate | None = DEFAULT_COMPRESSION,
) -> contextlib.AbstractAsyncContextManager[WebSocketConnection]:
    """Like :func:`open_websocket`, from a ``ws://`` or ``wss://`` URL."""
    async def connect(nursery: trio.Nursery) -> WebSocketConnection:
        return await connect_websocket_url(
            nursery, url, ssl_context,
            subprotocols=subprotocols, extra_headers=extra_headers,
            message_queue_size=message_queue_size, max_message_size=max_message_size,
            compression=compression,
        )
    return _open(connect, connect_timeout, disconnect_timeout)
