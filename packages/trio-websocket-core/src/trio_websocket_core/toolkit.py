"""The building blocks trio-websocket-client and -server are made of.

Each distribution is released on its own, so the client and the server use
core only through this module and the package's top level. What is listed in
``__all__`` here is documented and kept stable within a minor version of
trio-websocket-core (0.2.x); the client and server pin that range. Other
libraries may build on it too, for example to serve WebSockets from their own
HTTP stack: parse the upgrade yourself, then hand a ``FrameProtocol`` and the
stream to :class:`~trio_websocket_core.WebSocketConnection`.
"""

from __future__ import annotations

from ._connection import RECEIVE_SIZE
from ._deflate import Deflate, InflateError
from ._endpoint import socket_endpoint, stream_endpoints
from ._http import (
    MAX_HEAD_SIZE,
    MAX_HEADERS,
    MAX_LIST_ELEMENTS,
    Header,
    HeadTooLarge,
    NotHTTP,
    header_fields,
    headers_except,
    is_target,
    is_token,
    receive_http_head,
)
from ._protocol import FrameProtocol
from ._tls import TLSListener, TLSStream, tls_listeners, tls_stream

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_SIZE",
    "MAX_LIST_ELEMENTS",
    "RECEIVE_SIZE",
    "Deflate",
    "FrameProtocol",
    "HeadTooLarge",
    "Header",
    "InflateError",
    "NotHTTP",
    "TLSListener",
    "TLSStream",
    "header_fields",
    "headers_except",
    "is_target",
    "is_token",
    "receive_http_head",
    "socket_endpoint",
    "stream_endpoints",
    "tls_listeners",
    "tls_stream",
]
