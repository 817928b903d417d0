"""The shared heart of trio-websocket: connections, messages, pings, close reasons.

Most users want ``trio_websocket`` (everything) or one of
``trio_websocket_client`` / ``trio_websocket_server``; this package holds
what both roles share and is installed by either.
"""

import logging

from ._close_reason import CloseReason
from ._connection import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MESSAGE_QUEUE_SIZE, WebSocketConnection
from ._deflate import DEFAULT_COMPRESSION, PerMessageDeflate
from ._endpoint import Endpoint
from ._exceptions import (
    ConnectionClosed,
    ConnectionFailed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
)
from ._version import __version__

__all__ = [
    "DEFAULT_COMPRESSION",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MESSAGE_QUEUE_SIZE",
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
]

# A library leaves output to the application: without this, records at
# WARNING and above would reach stderr through logging's last-resort handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())
