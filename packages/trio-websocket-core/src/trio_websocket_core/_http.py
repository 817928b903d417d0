"""Reading the HTTP head of an opening handshake off a stream.

wsproto parses the head; this module bounds it and splits it from whatever
follows, so bytes sent right after the handshake (frames, or a rejection's
body) are never lost.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import trio

from ._exceptions import HandshakeError

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_SIZE",
    "MAX_LIST_ELEMENTS",
    "RECEIVE_SIZE",
    "HeadTooLarge",
    "Header",
    "NotHTTP",
    "decode_headers",
    "header_fields",
    "headers_except",
    "is_target",
    "is_token",
    "receive_http_head",
]

#: One extra HTTP header as a caller passes it, ``(name, value)``: ``bytes``, or
#: ``str`` that is encoded as Latin-1 (HTTP's own charset). The type of each item
#: of every ``extra_headers`` argument; :func:`headers_except` checks them.
Header = tuple[bytes | str, bytes | str]

#: Bytes asked of a stream per read, 64 KiB: large reads mean fewer trips through
#: the loop, and the bound keeps what one read holds small.
RECEIVE_SIZE = 2**16

#: Largest request or response head accepted, 16 KiB, the same bound h11 uses: a
#: peer cannot make a handshake buffer more. Past it :func:`receive_http_head`
#: raises :exc:`HeadTooLarge`, which a server answers with HTTP 431.
MAX_HEAD_SIZE = 16 * 1024

#: Most header fields (lines) accepted in a head, the bound websockets uses. A
#: connection keeps its parsed headers for life, and 16 KiB of tiny lines would
#: otherwise be thousands of objects (~30 times the head's size).
MAX_HEADERS = 128

#: Most elements accepted, all lines together, in the comma lists a server keeps
#: (Sec-WebSocket-Protocol and Sec-WebSocket-Extensions), for the same reason: a
#: server refuses a request with more.
MAX_LIST_ELEMENTS = 128


class HeadTooLarge(HandshakeError):
    """The peer's HTTP head did not end within :data:`MAX_HEAD_SIZE` bytes, or had
    more than :data:`MAX_HEADERS` header fields."""


class NotHTTP(HandshakeError):
    """The peer's first bytes cannot start an HTTP head: most often TLS spoken
    to a plain port (a ``wss://`` URL for a ``ws://`` server), or the other way
    round. Raised at once, instead of waiting for a blank line that never comes;
    a server answers it with HTTP 400."""


async def receive_http_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """Read until the blank line that ends an HTTP head.

    Returns ``(head, rest)``: the head including its final CRLF CRLF, and
    any bytes that arrived after it.

    :raises HandshakeError: if the stream ends or breaks first.
    :raises NotHTTP: if the first byte (after any empty lines, which are
        skipped) is not a letter, as every request method and ``HTTP/`` begin.
    :raises HeadTooLarge: if the head exceeds :data:`MAX_HEAD_SIZE` or :data:`MAX_HEADERS`.
    """
    buffer = bytearray()
    skipped = 0  # empty lines before the start line
    while True:
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise HandshakeError(f"connection lost during the opening handshake: {exc!r}") from exc
        if not data:
            raise HandshakeError("connection closed during the opening handshake")
        if not buffer:
            # RFC 9112 2.2: empty lines before a request line are ignored. They
            # count towards the head's bound.
            start = data.lstrip(b"\r\n")
            skipped += len(data) - len(start)
            if skipped > MAX_HEAD_SIZE:
                raise HeadTooLarge(f"HTTP head longer than {MAX_HEAD_SIZE} bytes")
            if start[:1] and not start[:1].isalpha():
                raise NotHTTP(f"not HTTP: the peer's first bytes are {bytes(start[:8])!r}"
                              " (TLS to a plain port, or the other way round?)")
            data = start
        search_from = max(0, len(buffer) - 3)
        buffer += data
        end = buffer.find(b"\r\n\r\n", search_from)
        if end >= 0:
            end += 4
            if end > MAX_HEAD_SIZE:
                raise HeadTooLarge(f"HTTP head longer than {MAX_HEAD_SIZE} bytes")
            head = bytes(buffer[:end])
            # Each header line ends in one CRLF; so do the start line and the blank line.
            if head.count(b"\r\n") - 2 > MAX_HEADERS:
                raise HeadTooLarge(f"HTTP head with more than {MAX_HEADERS} header fields")
            return head, bytes(buffer[end:])
        if len(buffer) > MAX_HEAD_SIZE:
            raise HeadTooLarge(f"HTTP head longer than {MAX_HEAD_SIZE} bytes")


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(rb"[\x21-\x7e]+")


def is_target(text: bytes) -> bool:
    """Whether ``text`` can be a request line's target: printable ASCII, no spaces."""
    return _TARGET.fullmatch(text) is not None


def is_token(text: bytes) -> bool:
    """Whether ``text`` is an HTTP token (a header name, a subprotocol)."""
    return _TOKEN.fullmatch(text) is not None


def header_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The ``(name, value)`` header lines of an HTTP head, names in lower case.

    ``head`` runs from the start line through the blank line that ends it.

    A header line is a token, a colon, then a value without control
    characters (tabs allowed) between optional whitespace; no obs-fold
    continuation lines. Parsed in linear time: a single regular expression
    for the whole line backtracked quadratically on runs of whitespace.

    :raises ValueError: for a line that is not a well-formed header.
    """
    fields = []
    for line in head.split(b"\r\n")[1:-2]:  # after the start line, before b"" and b""
        name, colon, value = line.partition(b":")  # a token has no colon: the first one ends it
        if not colon or not is_token(name) or _CONTROL.search(value) is not None:
            raise ValueError(f"malformed header line: {line[:100]!r}")
        fields.append((name.lower(), value.strip(b" \t")))
    return fields


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


def headers_except(
    headers: Iterable[Header] | None, reserved: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    """The user's extra headers as bytes, minus the ones the handshake itself sets.

    :raises ValueError: for a name that is not an HTTP token or a value with
        a line break or other control character (it would forge headers).
    """
    result = []
    for name, value in headers or ():
        name_bytes, value_bytes = _as_bytes(name), _as_bytes(value)
        if not is_token(name_bytes) or _CONTROL.search(value_bytes):
            raise ValueError(f"invalid HTTP header {name_bytes!r}: {value_bytes!r}")
        if name_bytes.lower() not in reserved:
            result.append((name_bytes, value_bytes.strip(b" \t")))
    return result


def decode_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """Headers as text with lower-case names; latin-1 keeps every byte."""
    return tuple(
        (bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
        for name, value in headers
    )
