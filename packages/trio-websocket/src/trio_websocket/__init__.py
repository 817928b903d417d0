"""trio-websocket: WebSocket client and server for Trio.

Everything from ``trio_websocket_client``, ``trio_websocket_server`` and
``trio_websocket_core`` under one name.
"""

from trio_websocket_client import (
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    wrap_client_stream,
)
from trio_websocket_core import (
    CloseReason,
    ConnectionClosed,
    ConnectionFailed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    Endpoint,
    HandshakeError,
    PerMessageDeflate,
    WebSocketConnection,
)
from trio_websocket_server import (
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
    wrap_server_stream,
)

from ._version import __version__

__all__ = [
    "CloseReason",
    "ConnectionClosed",
    "ConnectionFailed",
    "ConnectionRejected",
    "ConnectionTimeout",
    "DisconnectionTimeout",
    "Endpoint",
    "HandshakeError",
    "PerMessageDeflate",
    "WebSocketConnection",
    "WebSocketRequest",
    "WebSocketServer",
    "__version__",
    "connect_websocket",
    "connect_websocket_url",
    "open_websocket",
    "open_websocket_url",
    "serve_websocket",
    "wrap_client_stream",
    "wrap_server_stream",
]
