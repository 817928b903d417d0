"""The fuzz targets: arbitrary bytes into a parser, and only documented outcomes out.

``frames(data)`` feeds the frame parser (FrameProtocol) in either role, with
or without permessage-deflate; ``handshake(data)`` runs a server's request
parsing and answer, or a client's response checking, on a head read from a
stream. Each raises (an AssertionError, or whatever escaped the library) only
on a bug. The first byte of ``data`` picks the configuration, so the fuzzer
explores those too. fuzz_frames.py and fuzz_handshake.py run them under
atheris; the test command also runs every seed through them in-process.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import trio
from wsproto.utilities import generate_accept_token

from trio_websocket_client._handshake import _handshake
from trio_websocket_core import (
    ConnectionRejected,
    HandshakeError,
    PerMessageDeflate,
    WebSocketConnection,
)
from trio_websocket_core.toolkit import (
    MAX_HEAD_SIZE,
    MAX_HEADERS,
    MAX_LIST_ELEMENTS,
    Deflate,
    FrameProtocol,
    header_fields,
    receive_http_head,
)
from trio_websocket_server._request import WebSocketRequest
from trio_websocket_server._upgrade import BadRequest, parse_request

from . import wire
from .checks import check_events, feed, require, use_masker

#: Inputs that once crashed a target (docs/fuzzing.md): every fuzzing run starts
#: from them, and the test command runs them through their target.
REGRESSIONS: dict[str, list[bytes]] = {"frames": [], "handshake": []}

# -- the frame parser ------------------------------------------------------------------

#: Receiver-side agreements the first byte picks from (bits 1-2).
AGREEMENTS: list[dict[str, Any] | None] = [
    None,
    {},  # windows of 2**15, context kept both ways
    {"client_max_window_bits": 9, "server_max_window_bits": 9,
     "client_no_context_takeover": True, "server_no_context_takeover": True},
    {"client_max_window_bits": 12, "server_max_window_bits": 12},
]
#: max_message_size choices (bits 3-4): none, nothing at all, small, past a long frame.
LIMITS = [math.inf, 0, 200, 70000]


def _reads(data: bytes, seed: int, kind: type = bytes) -> list[Any]:
    """``data`` cut into reads by a pattern ``seed`` picks (0: one read)."""
    if not seed:
        return [kind(data)] if data else []
    rng = random.Random(seed)
    reads, position = [], 0
    while position < len(data):
        size = rng.choice((1, 2, 3, seed, 7 * seed, 4096))
        reads.append(kind(data[position:position + size]))
        position += size
    return reads


def frame_config(client: bool, agreement: int, limit: int, *, masker: int = 0,
                 as_bytearray: bool = False) -> int:
    """The first byte of a frame input that selects these settings."""
    return int(client) | agreement << 1 | limit << 3 | masker << 5 | int(as_bytearray) << 6


def frames(data: bytes) -> None:
    """Bytes 0-1: configuration and how reads are cut; then the stream as received."""
    if len(data) < 2:
        return
    config, cut_seed, stream = data[0], data[1], data[2:]
    client = bool(config & 1)
    agreed = AGREEMENTS[(config >> 1) & 3]
    limit = LIMITS[(config >> 3) & 3]
    protocol = FrameProtocol(client, Deflate(client, **agreed) if agreed is not None else None,
                             limit)
    with use_masker("c" if config & 0x20 else "python"):
        reads = _reads(stream, cut_seed, bytearray if config & 0x40 else bytes)
        events = feed(protocol, reads)
        check_events(events, limit, protocol)


def frame_seeds() -> list[bytes]:
    """Valid and broken streams for each configuration: where the fuzzer starts."""
    seeds = [*REGRESSIONS["frames"]]
    sender = wire.DeflateSender(9, True)
    for client in (False, True):
        keys = wire.key_source(1)

        def frame(opcode: int, payload: bytes, *, client: bool = client,
                  keys: Any = keys, **options: Any) -> bytes:
            return wire.encode_frame(opcode, payload, key=None if client else next(keys),
                                     **options)

        plain = (frame(wire.TEXT, "héllo €😀".encode()) + frame(wire.BINARY, b"\x00\xff" * 70)
                 + frame(wire.TEXT, b"fr", fin=False) + frame(wire.PING, b"p")
                 + frame(wire.CONTINUATION, "ag é".encode()[:-1], fin=False)
                 + frame(wire.CONTINUATION, "é".encode()[1:]) + frame(wire.PONG, b"")
                 + frame(wire.BINARY, bytes(300)) + frame(wire.CLOSE, b"\x03\xe8bye"))
        split = sender.compress(b"x" * 400)
        compressed = (frame(wire.TEXT, sender.compress(b"compressed " * 20), rsv=wire.RSV1)
                      + frame(wire.BINARY, split[:3], rsv=wire.RSV1, fin=False)
                      + frame(wire.PING, b"between") + frame(wire.CONTINUATION, split[3:])
                      + frame(wire.BINARY, sender.compress(bytes(5000), "final"), rsv=wire.RSV1)
                      + frame(wire.TEXT, b"plain too"))
        broken = (frame(wire.TEXT, b"\xff") + frame(wire.CLOSE, b"\x03\xed")
                  + wire.encode_frame(wire.BINARY, b"", length=1 << 40,
                                      key=None if client else b"abcd")
                  + frame(wire.TEXT, b"x", rsv=wire.RSV2) + frame(0x3, b""))
        for agreement in range(4):
            for limit in range(4):
                config = frame_config(client, agreement, limit, masker=limit & 1,
                                      as_bytearray=bool(agreement & 1))
                for cut in (0, 1, 5):
                    seeds.append(bytes([config, cut]) + plain)
                    seeds.append(bytes([config, cut]) + broken)
                    if agreement:
                        seeds.append(bytes([config, cut]) + compressed)
        # More frames than one batch (FRAMES_PER_BATCH), then a long frame that arrives
        # in pieces (filled in place), then a message after it.
        seeds.append(bytes([frame_config(client, 0, 0), 0]) + frame(wire.TEXT, b"", fin=False)
                     + frame(wire.CONTINUATION, b"", fin=False) * 1100
                     + frame(wire.CONTINUATION, b"!"))
        seeds.append(bytes([frame_config(client, 0, 3), 9])
                     + frame(wire.BINARY, bytes(65536)) + frame(wire.TEXT, b"after"))
    return seeds


FRAME_DICTIONARY = [b"\x81", b"\x82", b"\x01", b"\x02", b"\x80", b"\x00", b"\x88", b"\x89",
                    b"\x8a", b"\xc1", b"\xc2", b"\x7e", b"\x7f", b"\xfe", b"\xff",
                    b"\x00\x00\xff\xff", b"\x03\xe8", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80"]

# -- the opening handshake ---------------------------------------------------------------

#: In a response, this stands for the Sec-WebSocket-Accept the request's key calls
#: for: the fuzzer cannot compute SHA-1, and a wrong token ends the check at once.
ACCEPT = b"{accept}"
SUBPROTOCOLS = ["chat", "v2.chat"]
#: Compression settings the first byte picks from (bits 1-2): a client offers
#: them, a server accepts within them.
SETTINGS: list[PerMessageDeflate | None] = [
    None, PerMessageDeflate(),
    PerMessageDeflate(client_max_window_bits=15, server_max_window_bits=15),
    PerMessageDeflate(client_max_window_bits=9, server_max_window_bits=10,
                      client_no_context_takeover=True, server_no_context_takeover=True),
]
_KEY = re.compile(rb"\r\nSec-WebSocket-Key: ([^\r]*)\r\n")


class FakeStream(trio.abc.Stream):
    """A stream that never waits: reads come from a list, writes are kept.

    So a handshake runs as a plain coroutine, with no event loop: a
    thousand times cheaper per input than trio.run.
    """

    def __init__(self, reads: Sequence[bytes]) -> None:
        self.reads = list(reads)
        self.sent = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data
        key = _KEY.search(self.sent)
        if key is not None:  # a client's request: answer with the accept token it expects
            token = generate_accept_token(key.group(1))
            self.reads = [read.replace(ACCEPT, token) for read in self.reads]

    async def wait_send_all_might_not_block(self) -> None:
        raise NotImplementedError

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return self.reads.pop(0) if self.reads else b""

    async def aclose(self) -> None:
        raise NotImplementedError


class FakeNursery:
    """Takes the reader task a new connection starts, without running it."""

    def start_soon(self, *args: Any, **kwargs: Any) -> None:
        pass


def drive(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never waits to its end; its result, or what it raised."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("the coroutine waited on the event loop")


#: CPU seconds one handshake input may take. Any input (at most 17,000 bytes) runs in about
#: a millisecond, even instrumented. A header regex that backtracked quadratically once took
#: 0.75 s on a 16 KiB head: under libFuzzer's -timeout, which counts whole seconds only.
HANDSHAKE_BUDGET = 0.1


def handshake(data: bytes) -> None:
    """Byte 0: role (bit 0: server), compression settings, read cuts; then the peer's bytes."""
    started = time.thread_time()  # this thread's CPU: a busy machine does not count
    _handshake_input(data)
    spent = time.thread_time() - started
    require(spent < HANDSHAKE_BUDGET, f"one input took {spent:.3f} s of CPU")


def _handshake_input(data: bytes) -> None:
    if not data:
        return
    config, received = data[0], data[1:]
    settings = SETTINGS[(config >> 1) & 3]
    reads = _reads(received, config >> 3)
    if config & 1:
        _server(received, reads, settings, bool(config & 0x80))
    else:
        _client(reads, settings)


def _server(received: bytes, reads: list[bytes], settings: PerMessageDeflate | None,
            pick_subprotocol: bool) -> None:
    stream = FakeStream(reads)
    try:
        head, rest = drive(receive_http_head(stream))
    except HandshakeError:  # closed early, or a head over MAX_HEAD_SIZE (HeadTooLarge)
        return
    require(head.endswith(b"\r\n\r\n") and head.find(b"\r\n\r\n") == len(head) - 4,
            "the head does not end at its first blank line")
    require(len(head) <= MAX_HEAD_SIZE, f"a head of {len(head)} bytes")
    require(head.count(b"\r\n") - 2 <= MAX_HEADERS, "a head over MAX_HEADERS lines")
    # Empty lines before the start line are skipped (RFC 9112 2.2), and only those.
    require(received.lstrip(b"\r\n").startswith(head + rest),
            "bytes lost or changed reading the head")
    try:
        request = parse_request(head)
    except BadRequest as exc:
        require(exc.status in (400, 426), f"answer {exc.status} to a bad request")
        return
    except UnicodeError:  # a Host or list header that is not ASCII/IDNA: answered with 400
        return
    # What the request keeps for the connection's life stays bounded.
    require(len(request.headers) <= MAX_HEADERS
            and len(request.subprotocols) + len(request.extensions) <= MAX_LIST_ELEMENTS,
            "a request over MAX_HEADERS or MAX_LIST_ELEMENTS")
    # Accepted as a handler would: negotiation, the 101, and the frames behind the request.
    pending = WebSocketRequest(FakeNursery(), stream, request, rest, 1, 2**20, settings)
    require(pending.path.isascii(), f"path {pending.path!r}")
    subprotocol = request.subprotocols[0] if pick_subprotocol and request.subprotocols else None
    stream.sent.clear()
    connection = drive(pending.accept(subprotocol=subprotocol))
    require(isinstance(connection, WebSocketConnection), "accept() returned no connection")
    answer = bytes(stream.sent)
    require(answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
            and answer.find(b"\r\n\r\n") == len(answer) - 4, f"answer {answer[:200]!r}")
    header_fields(answer)  # every line a well-formed header: nothing the client sent broke it


def _client(reads: list[bytes], settings: PerMessageDeflate | None) -> None:
    stream = FakeStream(reads)
    try:
        connection = drive(_handshake(FakeNursery(), stream, "example.com", "/chat",
                                      SUBPROTOCOLS, [], 1, 2**20, settings))
    except ConnectionRejected as exc:
        require(type(exc.status_code) is int and exc.status_code != 101,
                f"rejected with status {exc.status_code!r}")
        require(exc.body is None or (type(exc.body) is bytes and exc.body),
                f"rejection body {exc.body!r}")
        return
    except HandshakeError:
        return
    require(connection.subprotocol in (None, *SUBPROTOCOLS),
            f"subprotocol {connection.subprotocol!r} was not offered")
    require(settings is not None or not connection._protocol.compresses,
            "compression agreed that was never offered")
    require(len(connection.handshake_headers) <= MAX_HEADERS,  # decoding them must not fail
            "a connection keeping over MAX_HEADERS headers")


def _request(*lines: bytes) -> bytes:
    return b"\r\n".join((b"GET /chat?x=1 HTTP/1.1", *lines)) + b"\r\n\r\n"


_UPGRADE = (b"Host: example.com", b"Upgrade: websocket", b"Connection: keep-alive, Upgrade",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13")


def _response(*lines: bytes, status: bytes = b"101 Switching Protocols") -> bytes:
    return b"\r\n".join((b"HTTP/1.1 " + status, *lines)) + b"\r\n\r\n"


_ACCEPTED = (b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + ACCEPT)


def handshake_seeds() -> list[bytes]:
    """Requests and responses, valid and not, for each configuration."""
    requests = [
        _request(*_UPGRADE),
        _request(*_UPGRADE, b"Sec-WebSocket-Protocol: chat, v2.chat",
                 b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, "
                 b"permessage-deflate; server_max_window_bits=10; server_no_context_takeover",
                 b"Origin: http://example.com") + b"\x81\x85abcd\x09\x04\x0f\x08\x0e",
        _request(*_UPGRADE, b'Sec-WebSocket-Extensions: permessage-deflate; '
                            b'client_max_window_bits="9"; x-unknown, foo; bar=1'),
        _request(*_UPGRADE[:4], b"Sec-WebSocket-Version: 8"),
        _request(*_UPGRADE[1:]),
        _request(*_UPGRADE, b"Content-Length: 5") + b"hello",
        _request(*_UPGRADE, b"Host: xn--nxasmq6b.example"),
        b"POST / HTTP/1.1\r\n\r\n",
        _request(*_UPGRADE, b" folded: line"),
    ]
    responses = [
        _response(*_ACCEPTED),
        _response(*_ACCEPTED, b"Sec-WebSocket-Protocol: v2.chat",
                  b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9; "
                  b"client_max_window_bits=9; server_no_context_takeover") + b"\x81\x02hi",
        _response(*_ACCEPTED, b"Sec-WebSocket-Extensions: permessage-deflate; x=1"),
        _response(*_ACCEPTED[:2], b"Sec-WebSocket-Accept: wrong"),
        _response(b"Content-Length: 4", status=b"403 Forbidden") + b"nope",
        _response(b"Transfer-Encoding: chunked", status=b"400 Bad Request")
        + b"4\r\nnope\r\n0\r\n\r\n",
        _response(status=b"404 Not Found") + b"until EOF",
        b"HTTP/1.0 101 Switching Protocols\r\n\r\n",
    ]
    long_value = b"x-long: " + b"a" * (MAX_HEAD_SIZE + 100)
    # Long runs of whitespace inside a value (once quadratic to parse), and one header
    # line more than MAX_HEADERS.
    spaced = b"x-spaced: a" + b" \t" * 7000 + b"b"
    too_many = (b"a:",) * (MAX_HEADERS + 1 - len(_UPGRADE))
    requests += [_request(*_UPGRADE, long_value), _request(*_UPGRADE, long_value)[:-4],
                 _request(*_UPGRADE, spaced), _request(*_UPGRADE, *too_many),
                 _request(*_UPGRADE, b"Sec-WebSocket-Protocol: " + b"a," * MAX_LIST_ELEMENTS
                          + b"a")]
    responses += [
        _response(*_ACCEPTED, spaced),
        _response(*_ACCEPTED, *(b"a:",) * (MAX_HEADERS + 1 - len(_ACCEPTED))),
        _response(*_ACCEPTED, long_value),
        _response(b"Transfer-Encoding: chunked", status=b"403 Forbidden") + b"zz\r\nbad",
        _response(status=b"100 Continue") + _response(*_ACCEPTED),
    ]
    seeds = [*REGRESSIONS["handshake"]]
    for settings in range(4):
        for cuts in (0, 1, 3):
            config = settings << 1 | cuts << 3
            seeds += [bytes([config | 1 | 0x80]) + request for request in requests]
            seeds += [bytes([config]) + response for response in responses]
    return seeds


HANDSHAKE_DICTIONARY = [
    b"\r\n", b"\r\n\r\n", b"GET ", b" HTTP/1.1", b"HTTP/1.1 101 ", b"Host: ", b"Upgrade: ",
    b"websocket", b"Connection: ", b"Upgrade", b"Sec-WebSocket-Key: ",
    b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Protocol: ", b"Sec-WebSocket-Extensions: ",
    b"Sec-WebSocket-Accept: ", ACCEPT, b"permessage-deflate", b"client_max_window_bits",
    b"server_max_window_bits", b"client_no_context_takeover", b"server_no_context_takeover",
    b"Content-Length: ", b"Transfer-Encoding: chunked", b"xn--", b"; ", b", ", b'="',
]

#: Every target: name -> (function, seeds, dictionary).
TARGETS = {
    "frames": (frames, frame_seeds, FRAME_DICTIONARY),
    "handshake": (handshake, handshake_seeds, HANDSHAKE_DICTIONARY),
}
