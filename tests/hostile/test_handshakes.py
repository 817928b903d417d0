"""Hostile opening handshakes, sent as raw bytes over real sockets on 127.0.0.1.

Server role: a request that is not a valid upgrade gets the documented answer (400; 426 with
``Sec-WebSocket-Version: 13`` for a wrong version; 431 for a head over ``MAX_HEAD_SIZE``), or
is dropped without one where no answer is possible. Either way the connection ends, the
handler never runs, and a real client is served right after.

Client role: a raw server that answers badly makes our client raise the documented exception
within bounds and close its socket, leaving no task behind.
"""

from __future__ import annotations

import base64
import functools
import gc
import hashlib
import logging
import re
import socket
import ssl
import struct
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trustme

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionFailed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketRequest,
    connect_websocket,
    open_websocket,
    serve_websocket,
)
from trio_websocket_core.toolkit import (
    MAX_HEAD_SIZE,
    MAX_HEADERS,
    MAX_LIST_ELEMENTS,
    HeadTooLarge,
    NotHTTP,
    header_fields,
)
from trio_websocket_server._upgrade import parse_request

HOST = "127.0.0.1"
#: The handshake timeout, for the cases that wait it out: small, so they stay quick.
CONNECT_TIMEOUT = 0.5
#: A generous bound for anything that must not wait for a timeout at all.
PROMPT = 10.0
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---------------------------------------------------------------------------
# Building raw requests and responses


def accept_for(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept token for ``key`` (RFC 6455 4.2.2), computed independently."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def _without(lines: list[bytes], names: tuple[bytes, ...]) -> list[bytes]:
    lowered = {name.lower() for name in names}
    return [line for line in lines if line.split(b":")[0].lower() not in lowered]


GOOD_REQUEST = [b"Host: 127.0.0.1", b"Upgrade: websocket", b"Connection: Upgrade",
                b"Sec-WebSocket-Key: " + KEY, b"Sec-WebSocket-Version: 13"]


def upgrade(start: bytes = b"GET /hostile HTTP/1.1", *, drop: tuple[bytes, ...] = (),
            add: tuple[bytes, ...] = ()) -> bytes:
    """A valid upgrade request for /hostile, spoiled as asked."""
    return b"\r\n".join([start, *_without(GOOD_REQUEST, drop), *add]) + b"\r\n\r\n"


def swap(name: bytes, *values: bytes) -> bytes:
    """A valid request with header ``name`` given these values, one line each (none: missing)."""
    return upgrade(drop=(name,), add=tuple(name + b": " + value for value in values))


def extra(*lines: bytes) -> bytes:
    """A valid request with these raw header lines added."""
    return upgrade(add=lines)


def elements(count: int) -> bytes:
    """A comma list of ``count`` distinct tokens."""
    return b", ".join(b"p%d" % i for i in range(count))


def key_of(size: int) -> bytes:
    """A well-formed base64 key of ``size`` decoded bytes (only 16 is valid)."""
    return base64.b64encode(bytes(range(size)))


def client_hello() -> bytes:
    """The first flight of a real TLS client: a ClientHello record."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello.startswith(b"\x16\x03")  # a TLS handshake record
    return hello


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A short client-to-server frame, masked as RFC 6455 requires."""
    mask = b"\x01\x02\x03\x04"
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def parse_response(data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers (names lower case) and body of a complete HTTP/1.1 response."""
    head, blank, body = data.partition(b"\r\n\r\n")
    assert blank, f"no complete response head in {data[:200]!r}"
    status_line, *lines = head.split(b"\r\n")
    match = re.fullmatch(rb"HTTP/1\.1 (\d{3}) [^\r\n]*", status_line)
    assert match, status_line
    headers = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        assert colon, line
        headers[name.lower()] = value.strip()
    return int(match.group(1)), headers, body


# ---------------------------------------------------------------------------
# The server under attack, and a raw client


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@dataclass
class Served:
    """A running serve_websocket and what its handler saw."""

    port: int
    client_context: ssl.SSLContext | None  # set when the server speaks TLS
    calls: list[str] = field(default_factory=list)  # the path of every request handled
    closes: list[CloseReason] = field(default_factory=list)  # how handled connections ended


@pytest.fixture
def start_server(nursery: trio.Nursery, ca: trustme.CA) -> Callable[..., Awaitable[Served]]:
    """Start an echo server that records its handler calls."""

    async def start(connect_timeout: float = CONNECT_TIMEOUT, tls: bool = False) -> Served:
        server_context = client_context = None
        if tls:
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert(HOST).configure_cert(server_context)
            client_context = ssl.create_default_context()
            ca.configure_trust(client_context)
        served = Served(0, client_context)

        async def handler(request: WebSocketRequest) -> None:
            served.calls.append(request.path)
            ws = await request.accept()
            try:
                while True:
                    await ws.send_message(await ws.get_message())
            except ConnectionClosed as exc:
                served.closes.append(exc.reason)

        server = await nursery.start(functools.partial(
            serve_websocket, handler, HOST, 0, server_context, connect_timeout=connect_timeout))
        served.port = server.port
        return served

    return start


async def assert_serving(served: Served, *handled: str) -> None:
    """The handler saw exactly ``handled`` so far, and a real client still gets an echo."""
    assert served.calls == list(handled), "the handler was called for a hostile request"
    with trio.fail_after(PROMPT):
        async with open_websocket(HOST, served.port, "/check",
                                  use_ssl=served.client_context or False,
                                  connect_timeout=PROMPT) as ws:
            await ws.send_message("still serving")
            assert await ws.get_message() == "still serving"
    assert served.calls == [*handled, "/check"]


async def raw_connect(served: Served) -> trio.abc.Stream:
    stream = await trio.open_tcp_stream(HOST, served.port)
    if served.client_context is None:
        return stream
    # The server ends a refusal without close_notify, as HTTP servers do: its
    # Content-Length delimits the answer, so the EOF is clean for an HTTPS client.
    tls = trio.SSLStream(stream, served.client_context, server_hostname=HOST,
                         https_compatible=True)
    await tls.do_handshake()
    return tls


async def read_to_end(stream: trio.abc.Stream) -> bytes:
    """Everything the peer sends until it closes; failing if it does not close in time."""
    received = bytearray()
    with trio.fail_after(PROMPT):
        while data := await stream.receive_some():
            received += data
    return bytes(received)


async def exchange(served: Served, request: bytes) -> bytes:
    """Send ``request`` and return all the server says before it closes the connection."""
    with trio.fail_after(PROMPT):
        stream = await raw_connect(served)
    async with stream:
        await stream.send_all(request)
        return await read_to_end(stream)


async def response_status(served: Served, request: bytes) -> int:
    """Send ``request`` and return the status of the head the server answers with."""
    with trio.fail_after(PROMPT):
        stream = await raw_connect(served)
        async with stream:
            await stream.send_all(request)
            response = bytearray()
            while b"\r\n\r\n" not in response:
                data = await stream.receive_some()
                assert data, f"closed after {bytes(response)!r}"
                response += data
    return parse_response(bytes(response))[0]


def assert_refused(response: bytes, status: int) -> None:
    """A complete refusal: the status, an exact Content-Length, and ``Connection: close``."""
    got, headers, body = parse_response(response)
    assert got == status, response[:300]
    assert int(headers[b"content-length"]) == len(body)
    assert headers[b"connection"] == b"close"
    if status == 426:
        assert headers[b"sec-websocket-version"] == b"13"  # what to retry with


class LogWatch(logging.Handler):
    """Collects the server's log records, waking a waiting test on each one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._arrived = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)  # the server logs from the Trio thread
        self._arrived.set()

    async def wait_for(self, text: str) -> logging.LogRecord:
        while True:
            for record in self.records:
                if text in record.getMessage():
                    return record
            self._arrived = trio.Event()
            await self._arrived.wait()


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[LogWatch]:
    caplog.set_level(logging.DEBUG, logger="trio_websocket_server")
    watch = LogWatch()
    logger = logging.getLogger("trio_websocket_server")
    logger.addHandler(watch)
    yield watch
    logger.removeHandler(watch)


# ---------------------------------------------------------------------------
# Server role: requests that get an HTTP error

VERSION = b"Sec-WebSocket-Version"
WS_KEY = b"Sec-WebSocket-Key"

REFUSED = [
    # Methods and request lines: only "GET <target> HTTP/1.1" will do.
    pytest.param(upgrade(b"POST /hostile HTTP/1.1"), 400, id="method-POST"),
    pytest.param(upgrade(b"HEAD /hostile HTTP/1.1"), 400, id="method-HEAD"),
    pytest.param(upgrade(b"get /hostile HTTP/1.1"), 400, id="method-lowercase-get"),
    pytest.param(upgrade(b"CONNECT 127.0.0.1:80 HTTP/1.1"), 400, id="method-CONNECT"),
    pytest.param(upgrade(b"GET /hostile HTTP/1.0"), 400, id="version-HTTP-1.0"),
    pytest.param(upgrade(b"GET /hostile HTTP/2.0"), 400, id="version-HTTP-2.0"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, id="http2-preface"),
    pytest.param(upgrade(b"GET /hostile HTTP/1.1.1"), 400, id="version-garbage"),
    pytest.param(upgrade(b"GET /hostile http/1.1"), 400, id="version-lowercase"),
    pytest.param(upgrade(b"GET /hostile"), 400, id="version-missing"),
    pytest.param(upgrade(b"GET  /hostile HTTP/1.1"), 400, id="request-line-double-space"),
    pytest.param(upgrade(b"GET /caf\xc3\xa9 HTTP/1.1"), 400, id="target-non-ascii"),
    pytest.param(upgrade(b"GET /a\x00b HTTP/1.1"), 400, id="target-nul"),
    pytest.param(b"GET /hostile HTTP/1.1\r\n\r\n", 400, id="no-headers-at-all"),
    pytest.param(b"\xde\xad\xbe\xef\r\n\r\n", 400, id="binary-garbage"),
    # No blank line would ever come: answered at the first byte, not at the timeout.
    pytest.param(client_hello(), 400, id="tls-client-hello-to-plain-port"),
    pytest.param(b"\r\n\x00", 400, id="empty-line-then-binary"),
    pytest.param(b"\r\n" * (MAX_HEAD_SIZE // 2 + 1), 431, id="endless-empty-lines"),
    # Missing or wrong upgrade headers.
    pytest.param(swap(b"Host"), 400, id="missing-Host"),
    pytest.param(swap(b"Upgrade"), 400, id="missing-Upgrade"),
    pytest.param(swap(b"Connection"), 400, id="missing-Connection"),
    pytest.param(swap(WS_KEY), 400, id="missing-key"),
    pytest.param(swap(VERSION), 400, id="missing-version"),
    pytest.param(swap(b"Upgrade", b"h2c"), 400, id="upgrade-h2c"),
    pytest.param(swap(b"Connection", b"keep-alive"), 400, id="connection-without-upgrade"),
    # Headers that may appear once (RFC 9112 3.2, RFC 6455 4.1 and 11.3.1).
    pytest.param(swap(b"Host", b"127.0.0.1", b"evil.example"), 400, id="repeated-Host"),
    pytest.param(swap(WS_KEY, KEY, key_of(16)), 400, id="repeated-key"),
    pytest.param(swap(VERSION, b"8", b"13"), 400, id="repeated-version"),
    # Keys: base64 of exactly 16 bytes (RFC 6455 4.2.1).
    pytest.param(swap(WS_KEY, b""), 400, id="key-empty"),
    pytest.param(swap(WS_KEY, key_of(15)), 400, id="key-15-bytes"),
    pytest.param(swap(WS_KEY, key_of(17)), 400, id="key-17-bytes"),
    pytest.param(swap(WS_KEY, b"not base64 at all!!!!!!!"), 400, id="key-not-base64"),
    pytest.param(swap(WS_KEY, KEY.rstrip(b"=")), 400, id="key-unpadded"),
    # Versions other than 13: 426, naming the one we speak.
    pytest.param(swap(VERSION, b"8"), 426, id="version-8"),
    pytest.param(swap(VERSION, b"14"), 426, id="version-14"),
    pytest.param(swap(VERSION, b"thirteen"), 426, id="version-not-a-number"),
    # Heads over the limit: 431, whichever part is long.
    pytest.param(upgrade(b"GET /" + b"a" * MAX_HEAD_SIZE + b" HTTP/1.1"), 431,
                 id="request-line-over-limit"),
    pytest.param(extra(b"X-Big: " + b"a" * MAX_HEAD_SIZE), 431, id="header-line-over-limit"),
    pytest.param(extra(*(b"X-Pad-%05d: padding" % i for i in range(MAX_HEAD_SIZE // 16))), 431,
                 id="many-headers-over-limit"),
    pytest.param(b"GET /hostile HTTP/1.1\r\nX-Endless: " + b"a" * MAX_HEAD_SIZE, 431,
                 id="unfinished-head-over-limit"),
    # Within 16 KiB but over MAX_HEADERS lines: 431 too (each line would be kept for the
    # connection's life).
    pytest.param(extra(*(b"a:",) * 4000), 431, id="thousands-of-tiny-headers"),
    # Over MAX_LIST_ELEMENTS subprotocols and extension offers, alone or together.
    pytest.param(extra(b"Sec-WebSocket-Protocol: " + elements(MAX_LIST_ELEMENTS + 1)), 400,
                 id="subprotocols-over-limit"),
    pytest.param(extra(*(b"Sec-WebSocket-Protocol: " + elements(2),)
                       * (MAX_LIST_ELEMENTS // 2 + 1)), 400, id="subprotocol-lines-over-limit"),
    pytest.param(extra(b"Sec-WebSocket-Protocol: " + elements(MAX_LIST_ELEMENTS // 2),
                       b"Sec-WebSocket-Extensions: " + elements(MAX_LIST_ELEMENTS // 2 + 1)),
                 400, id="subprotocols-and-extensions-over-limit"),
    # Bytes HTTP does not allow in a head.
    pytest.param(extra(b"X-Nul: a\x00b"), 400, id="nul-in-value"),
    pytest.param(extra(b"X-Control: a\x01b"), 400, id="control-byte-in-value"),
    pytest.param(extra(b"X-Del: a\x7fb"), 400, id="del-in-value"),
    pytest.param(extra(b"X-Cr: a\rb"), 400, id="bare-cr-in-value"),
    pytest.param(upgrade().replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\n"), 400,
                 id="bare-lf-inside-head"),
    pytest.param(extra(b"X Bad: 1"), 400, id="space-in-name"),
    pytest.param(extra(b"X-Caf\xc3\xa9: 1"), 400, id="non-ascii-name"),
    pytest.param(swap(b"Host", b"\xff\xfe"), 400, id="non-ascii-host"),
    pytest.param(extra(b"X-Space : 1"), 400, id="space-before-colon"),
    pytest.param(extra(b"No colon here"), 400, id="line-without-colon"),
    pytest.param(extra(b": no name"), 400, id="empty-name"),
    pytest.param(extra(b"X-Folded: one", b" two"), 400, id="obs-fold-space"),
    pytest.param(extra(b"X-Folded: one", b"\ttwo"), 400, id="obs-fold-tab"),
    # A body on the upgrade GET.
    pytest.param(extra(b"Content-Length: 5") + b"hello", 400, id="content-length-body"),
    pytest.param(extra(b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n", 400,
                 id="chunked-body"),
    pytest.param(extra(b"Content-Length: 5", b"Transfer-Encoding: chunked") + b"hello", 400,
                 id="content-length-and-chunked"),
    pytest.param(extra(b"Content-Length: five"), 400, id="content-length-not-a-number"),
]


@pytest.mark.parametrize(("request_bytes", "status"), REFUSED)
async def test_bad_request_gets_its_status_and_the_server_lives_on(
        start_server: Callable[..., Awaitable[Served]], request_bytes: bytes,
        status: int) -> None:
    served = await start_server()
    assert_refused(await exchange(served, request_bytes), status)
    await assert_serving(served)


async def test_bad_request_inside_tls_is_answered_inside_tls(
        start_server: Callable[..., Awaitable[Served]]) -> None:
    served = await start_server(tls=True)
    assert_refused(await exchange(served, upgrade(b"POST /hostile HTTP/1.1")), 400)
    assert_refused(await exchange(served, swap(VERSION, b"8")), 426)
    await assert_serving(served)


@pytest.mark.parametrize(("size", "status"), [
    pytest.param(MAX_HEAD_SIZE, 101, id="exactly-the-limit-is-served"),
    pytest.param(MAX_HEAD_SIZE + 1, 431, id="one-byte-over-is-431"),
])
async def test_head_limit_is_exactly_max_head_size(
        start_server: Callable[..., Awaitable[Served]], size: int, status: int) -> None:
    served = await start_server()
    padding = size - len(extra(b"X-Pad: "))
    request = extra(b"X-Pad: " + b"p" * padding)
    assert len(request) == size
    assert await response_status(served, request) == status
    await assert_serving(served, *(["/hostile"] if status == 101 else []))


@pytest.mark.parametrize(("count", "status"), [
    pytest.param(MAX_HEADERS, 101, id="max-headers-is-served"),
    pytest.param(MAX_HEADERS + 1, 431, id="one-header-over-is-431"),
])
async def test_header_count_limit_is_exactly_max_headers(
        start_server: Callable[..., Awaitable[Served]], count: int, status: int) -> None:
    served = await start_server()
    request = extra(*(b"X-Pad-%03d: p" % i for i in range(count - len(GOOD_REQUEST))))
    assert request.count(b"\r\n") - 2 == count
    assert await response_status(served, request) == status
    await assert_serving(served, *(["/hostile"] if status == 101 else []))


def whitespace_head(start_line: bytes, lines: int) -> bytes:
    """A head of exactly MAX_HEAD_SIZE bytes: ``lines`` values, each a long run of spaces
    and tabs between two other bytes, the worst case for a backtracking header regex."""
    empty = b"\r\n".join([start_line, *(b"X-%03d: ab" % i for i in range(lines))]) + b"\r\n\r\n"
    room = MAX_HEAD_SIZE - len(empty)
    runs = [room // lines + (i < room % lines) for i in range(lines)]
    head = b"\r\n".join([start_line, *(b"X-%03d: a" % i + (b" \t" * run)[:run] + b"b"
                                        for i, run in enumerate(runs))]) + b"\r\n\r\n"
    assert len(head) == MAX_HEAD_SIZE
    return head


@pytest.mark.parametrize("start_line", [
    pytest.param(b"GET /hostile HTTP/1.1", id="request"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols", id="101-response"),
])
@pytest.mark.parametrize("lines", [1, 8, MAX_HEADERS - 1])
def test_header_fields_parse_whitespace_runs_in_linear_time(start_line: bytes,
                                                            lines: int) -> None:
    # The server parses every head in one scheduler pass, so a slow parse stalls all its
    # connections; a client parses a 101 the same way. The header regex once backtracked
    # quadratically on runs of whitespace: this head took ~0.75 s with one run (~0.11 s
    # with 8). A linear parse takes ~0.1 ms: 50 ms is generous for a slow CI machine yet
    # far below the quadratic cost. Best of three, so one scheduling hiccup does not count.
    head = whitespace_head(start_line, lines)
    took = []
    for _ in range(3):
        started = time.perf_counter()
        fields = header_fields(head)
        took.append(time.perf_counter() - started)
    assert min(took) < 0.05, f"{min(took) * 1000:.1f} ms to parse a {len(head)} byte head"
    assert len(fields) == lines
    assert all(value[:1] == b"a" and value[-1:] == b"b" and not value[1:-1].strip(b" \t")
               for _, value in fields)


def _maximal_heads() -> dict[str, bytes]:
    """Legal heads that make the request keep the most: MAX_HEADERS lines, tiny or long,
    and MAX_LIST_ELEMENTS list elements behind a mass of empty ones (which are dropped)."""
    free = MAX_HEADERS - len(GOOD_REQUEST)
    tiny = extra(*(b"a:",) * free)
    long = b"a:" + b"x" * ((MAX_HEAD_SIZE - len(tiny)) // free)
    lists = extra(b"Sec-WebSocket-Protocol: " + b"," * 7000 + elements(MAX_LIST_ELEMENTS // 2),
                  b"Sec-WebSocket-Extensions: " + b"," * 7000
                  + elements(MAX_LIST_ELEMENTS // 2), *(b"a:",) * (free - 2))
    return {"tiny-lines": tiny, "long-lines": extra(*(long,) * free), "lists": lists}


@pytest.mark.parametrize("name", sorted(_maximal_heads()))
def test_a_maximal_legal_head_keeps_bounded_memory(name: str) -> None:
    # A request, and its connection, keep the parsed headers and lists for life. 16 KiB of
    # 4,000 tiny lines once kept ~500 KiB; within MAX_HEADERS and MAX_LIST_ELEMENTS a full
    # head keeps ~30 KiB at most (its bytes, and an object or two per line).
    head = _maximal_heads()[name]
    assert len(head) <= MAX_HEAD_SIZE and head.count(b"\r\n") - 2 == MAX_HEADERS
    parse_request(head)  # warm up: first-use caches (the idna codec, ...) are not the request's
    gc.collect()
    tracemalloc.start()
    try:
        # None for the nursery and the stream: only answering the request uses them.
        request = WebSocketRequest(None, None, parse_request(head), b"",  # type: ignore[arg-type]
                                   1, 2**20, None)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept < 4 * MAX_HEAD_SIZE, f"{kept / 1024:.0f} KiB kept for a {len(head)} byte head"
    assert len(request.headers) <= MAX_HEADERS
    assert len(request.proposed_subprotocols) <= MAX_LIST_ELEMENTS


LOWERCASE_NAMES = b"\r\n".join([b"GET /hostile HTTP/1.1", *(
    line.split(b":")[0].lower() + b":" + line.split(b":", 1)[1] for line in GOOD_REQUEST
)]) + b"\r\n\r\n"


@pytest.mark.parametrize("request_bytes", [
    pytest.param(extra(b"Content-Length: 0"), id="content-length-0"),
    # RFC 9112 2.2: empty lines before the request line are ignored.
    pytest.param(b"\r\n" + upgrade(), id="empty-line-first"),
    pytest.param(b"\r\n\n\r\n" + upgrade(), id="empty-lines-first"),
    pytest.param(LOWERCASE_NAMES, id="lowercase-names"),
    pytest.param(swap(b"Connection", b"keep-alive, Upgrade"), id="connection-list"),
    pytest.param(swap(b"Connection", b"Upgrade", b"keep-alive"), id="connection-two-lines"),
    pytest.param(swap(b"Upgrade", b"WebSocket"), id="upgrade-mixed-case"),
    pytest.param(swap(b"Host", b"  127.0.0.1 \t"), id="whitespace-around-value"),
    pytest.param(extra(b"X-Latin: caf\xe9"), id="obs-text-value"),
    pytest.param(extra(b"Sec-WebSocket-Protocol: " + elements(MAX_LIST_ELEMENTS // 2),
                       b"Sec-WebSocket-Extensions: " + elements(MAX_LIST_ELEMENTS // 2)),
                 id="list-elements-at-limit"),
    # RFC 9110 5.6.1: empty list elements do not count.
    pytest.param(extra(b"Sec-WebSocket-Protocol: " + b" ,," * 2000 + b"chat"),
                 id="empty-list-elements"),
])
async def test_unusual_but_valid_requests_are_served(
        start_server: Callable[..., Awaitable[Served]], request_bytes: bytes) -> None:
    # The other side of strictness: what HTTP allows must still get its 101.
    served = await start_server()
    with trio.fail_after(PROMPT):
        stream = await raw_connect(served)
        async with stream:
            await stream.send_all(request_bytes + masked_frame(0x1, b"hi"))
            response = bytearray()
            while not response.endswith(b"\x81\x02hi"):
                data = await stream.receive_some()
                assert data, f"closed after {bytes(response)!r}"
                response += data
    status, headers, _ = parse_response(bytes(response))
    assert status == 101
    assert headers[b"sec-websocket-accept"] == accept_for(KEY)
    assert served.calls == ["/hostile"]


# ---------------------------------------------------------------------------
# Server role: bytes after the head


@pytest.mark.parametrize(("trailing", "echoed"), [
    pytest.param(masked_frame(0x1, b"hi"), b"\x81\x02hi", id="a-valid-frame-is-a-message"),
    pytest.param(b"hello world", None, id="junk-is-a-protocol-error"),
    pytest.param(b"\r\n\r\n", None, id="stray-crlf-is-a-protocol-error"),
])
async def test_bytes_behind_the_head_are_frames_only_if_valid(
        start_server: Callable[..., Awaitable[Served]], trailing: bytes,
        echoed: bytes | None) -> None:
    served = await start_server()
    with trio.fail_after(PROMPT):
        stream = await raw_connect(served)
        async with stream:
            await stream.send_all(extra(b"Content-Length: 0") + trailing)
            received = bytearray()
            while echoed is None or not received.endswith(echoed):
                data = await stream.receive_some()
                if not data:
                    break
                received += data
    status, _, frames = parse_response(bytes(received))
    assert status == 101
    assert served.calls == ["/hostile"]
    if echoed is not None:
        assert frames == echoed  # the server read it as a message and echoed it
    else:
        # A close frame with 1002, then the end: the junk never became a message.
        assert frames[0] == 0x88, frames
        assert struct.unpack("!H", frames[2:4])[0] == 1002
    await assert_serving(served, "/hostile")
    # The handler saw junk fail the connection (1002), a frame as a message (then our
    # hang-up, 1006).
    assert [reason.code for reason in served.closes] == [1006 if echoed else 1002, 1000]


# ---------------------------------------------------------------------------
# Server role: no answer is possible


@pytest.mark.parametrize(("payload", "tls"), [
    pytest.param(b"", False, id="connects-and-says-nothing"),
    pytest.param(upgrade()[:-2], False, id="head-never-finished"),
    pytest.param(upgrade().replace(b"\r\n", b"\n"), False, id="bare-lf-line-endings"),
    pytest.param(b"", True, id="says-nothing-on-tls-port"),
])
async def test_unfinished_head_is_dropped_after_connect_timeout(
        start_server: Callable[..., Awaitable[Served]], payload: bytes, tls: bool) -> None:
    # No blank line ever ends the head, so the server waits for it, but no longer than
    # connect_timeout, and then hangs up without an answer.
    served = await start_server(tls=tls)
    start = trio.current_time()
    with trio.fail_after(PROMPT):
        stream = await trio.open_tcp_stream(HOST, served.port)
    async with stream:
        await stream.send_all(payload)
        received = await read_to_end(stream)
    elapsed = trio.current_time() - start
    assert received == b""
    assert CONNECT_TIMEOUT <= elapsed < CONNECT_TIMEOUT + PROMPT
    await assert_serving(served)


async def test_slowloris_is_dropped_while_others_are_served(
        start_server: Callable[..., Awaitable[Served]]) -> None:
    timeout = 1.0
    served = await start_server(connect_timeout=timeout)
    request = upgrade()
    sent = 0
    underway = trio.Event()
    dropped_after: float | None = None

    async def trickle(stream: trio.SocketStream, cancel_scope: trio.CancelScope) -> None:
        nonlocal sent
        with cancel_scope:
            try:
                for i in range(len(request)):
                    await stream.send_all(request[i:i + 1])
                    sent += 1
                    if sent == 5:
                        underway.set()
                    await trio.sleep(0.02)  # the attack's pace (the whole head takes ~3 s)
            except trio.BrokenResourceError:
                pass  # the server is gone: what we are waiting for

    async def watch(stream: trio.SocketStream, trickler: trio.CancelScope) -> None:
        nonlocal dropped_after
        try:
            assert await read_to_end(stream) == b""
        except trio.BrokenResourceError:
            pass  # a reset: a byte of ours was still unread when the server hung up
        dropped_after = trio.current_time() - start
        trickler.cancel()

    start = trio.current_time()
    stream = await trio.open_tcp_stream(HOST, served.port)
    async with stream, trio.open_nursery() as nursery:
        trickler = trio.CancelScope()
        nursery.start_soon(trickle, stream, trickler)
        nursery.start_soon(watch, stream, trickler)
        with trio.fail_after(PROMPT):
            await underway.wait()
        await assert_serving(served)  # while the slow head is still coming
        assert dropped_after is None, "the other client was not served meanwhile"
    assert dropped_after is not None
    assert timeout <= dropped_after < timeout + PROMPT
    assert sent < len(request), "the whole head got through"
    assert served.calls == ["/check"]


async def test_client_half_closing_mid_head_is_dropped_at_once(
        start_server: Callable[..., Awaitable[Served]]) -> None:
    served = await start_server(connect_timeout=60)  # so only the EOF can end it in time
    with trio.fail_after(PROMPT):
        stream = await trio.open_tcp_stream(HOST, served.port)
        async with stream:
            await stream.send_all(upgrade()[:40])
            await stream.send_eof()
            assert await read_to_end(stream) == b""
    await assert_serving(served)


async def test_client_resetting_mid_head_is_forgotten_at_once(
        start_server: Callable[..., Awaitable[Served]], server_log: LogWatch) -> None:
    served = await start_server(connect_timeout=60)
    with trio.fail_after(PROMPT):
        stream = await trio.open_tcp_stream(HOST, served.port)
        await stream.send_all(upgrade()[:40])
        # Linger 0: closing sends an RST instead of a FIN.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
        record = await server_log.wait_for("handshake failed")
    assert record.levelno == logging.DEBUG
    await assert_serving(served)


async def test_plain_http_to_tls_port_gets_no_http_answer(
        start_server: Callable[..., Awaitable[Served]]) -> None:
    served = await start_server(tls=True)
    with trio.fail_after(PROMPT):
        stream = await trio.open_tcp_stream(HOST, served.port)
    async with stream:
        await stream.send_all(upgrade())
        received = await read_to_end(stream)  # closed promptly, not after a timeout
    # Nothing readable as HTTP: at most a TLS alert record.
    assert received == b"" or received.startswith(b"\x15\x03"), received[:50]
    await assert_serving(served)


# ---------------------------------------------------------------------------
# Client role: a raw server that answers badly


@dataclass
class BadServer:
    """A raw TCP server on 127.0.0.1 that answers a handshake with given bytes."""

    port: int
    requests: list[bytes] = field(default_factory=list)
    client_gone: trio.Event = field(default_factory=trio.Event)  # our client closed its end


Answer = bytes | Callable[[bytes], bytes]  # the bytes, or made from the client's key


async def start_bad_server(nursery: trio.Nursery, answer: Answer, then: str = "hold", *,
                           read_request: bool = True) -> BadServer:
    """Serve ``answer``, then "hold" (read until the client closes), "close" or "reset"."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    bad = BadServer(listeners[0].socket.getsockname()[1])

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            head = bytearray()
            while read_request and b"\r\n\r\n" not in head:
                data = await stream.receive_some()
                assert data, "the client left before finishing its request"
                head += data
            bad.requests.append(bytes(head))
            found = re.search(rb"\r\nSec-WebSocket-Key: ([^\r]*)\r\n", head)
            data = answer(found.group(1) if found else b"") if callable(answer) else answer
            try:
                await stream.send_all(data)
            except trio.BrokenResourceError:
                return
            if then == "reset":
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         struct.pack("ii", 1, 0))
            elif then == "hold":
                try:
                    while await stream.receive_some():
                        pass
                except trio.BrokenResourceError:
                    pass
                bad.client_gone.set()

    await nursery.start(trio.serve_listeners, serve, listeners)
    return bad


def switching(*, drop: tuple[bytes, ...] = (), add: tuple[bytes, ...] = (),
              status_line: bytes = b"HTTP/1.1 101 Switching Protocols",
              trailing: bytes = b"") -> Callable[[bytes], bytes]:
    """A 101 answer to the client's key, spoiled as asked."""
    def answer(key: bytes) -> bytes:
        lines = [b"Upgrade: websocket", b"Connection: Upgrade",
                 b"Sec-WebSocket-Accept: " + accept_for(key)]
        return b"\r\n".join([status_line, *_without(lines, drop), *add]) + b"\r\n\r\n" + trailing
    return answer


@dataclass
class Attempt:
    """How a client call ended."""

    error: BaseException
    elapsed: float


async def attempt(port: int, via: str, *, use_ssl: bool | ssl.SSLContext = False,
                  connect_timeout: float = PROMPT * 2, **options: Any) -> Attempt:
    """Connect our client with ``via``; return the exception it raised, within PROMPT."""
    start = trio.current_time()
    with trio.fail_after(PROMPT):
        if via == "open_websocket":
            with pytest.raises(HandshakeError) as caught:
                async with open_websocket(HOST, port, "/", use_ssl=use_ssl,
                                          connect_timeout=connect_timeout, **options):
                    pytest.fail("the handshake succeeded")
        else:
            async with trio.open_nursery() as nursery:
                with pytest.raises(HandshakeError) as caught:
                    await connect_websocket(nursery, HOST, port, "/", use_ssl=use_ssl,
                                            **options)
                assert not nursery.child_tasks, "a failed handshake left a task running"
    return Attempt(caught.value, trio.current_time() - start)


BOTH_WAYS = pytest.mark.parametrize("via", ["open_websocket", "connect_websocket"])


@pytest.mark.parametrize("answer", [
    pytest.param({}, id="plain"),
    # A list header may be split over several lines (RFC 9110 5.3).
    pytest.param({"drop": (b"Connection",), "add": (b"Connection: Upgrade",
                                                     b"Connection: keep-alive")},
                 id="connection-two-lines"),
    pytest.param({"add": (b"a:",) * (MAX_HEADERS - 3)}, id="max-headers"),
])
async def test_bad_server_harness_can_succeed(nursery: trio.Nursery,
                                              answer: dict[str, Any]) -> None:
    # The control for the cases below: unspoiled, the same 101 opens a connection.
    close_frame = b"\x88\x02" + struct.pack("!H", 1000)
    bad = await start_bad_server(nursery, switching(trailing=close_frame, **answer), "close")
    with trio.fail_after(PROMPT):
        async with open_websocket(HOST, bad.port, "/", use_ssl=False) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await ws.get_message()
    assert caught.value.reason.code == 1000
    assert bad.requests[0].startswith(b"GET / HTTP/1.1\r\n")


@BOTH_WAYS
@pytest.mark.parametrize(("answer", "then", "status", "header", "body"), [
    pytest.param(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nX-Why: nope\r\n\r\n"
                 b"bad request", "hold", 400, (b"x-why", b"nope"), b"bad request",
                 id="400-with-body"),
    pytest.param(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "hold", 403,
                 (b"content-length", b"0"), None, id="403-empty-body-is-None"),
    pytest.param(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hold", 404,
                 (b"transfer-encoding", b"chunked"), b"hello world", id="404-chunked-body"),
    pytest.param(b"HTTP/1.1 500 Internal Server Error\r\nX-Framing: none\r\n\r\nuntil close",
                 "close", 500, (b"x-framing", b"none"), b"until close",
                 id="500-body-until-close"),
    pytest.param(b"HTTP/1.1 301 Moved Permanently\r\nLocation: ws://elsewhere/\r\n"
                 b"Content-Length: 0\r\n\r\n", "hold", 301, (b"location", b"ws://elsewhere/"),
                 None, id="301-redirect"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "hold", 200,
                 (b"content-length", b"2"), b"ok", id="200-plain-http"),
    pytest.param(b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                 b"Content-Length: 0\r\n\r\n", "hold", 426, (b"sec-websocket-version", b"13"),
                 None, id="426-version"),
])
async def test_client_rejected_with_status_headers_and_body(
        nursery: trio.Nursery, via: str, answer: bytes, then: str, status: int,
        header: tuple[bytes, bytes], body: bytes | None) -> None:
    bad = await start_bad_server(nursery, answer, then)
    failure = await attempt(bad.port, via)
    assert isinstance(failure.error, ConnectionRejected)
    assert failure.error.status_code == status
    assert header in failure.error.headers
    assert failure.error.body == body
    if then == "hold":  # our client closed its socket
        with trio.fail_after(PROMPT):
            await bad.client_gone.wait()


DEFLATE_OFFER: dict[str, Any] = {}  # the default: permessage-deflate is offered
NO_OFFER: dict[str, Any] = {"compression": None}


@BOTH_WAYS
@pytest.mark.parametrize(("answer", "then", "options", "error"), [
    pytest.param(switching(drop=(b"Upgrade",)), "hold", {}, HandshakeError,
                 id="101-without-Upgrade"),
    pytest.param(switching(drop=(b"Connection",)), "hold", {}, HandshakeError,
                 id="101-without-Connection"),
    pytest.param(switching(drop=(b"Upgrade",), add=(b"Upgrade: h2c",)), "hold", {},
                 HandshakeError, id="101-upgrade-h2c"),
    pytest.param(switching(drop=(b"Sec-WebSocket-Accept",)), "hold", {}, HandshakeError,
                 id="101-without-accept"),
    pytest.param(lambda key: switching()(key + b"x"), "hold", {}, HandshakeError,
                 id="101-wrong-accept"),
    pytest.param(lambda key: switching(add=(b"Sec-WebSocket-Accept: " + accept_for(key),))(key),
                 "hold", {}, HandshakeError, id="101-accept-twice"),
    pytest.param(switching(add=(b"Sec-WebSocket-Protocol: superchat",)), "hold",
                 {"subprotocols": ["chat"]}, HandshakeError, id="101-subprotocol-not-offered"),
    pytest.param(switching(add=(b"Sec-WebSocket-Protocol: chat",)), "hold", {},
                 HandshakeError, id="101-subprotocol-when-none-offered"),
    pytest.param(switching(add=(b"Sec-WebSocket-Extensions: x-unknown",)), "hold",
                 DEFLATE_OFFER, HandshakeError, id="101-extension-not-offered"),
    pytest.param(switching(add=(b"Sec-WebSocket-Extensions: permessage-deflate",)), "hold",
                 NO_OFFER, HandshakeError, id="101-deflate-when-none-offered"),
    pytest.param(switching(add=(b"Sec-WebSocket-Extensions: permessage-deflate; "
                                b"server_max_window_bits=99",)), "hold", DEFLATE_OFFER,
                 HandshakeError, id="101-deflate-bad-parameter"),
    pytest.param(switching(add=(b"X-Folded: one", b" two")), "hold", {}, HandshakeError,
                 id="101-folded-header"),
    pytest.param(switching(add=(b"X-Control: \x01",)), "hold", {}, HandshakeError,
                 id="101-control-byte"),
    pytest.param(switching(status_line=b"HTTP/1.0 101 Switching Protocols"), "hold", {},
                 HandshakeError, id="101-from-HTTP-1.0"),
    # Found by the handshake fuzzer: an interim answer, then a 101 whose header
    # holds a byte that is not ASCII (wsproto raised UnicodeDecodeError). We
    # never ask for an interim answer (no Expect: 100-continue), so one is an error.
    pytest.param(lambda key: b"HTTP/1.1 100 Continue\r\n\r\n" + switching(
                     add=(b"Sec-WebSocket-Extensions: \xa8",))(key), "hold", DEFLATE_OFFER,
                 HandshakeError, id="100-then-101-with-non-ascii-header"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n", "hold", {}, HandshakeError,
                 id="100-alone"),
    pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "hold", {}, HandshakeError,
                 id="not-http-at-all"),
    # A TLS server's alert to a plain-text client: no blank line would ever come.
    pytest.param(b"\x15\x03\x03\x00\x02\x02\x46", "hold", {}, NotHTTP,
                 id="tls-alert-to-plain-client"),
    pytest.param(switching(add=(b"X-Big: " + b"a" * MAX_HEAD_SIZE,)), "hold", {},
                 HeadTooLarge, id="head-over-limit"),
    pytest.param(switching(add=(b"a:",) * (MAX_HEADERS - 2)), "hold", {}, HeadTooLarge,
                 id="101-over-max-headers"),
    pytest.param(b"HTTP/1.1 403 Forbidden\r\n" + b"a:\r\n" * MAX_HEADERS
                 + b"Content-Length: 0\r\n\r\n", "hold", {}, HeadTooLarge,
                 id="rejection-over-max-headers"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n", "close", {},
                 HandshakeError, id="server-closes-mid-head"),
    pytest.param(b"", "close", {}, HandshakeError, id="server-closes-at-once"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n", "reset", {},
                 HandshakeError, id="server-resets-mid-head"),
])
async def test_client_refuses_a_bad_answer(
        nursery: trio.Nursery, via: str, answer: Answer, then: str, options: dict[str, Any],
        error: type[HandshakeError]) -> None:
    bad = await start_bad_server(nursery, answer, then)
    failure = await attempt(bad.port, via, **options)
    assert isinstance(failure.error, error)
    # A plain HandshakeError: not a rejection, nor a network failure or a timeout.
    assert not isinstance(failure.error, (ConnectionRejected, ConnectionFailed,
                                          ConnectionTimeout))
    if then == "hold":
        with trio.fail_after(PROMPT):
            await bad.client_gone.wait()


@pytest.mark.parametrize("answer", [
    pytest.param(b"", id="server-says-nothing"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
                 id="head-never-finishes"),
])
async def test_client_gives_up_after_connect_timeout(nursery: trio.Nursery,
                                                     answer: bytes) -> None:
    bad = await start_bad_server(nursery, answer, "hold")
    failure = await attempt(bad.port, "open_websocket", connect_timeout=CONNECT_TIMEOUT)
    assert type(failure.error) is ConnectionTimeout
    assert CONNECT_TIMEOUT <= failure.elapsed < CONNECT_TIMEOUT + PROMPT
    with trio.fail_after(PROMPT):
        await bad.client_gone.wait()


@BOTH_WAYS
async def test_client_expecting_tls_gets_plain_bytes(nursery: trio.Nursery, via: str,
                                                     ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    bad = await start_bad_server(nursery, answer, "hold", read_request=False)
    failure = await attempt(bad.port, via, use_ssl=context)
    # A TLS failure is a network failure: ConnectionFailed, also an OSError.
    assert isinstance(failure.error, ConnectionFailed)
    assert isinstance(failure.error, OSError)
    assert isinstance(failure.error.__cause__, ssl.SSLError)
    with trio.fail_after(PROMPT):
        await bad.client_gone.wait()


async def test_client_fails_on_invalid_frames_behind_the_101(nursery: trio.Nursery) -> None:
    # The server masks its frame, which RFC 6455 5.1 forbids: not a message, but a 1002.
    bad = await start_bad_server(nursery, switching(trailing=masked_frame(0x1, b"hi")), "hold")
    with trio.fail_after(PROMPT):
        async with open_websocket(HOST, bad.port, "/", use_ssl=False,
                                  disconnect_timeout=PROMPT) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await ws.get_message()
        await bad.client_gone.wait()
    assert caught.value.reason.code == 1002
