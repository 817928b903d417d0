"""The public API matches the reference docs: names, parameters, defaults, hierarchy."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import trio

import trio_websocket
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    Endpoint,
    HandshakeError,
    PerMessageDeflate,
    WebSocketConnection,
    WebSocketRequest,
)
from trio_websocket_core import DEFAULT_COMPRESSION

P = inspect.Parameter
POS, KW = P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY
REQ = P.empty
LIMITS = [("message_queue_size", KW, 1), ("max_message_size", KW, 1048576)]
TIMEOUTS = [("connect_timeout", KW, 60), ("disconnect_timeout", KW, 60)]
CLIENT_OPTIONS = [("subprotocols", KW, None), ("extra_headers", KW, None), *LIMITS]

# Transcribed from the reference documentation.
EXPECTED: dict[str, list[tuple[str, Any, Any]]] = {
    "open_websocket": [("host", POS, REQ), ("port", POS, REQ), ("resource", POS, REQ),
                       ("use_ssl", KW, REQ), *CLIENT_OPTIONS, *TIMEOUTS],
    "open_websocket_url": [("url", POS, REQ), ("ssl_context", POS, None),
                           *CLIENT_OPTIONS, *TIMEOUTS],
    "connect_websocket": [("nursery", POS, REQ), ("host", POS, REQ), ("port", POS, REQ),
                          ("resource", POS, REQ), ("use_ssl", KW, REQ), *CLIENT_OPTIONS],
    "connect_websocket_url": [("nursery", POS, REQ), ("url", POS, REQ),
                              ("ssl_context", POS, None), *CLIENT_OPTIONS],
    "wrap_client_stream": [("nursery", POS, REQ), ("stream", POS, REQ), ("host", POS, REQ),
                           ("resource", POS, REQ), *CLIENT_OPTIONS],
    "serve_websocket": [("handler", POS, REQ), ("host", POS, REQ), ("port", POS, REQ),
                        ("ssl_context", POS, REQ), ("handler_nursery", KW, None), *LIMITS,
                        *TIMEOUTS, ("task_status", KW, trio.TASK_STATUS_IGNORED)],
    "wrap_server_stream": [("nursery", POS, REQ), ("stream", POS, REQ),
                           ("message_queue_size", POS, 1), ("max_message_size", POS, 1048576)],
}

METHODS: dict[tuple[type, str], list[tuple[str, Any, Any]]] = {
    (WebSocketRequest, "accept"): [("subprotocol", KW, None), ("extra_headers", KW, None)],
    (WebSocketRequest, "reject"): [("status_code", POS, REQ), ("extra_headers", KW, None),
                                   ("body", KW, None)],
    (WebSocketConnection, "send_message"): [("message", POS, REQ)],
    (WebSocketConnection, "get_message"): [],
    (WebSocketConnection, "ping"): [("payload", POS, None)],
    (WebSocketConnection, "pong"): [("payload", POS, None)],
    (WebSocketConnection, "aclose"): [("code", POS, 1000), ("reason", POS, None)],
}


def shape(function: Any, skip_self: bool = False) -> list[tuple[str, Any, Any]]:
    params = list(inspect.signature(function).parameters.values())
    if skip_self:
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


# Our one addition to the reference: permessage-deflate, keyword-only and last.
COMPRESSION = ("compression", KW, DEFAULT_COMPRESSION)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_function_signatures(name: str) -> None:
    assert shape(getattr(trio_websocket, name)) == [*EXPECTED[name], COMPRESSION]
    assert isinstance(DEFAULT_COMPRESSION, PerMessageDeflate)


@pytest.mark.parametrize(("owner", "name"), sorted(METHODS, key=lambda k: (k[0].__name__, k[1])))
def test_method_signatures(owner: type, name: str) -> None:
    assert shape(getattr(owner, name), skip_self=True) == METHODS[(owner, name)]


def test_value_and_exception_constructors() -> None:
    assert shape(CloseReason) == [("code", POS, REQ), ("reason", POS, REQ)]
    assert shape(Endpoint) == [("address", POS, REQ), ("port", POS, REQ), ("is_ssl", POS, REQ)]
    assert shape(ConnectionClosed) == [("reason", POS, REQ)]
    assert shape(ConnectionRejected) == [("status_code", POS, REQ), ("headers", POS, REQ),
                                         ("body", POS, REQ)]
    for exc in (ConnectionRejected, ConnectionTimeout, DisconnectionTimeout):
        assert issubclass(exc, HandshakeError)
    assert not issubclass(ConnectionClosed, HandshakeError)


def test_every_documented_name_is_exported_and_documented() -> None:
    documented = {"open_websocket", "open_websocket_url", "connect_websocket",
                  "connect_websocket_url", "wrap_client_stream", "serve_websocket",
                  "wrap_server_stream", "WebSocketServer", "WebSocketRequest",
                  "WebSocketConnection", "CloseReason", "Endpoint", "ConnectionClosed",
                  "HandshakeError", "ConnectionRejected", "ConnectionTimeout",
                  "DisconnectionTimeout"}
    assert documented <= set(trio_websocket.__all__)
    for name in documented:
        assert inspect.getdoc(getattr(trio_websocket, name)), name
    for attribute in ("closed", "is_client", "is_server", "local", "remote", "path",
                      "subprotocol", "handshake_headers"):
        assert isinstance(getattr(WebSocketConnection, attribute), property), attribute
    for attribute in ("headers", "proposed_subprotocols", "local", "remote"):
        assert isinstance(getattr(WebSocketRequest, attribute), property), attribute
