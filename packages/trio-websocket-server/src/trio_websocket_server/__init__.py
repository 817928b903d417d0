"""trio-websocket's server: accept WebSocket connections from clients.

Installs without any client code; ``trio_websocket_core``'s connection,
exceptions and ``CloseReason`` come with it and are re-exported here.
"""

import logging

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

from ._request import WebSocketRequest, wrap_server_stream
from ._server import WebSocketServer, serve_websocket
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
    "serve_websocket",
    "wrap_server_stream",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
