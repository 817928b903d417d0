"""The HTTP side of a client's opening handshake, Sans-IO: write the request, check the 101.

Done by hand for the same reason as the server's (wsproto's h11 round trip
cost ~50 us a connection); wsproto's helper still computes the accept token,
and permessage-deflate is offered and checked by our own _deflate. Anything
but a 101 goes back to wsproto, which reads a rejection's body however it is
framed.
"""

from __future__ import annotations

import base64
import os
import re

from wsproto.utilities import RemoteProtocolError, generate_accept_token, split_comma_header

from trio_websocket_core import HandshakeError, PerMessageDeflate
from trio_websocket_core.toolkit import Deflate, header_fields, is_target, is_token

__all__ = ["Accepted", "check_accept", "new_key", "request", "status_of"]

_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3})(?: [^\r\n]*)?")


def new_key() -> bytes:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16))


def request(host: str, resource: str, key: bytes, subprotocols: list[str],
            compression: PerMessageDeflate | None,
            extra_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The upgrade request's bytes, offering ``compression`` unless it is None.

    :raises ValueError: for a resource or subprotocol that cannot go on the wire.
    """
    if not resource.isascii() or not is_target(resource.encode("ascii")):
        raise ValueError(f"resource {resource!r} is not a printable ASCII path")
    lines = [b"GET " + resource.encode("ascii") + b" HTTP/1.1",
             b"Host: " + host.encode("idna"), b"Upgrade: websocket", b"Connection: Upgrade",
             b"Sec-WebSocket-Key: " + key, b"Sec-WebSocket-Version: 13"]
    if subprotocols:
        for subprotocol in subprotocols:
            if not subprotocol.isascii() or not is_token(subprotocol.encode("ascii")):
                raise ValueError(f"subprotocol {subprotocol!r} is not an HTTP token")
        lines.append(b"Sec-WebSocket-Protocol: " + ", ".join(subprotocols).encode("ascii"))
    if compression is not None:
        lines.append(b"Sec-WebSocket-Extensions: " + Deflate.offer(compression).encode("ascii"))
    lines += [name + b": " + value for name, value in extra_headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def status_of(head: bytes) -> int:
    """The status code of a response head.

    :raises HandshakeError: if the head does not start with an HTTP/1.1 status line.
    """
    status_line = _STATUS_LINE.fullmatch(head[:head.find(b"\r\n")])
    if status_line is None:
        raise HandshakeError(f"invalid handshake response: {head[:100]!r}")
    return int(status_line.group(1))


class Accepted:
    """What the server's 101 agreed to."""

    __slots__ = ("deflate", "headers", "subprotocol")

    def __init__(self, subprotocol: str | None, deflate: Deflate | None,
                 headers: list[tuple[bytes, bytes]]) -> None:
        self.subprotocol = subprotocol
        self.deflate = deflate  # the permessage-deflate agreed, if any
        #: Every header but Connection, Upgrade and the Sec-WebSocket-* ones.
        self.headers = headers


def check_accept(head: bytes, key: bytes, subprotocols: list[str],
                 compression: PerMessageDeflate | None) -> Accepted:
    """Check a 101 response head against the request that was sent.

    :raises HandshakeError: if it is not a valid acceptance of that request.
    """
    connection_tokens: list[str] | None = None
    accepts: list[str] = []
    accept = subprotocol = None
    upgrade = b""
    headers: list[tuple[bytes, bytes]] = []
    try:
        for name, value in header_fields(head):
            if name == b"connection":
                # A list header may come as several lines (RFC 9110 5.3): all of them count.
                connection_tokens = [*(connection_tokens or ()), *split_comma_header(value)]
            elif name == b"sec-websocket-extensions":
                accepts.extend(split_comma_header(value))
            elif name == b"sec-websocket-accept":
                if accept is not None:  # RFC 6455 11.3.3: at most once
                    raise HandshakeError("invalid handshake response: repeated "
                                         "Sec-WebSocket-Accept")
                accept = value
            elif name == b"sec-websocket-protocol":
                subprotocol = value.decode("ascii")
            elif name == b"upgrade":
                upgrade = value
            else:
                headers.append((name, value))
        if connection_tokens is None or not any(t.lower() == "upgrade" for t in connection_tokens):
            raise HandshakeError("invalid handshake response: no 'Connection: Upgrade'")
        if upgrade.lower() != b"websocket":
            raise HandshakeError("invalid handshake response: no 'Upgrade: websocket'")
        if accept != generate_accept_token(key):
            raise HandshakeError("invalid handshake response: bad Sec-WebSocket-Accept")
        if subprotocol is not None and subprotocol not in subprotocols:
            raise HandshakeError(
                f"invalid handshake response: unrecognized subprotocol {subprotocol}")
        deflate = Deflate.confirm(compression, accepts)
    except (RemoteProtocolError, ValueError) as exc:  # UnicodeError is a ValueError
        raise HandshakeError(f"invalid handshake response: {exc}") from exc
    return Accepted(subprotocol, deflate, headers)
