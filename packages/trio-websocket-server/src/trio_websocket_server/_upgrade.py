"""The HTTP side of a server's opening handshake, Sans-IO: parse the request, write the answer.

wsproto ran this through h11 at ~55 us a connection, a tenth of a loopback
connection's whole cost, and kept the state machines alive as long as the
request. A WebSocket upgrade is one fixed-shape GET with no body, so it is
parsed here directly, with the same checks and answers wsproto gives;
wsproto's helper still computes the accept token, and permessage-deflate is
negotiated by our own _deflate.
"""

from __future__ import annotations

import base64
import binascii
import http
from collections.abc import Sequence

from wsproto.utilities import generate_accept_token, split_comma_header

from trio_websocket_core.toolkit import MAX_LIST_ELEMENTS, header_fields, is_target

__all__ = ["BadRequest", "UpgradeRequest", "accept_response", "parse_request", "response"]



class BadRequest(Exception):
    """A request that cannot become a WebSocket: answer ``status`` with ``headers``."""

    def __init__(self, message: str, status: int = 400,
                 headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


class UpgradeRequest:
    """What a valid upgrade request asked for."""

    __slots__ = ("extensions", "headers", "key", "path", "subprotocols")

    def __init__(self, path: str, headers: list[tuple[bytes, bytes]], key: bytes,
                 subprotocols: tuple[str, ...], extensions: list[str]) -> None:
        self.path = path
        #: Every header but Host, Sec-WebSocket-Protocol and -Extensions
        #: (those are parsed out), names in lower case.
        self.headers = headers
        self.key = key
        self.subprotocols = subprotocols
        self.extensions = extensions  # the client's offers, one string each


def _is_key(key: bytes) -> bool:
    """Whether ``key`` is base64 of 16 bytes, as RFC 6455 4.2.1 requires of a request."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def _elements(value: bytes) -> list[str]:
    """A comma list's elements, without the empty ones (RFC 9110 5.6.1 does not count them)."""
    return [element for element in split_comma_header(value) if element]


def _check_elements(subprotocols: list[str], extensions: list[str]) -> None:
    # The request keeps both lists for the connection's life: bound them.
    if len(subprotocols) + len(extensions) > MAX_LIST_ELEMENTS:
        raise BadRequest(f"more than {MAX_LIST_ELEMENTS} elements in "
                         "Sec-WebSocket-Protocol and Sec-WebSocket-Extensions")


def parse_request(head: bytes) -> UpgradeRequest:
    """Check an HTTP request head (through its blank line) as an upgrade to WebSocket.

    :raises BadRequest: with the status to answer (400, or 426 for a wrong version).
    :raises UnicodeError: for a Host or list header that is not ASCII/IDNA (answer 400).
    """
    start_line = head[:head.find(b"\r\n")]
    request_line = start_line.split(b" ")
    if len(request_line) != 3 or request_line[2] != b"HTTP/1.1" \
            or not is_target(request_line[1]):
        raise BadRequest(f"not an HTTP/1.1 request line: {start_line[:100]!r}")
    if request_line[0] != b"GET":
        raise BadRequest("Request method must be GET")
    connection_tokens: list[str] | None = None
    extensions: list[str] = []
    host = key = version = None
    subprotocols: list[str] = []
    upgrade = b""
    headers: list[tuple[bytes, bytes]] = []
    try:
        fields = header_fields(head)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    for name, value in fields:
        if name == b"connection":
            # A list header may come as several lines (RFC 9110 5.3): all of them count.
            connection_tokens = [*(connection_tokens or ()), *split_comma_header(value)]
        elif name == b"host":
            if host is not None:  # RFC 9112 3.2: answer 400
                raise BadRequest("repeated header 'Host'")
            host = value.decode("idna")
            continue
        elif name == b"sec-websocket-extensions":
            extensions.extend(_elements(value))
            _check_elements(subprotocols, extensions)
            continue
        elif name == b"sec-websocket-key":
            if key is not None:  # RFC 6455 11.3.1: at most once
                raise BadRequest("repeated header 'Sec-WebSocket-Key'")
            key = value
        elif name == b"sec-websocket-protocol":
            subprotocols.extend(_elements(value))
            _check_elements(subprotocols, extensions)
            continue
        elif name == b"sec-websocket-version":
            if version is not None:  # RFC 6455 4.1: one version
                raise BadRequest("repeated header 'Sec-WebSocket-Version'")
            version = value
        elif name == b"upgrade":
            upgrade = value
        elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            raise BadRequest("an upgrade request has no body")
        headers.append((name, value))
    if connection_tokens is None or not any(t.lower() == "upgrade" for t in connection_tokens):
        raise BadRequest("Missing header, 'Connection: Upgrade'")
    if version != b"13":
        raise BadRequest("Missing header, 'Sec-WebSocket-Version'", 426 if version else 400,
                         [(b"Sec-WebSocket-Version", b"13")])
    if key is None:
        raise BadRequest("Missing header, 'Sec-WebSocket-Key'")
    if not _is_key(key):
        raise BadRequest("Sec-WebSocket-Key is not 16 bytes in base64")
    if upgrade.lower() != b"websocket":
        raise BadRequest("Missing header, 'Upgrade: websocket'")
    if host is None:
        raise BadRequest("Missing header, 'Host'")
    return UpgradeRequest(request_line[1].decode("ascii"), headers, key,
                          tuple(subprotocols), extensions)


def accept_response(request: UpgradeRequest, subprotocol: str | None,
                    extensions: str | None,
                    extra_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The 101 answer; ``extensions``: the Sec-WebSocket-Extensions value agreed, if any."""
    lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade",
             b"Sec-WebSocket-Accept: " + generate_accept_token(request.key)]
    if subprotocol is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii"))
    if extensions:
        lines.append(b"Sec-WebSocket-Extensions: " + extensions.encode("ascii"))
    lines += [name + b": " + value for name, value in extra_headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def response(status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    """A complete HTTP response that ends the exchange (the stream is closed after it)."""
    try:
        phrase = http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        phrase = b""
    lines = [b"HTTP/1.1 %d %s" % (status, phrase)]
    lines += [name + b": " + value for name, value in headers]
    lines += [b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
