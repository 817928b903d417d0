"""trio-websocket's client: open WebSocket connections to servers.

Installs without any server code; ``trio_websocket_core``'s connection,
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

from ._connect import connect_websocket, connect_websocket_url, open_websocket, open_websocket_url
from ._handshake import wrap_client_stream
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
    "__version__",
    "connect_websocket",
    "connect_websocket_url",
    "open_websocket",
    "open_websocket_url",
    "wrap_client_stream",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
