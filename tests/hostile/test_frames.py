"""Bad frames over real sockets, in both roles (issue #12, point 2).

After a valid opening handshake done by hand, a raw peer sends hand-built
frames: a raw client (masked frames) against our server, and a raw server
(unmasked frames) against our client. For every class of bad frame each test
asserts the close code our side sends, what our application sees, that our
side then closes TCP, and (server role) that the server goes on serving.

Two ways of closing are asserted, as the library does them. A protocol error
*fails* the connection: close frame, then TCP closed at once (RFC 6455
7.1.7). So does 1009 when a frame's header alone announces more than any
acceptable message, or compressed data inflates past the limit's byte bound.
A message whose reassembled characters or bytes pass ``max_message_size``
gets a normal closing handshake with 1009 instead: TCP closes once the peer
has answered, and what the peer sends meanwhile is dropped.

Non-minimal lengths: RFC 6455 5.2 says "the minimal number of bytes MUST be
used to encode the length". Our parser treats a longer form as a protocol
error (1002) in both directions, and so do these tests.

Each raw peer sends its bad bytes in one write, and either small ones or a
frame our side can only judge once all of it is in (a long frame with a bad
payload): our side has read every byte before it closes, so its close is a
FIN and not a reset. A header that is wrong on its own comes without payload.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import pytest
import trio

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketRequest,
    WebSocketServer,
    open_websocket,
    serve_websocket,
)

from ..conftest import HOST

#: max_message_size on our side: past 2**16, so a 64-bit length can be valid.
LIMIT = 100_000
#: The window our hand-built compressed data uses.
WBITS = 12
TAIL = b"\x00\x00\xff\xff"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Generous bound for any single test: a hang fails instead of stalling the run.
DEADLINE = 15

SERVER, CLIENT = "server", "client"  # the role *our* side plays
BOTH = frozenset({SERVER, CLIENT})


# -- building frames --------------------------------------------------------


def xor(data: bytes, key: bytes) -> bytes:
    """Mask or unmask ``data`` with a 4-byte key (RFC 6455 5.3)."""
    if not data:
        return b""
    keys = (key * (len(data) // 4 + 1))[:len(data)]
    value = int.from_bytes(data, "big") ^ int.from_bytes(keys, "big")
    return value.to_bytes(len(data), "big")


@dataclass(frozen=True)
class F:
    """One frame: its first byte and payload, written as the raw peer's role does.

    ``width`` forces the length field (7, 16 or 64 bits), ``announce`` states
    a length other than the payload's, ``masked`` overrides the role's masking.
    """

    first: int
    payload: bytes = b""
    width: int | None = None
    announce: int | None = None
    masked: bool | None = None

    def wire(self, from_client: bool) -> bytes:
        masked = from_client if self.masked is None else self.masked
        length = len(self.payload) if self.announce is None else self.announce
        width = self.width or (7 if length < 126 else 16 if length < 65536 else 64)
        bit = 0x80 if masked else 0
        if width == 7:
            head = bytes([self.first, bit | length])
        elif width == 16:
            head = bytes([self.first, bit | 126]) + length.to_bytes(2, "big")
        else:
            head = bytes([self.first, bit | 127]) + length.to_bytes(8, "big")
        if not masked:
            return head + self.payload
        key = os.urandom(4)
        return head + key + xor(self.payload, key)


def wire(frames: Sequence[F], from_client: bool) -> bytes:
    return b"".join(f.wire(from_client) for f in frames)


def deflated(*chunks: bytes) -> list[bytes]:
    """One message compressed as RFC 7692 sends it, a sync-flushed part per chunk.

    Each part is one fragment's payload; the last loses the 00 00 ff ff tail.
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, -WBITS)
    parts = [compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH) for chunk in chunks]
    assert parts[-1].endswith(TAIL)
    parts[-1] = parts[-1][:-4]
    return parts


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


# -- the cases ----------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """Frames our side must refuse, and how it must close.

    ``handshake``: our side closes with a closing handshake (it waits for the
    peer's close frame) rather than failing the connection at once. ``then``:
    frames the peer sends after our close frame and before its own, as a
    peer still busy sending does; our side must drop them.
    """

    name: str
    frames: tuple[F, ...]
    code: int
    deflate: bool = False
    handshake: bool = False
    roles: frozenset[str] = BOTH
    then: tuple[F, ...] = ()


def _bad_cases() -> list[Bad]:
    cases = [
        # Reserved bits that no negotiated extension gives a meaning.
        Bad("rsv1-text-without-compression", (F(0xC1, b"hi"),), 1002),
        Bad("rsv2-text", (F(0xA1, b"hi"),), 1002),
        Bad("rsv3-text", (F(0x91, b"hi"),), 1002),
        Bad("rsv1-ping-without-compression", (F(0xC9, b"hi"),), 1002),
        Bad("rsv2-text-with-compression", (F(0xA1, b"hi"),), 1002, deflate=True),
        Bad("rsv3-binary-with-compression", (F(0x92, b"hi"),), 1002, deflate=True),
        Bad("rsv2-rsv3-on-compressed", (F(0xF2, deflated(b"hi")[0]),), 1002, deflate=True),
    ]
    # Reserved opcodes, data (0x3-0x7) and control (0xB-0xF).
    cases += [Bad(f"opcode-{op:#x}", (F(0x80 | op, b"x"),), 1002)
              for op in (*range(0x3, 0x8), *range(0xB, 0x10))]
    # Control frames must not be fragmented, nor longer than 125 bytes.
    for name, op, payload in (("ping", 0x9, b"p"), ("pong", 0xA, b"p"),
                              ("close", 0x8, close_payload(1000))):
        cases.append(Bad(f"fragmented-{name}", (F(op, payload),), 1002))
    for name, op, payload in (("ping", 0x9, b"p" * 126), ("pong", 0xA, b"p" * 126),
                              ("close", 0x8, close_payload(1000, b"r" * 124))):
        cases.append(Bad(f"{name}-of-126-bytes", (F(0x80 | op, payload),), 1002))
    # Text that is not UTF-8: whole, in a fragment (failed before the message
    # ends), and cut inside a character at FIN.
    cases += [
        Bad("utf8-invalid-byte", (F(0x81, b"ok\xff"),), 1007),
        Bad("utf8-overlong", (F(0x81, b"\xc0\xaf"),), 1007),
        Bad("utf8-surrogate", (F(0x81, b"\xed\xa0\x80"),), 1007),
        Bad("utf8-past-u10ffff", (F(0x81, b"\xf4\x90\x80\x80"),), 1007),
        Bad("utf8-invalid-first-fragment", (F(0x01, b"ok\xff"),), 1007),
        Bad("utf8-invalid-later-fragment", (F(0x01, b"ok"), F(0x00, b"\xc3\x28")), 1007),
        Bad("utf8-cut-at-fin-whole", (F(0x81, b"ab\xe2\x82"),), 1007),
        Bad("utf8-cut-at-fin-fragmented", (F(0x01, b"ab\xe2"), F(0x80, b"\x82")), 1007),
        Bad("utf8-invalid-compressed", (F(0xC1, deflated(b"ok\xff")[0]),), 1007, deflate=True),
        # A frame too long to wait in the read buffer (filled in place) is checked alike.
        Bad("utf8-invalid-in-long-frame", (F(0x81, b"a" * 70_000 + b"\xff"),), 1007),
        Bad("rsv2-on-long-frame", (F(0xA2, b"a" * 70_000),), 1002),
        Bad("opcode-0x3-long-frame", (F(0x83, b"a" * 70_000),), 1002),
        Bad("utf8-invalid-close-reason", (F(0x88, close_payload(1000, b"\xff")),), 1007),
    ]
    # Close frames with a code that may not be sent, or a half code.
    cases += [Bad(f"close-code-{code}", (F(0x88, close_payload(code)),), 1002)
              for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000)]
    cases.append(Bad("close-payload-of-1-byte", (F(0x88, b"\x03"),), 1002))
    # Masking the wrong way for the direction.
    cases += [
        Bad("unmasked-from-client", (F(0x81, b"hi", masked=False),), 1002,
            roles=frozenset({SERVER})),
        Bad("masked-from-server", (F(0x81, b"hi", masked=True),), 1002,
            roles=frozenset({CLIENT})),
    ]
    # Lengths not in their shortest form (RFC 6455 5.2), and one past 2**63.
    cases += [
        Bad("length-16bit-for-0-bytes", (F(0x82, b"", width=16),), 1002),
        Bad("length-16bit-for-125-bytes", (F(0x82, b"b" * 125, width=16),), 1002),
        Bad("length-64bit-for-5-bytes", (F(0x82, b"b" * 5, width=64),), 1002),
        Bad("length-64bit-for-200-bytes", (F(0x82, b"b" * 200, width=64),), 1002),
        # Header only: the parser must decide before any payload comes.
        Bad("length-64bit-for-65535-bytes", (F(0x82, announce=65535, width=64),), 1002),
        Bad("length-64bit-top-bit-set", (F(0x82, announce=1 << 63),), 1002),
        Bad("length-64bit-top-bit-ping", (F(0x89, announce=(1 << 63) + 5),), 1002),
    ]
    # Continuations with nothing open; a new message while one is open.
    cases += [
        Bad("continuation-without-message", (F(0x80, b"x"),), 1002),
        Bad("continuation-without-message-not-final", (F(0x00, b"x"),), 1002),
        Bad("text-while-text-open", (F(0x01, b"a"), F(0x81, b"b")), 1002),
        Bad("binary-while-text-open", (F(0x01, b"a"), F(0x82, b"b")), 1002),
        Bad("text-while-binary-open", (F(0x02, b"a"), F(0x01, b"b")), 1002),
        Bad("compressed-while-compressed-open",
            (F(0x42, deflated(b"a")[0]), F(0xC2, deflated(b"b")[0])), 1002, deflate=True),
    ]
    # Past max_message_size. A plain message over the limit, whole or as
    # fragments (with no last fragment: the close must not wait for it), is
    # closed with a handshake; a frame whose header alone shows it cannot fit,
    # or compressed data that inflates past the limit, fails at once.
    over = b"b" * (LIMIT + 1)
    fragments = (F(0x02, b"f" * 40_000), F(0x00, b"f" * 40_000), F(0x00, b"f" * 40_000))
    text_fragments = (F(0x01, b"t" * 40_000), F(0x00, b"t" * 40_000), F(0x00, b"t" * 40_000))
    # The rest of a message, and a ping our side must not answer once it closed.
    finish = (F(0x00, b"r" * 40_000), F(0x89, b"late"), F(0x80, b"r"))
    for deflate, label in ((False, "plain"), (True, "plain-with-compression")):
        cases += [
            Bad(f"{label}-binary-over-limit", (F(0x82, over),), 1009, deflate, handshake=True),
            Bad(f"{label}-text-over-limit", (F(0x81, over),), 1009, deflate, handshake=True),
            Bad(f"{label}-fragments-pass-limit", fragments, 1009, deflate, handshake=True),
            Bad(f"{label}-fragments-pass-limit-then-finish", fragments, 1009, deflate,
                handshake=True, then=finish),
            Bad(f"{label}-text-fragments-pass-limit", text_fragments, 1009, deflate,
                handshake=True),
            Bad(f"{label}-header-far-over-limit", (F(0x82, announce=1 << 30),), 1009, deflate),
        ]
    # Many small fragments (read in runs, see FrameProtocol._parse) past the limit.
    small = (F(0x02, b"s" * 500), *[F(0x00, b"s" * 500)] * (LIMIT // 500))
    cases.append(Bad("many-small-fragments-pass-limit", small, 1009, handshake=True,
                     then=finish))
    # Compressed text within the inflated-bytes bound whose characters pass the
    # limit: a closing handshake, and what follows is dropped uninflated.
    text_parts = deflated(*[b"t" * 40_000] * 3)
    cases.append(Bad("compressed-text-fragments-pass-limit",
                     (F(0x41, text_parts[0]), F(0x00, text_parts[1]), F(0x00, text_parts[2])),
                     1009, True, handshake=True, then=finish))
    part_a, part_b, part_c = deflated(*[b"z" * 40_000] * 3)
    cases += [
        Bad("compressed-one-byte-over-limit", (F(0xC2, deflated(over)[0]),), 1009, True),
        Bad("compressed-small-frame-inflates-far-past-limit",
            (F(0xC2, deflated(bytes(20 * LIMIT))[0]),), 1009, True),
        # Each fragment inflates within the limit, the three together past it.
        Bad("compressed-fragments-pass-limit",
            (F(0x42, part_a), F(0x00, part_b), F(0x00, part_c)), 1009, True),
    ]
    # Compression negotiated: RSV1 only on a message's first frame, never on a
    # control frame, and the data must inflate.
    first, rest = deflated(b"hello ", b"world")
    cases += [
        Bad("rsv1-on-continuation-of-compressed", (F(0x41, first), F(0xC0, rest)), 1002, True),
        Bad("rsv1-on-continuation-of-plain", (F(0x01, b"a"), F(0xC0, b"b")), 1002, True),
        Bad("rsv1-on-ping", (F(0xC9, b"hi"),), 1002, True),
        Bad("rsv1-on-pong", (F(0xCA, b"hi"),), 1002, True),
        Bad("rsv1-on-close", (F(0xC8, close_payload(1000)),), 1002, True),
        Bad("compressed-does-not-inflate", (F(0xC2, b"\xff\xff\xff\xff"),), 1007, True),
        Bad("compressed-data-after-final-block",
            (F(0xC2, zlib.compress(b"x")[2:-4] + b"junk"),), 1007, True),
    ]
    return cases


BAD = _bad_cases()


@dataclass(frozen=True)
class Good:
    """Valid edge cases: the messages our application gets, the pongs it sends."""

    name: str
    frames: tuple[F, ...]
    messages: tuple[str | bytes, ...]
    pongs: tuple[bytes, ...] = ()
    deflate: bool = False


def _good_cases() -> list[Good]:
    at_limit = b"L" * LIMIT
    parts = deflated(*[b"c" * (LIMIT // 4)] * 4)
    first, rest = deflated(b"compressed ", b"and interrupted")
    return [
        Good("empty-text", (F(0x81),), ("",)),
        Good("empty-binary", (F(0x82),), (b"",)),
        Good("empty-fragments", (F(0x01), F(0x00, b"ab"), F(0x00), F(0x80)), ("ab",)),
        Good("empty-ping-and-pong", (F(0x89), F(0x8A), F(0x81, b"x")), ("x",), (b"",)),
        Good("ping-of-125-bytes", (F(0x89, b"p" * 125),), (), (b"p" * 125,)),
        Good("pong-of-125-bytes", (F(0x8A, b"q" * 125), F(0x82, b"after")), (b"after",)),
        Good("ping-inside-fragmented-text",
             (F(0x01, b"fir"), F(0x89, b"mid"), F(0x80, b"st")), ("first",), (b"mid",)),
        Good("pings-and-pong-inside-fragmented-binary",
             (F(0x02, b"a"), F(0x00, b"b"), F(0x89, b"1"), F(0x00, b"c"), F(0x8A, b"zz"),
              F(0x89, b"2"), F(0x80, b"d")), (b"abcd",), (b"1", b"2")),
        Good("utf8-character-split-across-fragments",
             (F(0x01, b"\xe2"), F(0x00, b"\x82"), F(0x80, b"\xac")), ("\u20ac",)),
        Good("length-16bit-at-126-bytes", (F(0x82, b"m" * 126),), (b"m" * 126,)),
        Good("length-64bit-at-65536-bytes", (F(0x82, b"m" * 65536),), (b"m" * 65536,)),
        Good("binary-exactly-at-limit", (F(0x82, at_limit),), (at_limit,)),
        Good("text-exactly-at-limit-in-3-byte-characters",
             (F(0x81, ("\u20ac" * LIMIT).encode()),), ("\u20ac" * LIMIT,)),
        Good("fragments-exactly-at-limit",
             (F(0x02, at_limit[:40_000]), F(0x00, at_limit[40_000:80_000]),
              F(0x80, at_limit[80_000:])), (at_limit,)),
        # What zlib makes of an empty message, then another: the context is intact.
        Good("compressed-empty-message", (F(0xC2, b"\x00"), F(0xC1, deflated(b"next")[0])),
             (b"", "next"), deflate=True),
        Good("plain-message-with-compression", (F(0x82, b"plain"),), (b"plain",),
             deflate=True),
        Good("compressed-exactly-at-limit", (F(0xC2, deflated(at_limit)[0]),), (at_limit,),
             deflate=True),
        Good("compressed-fragments-exactly-at-limit",
             (F(0x42, parts[0]), F(0x00, parts[1]), F(0x00, parts[2]), F(0x80, parts[3])),
             (b"c" * LIMIT,), deflate=True),
        Good("ping-inside-compressed-fragmented-text",
             (F(0x41, first), F(0x89, b"mid"), F(0x80, rest)),
             ("compressed and interrupted",), (b"mid",), deflate=True),
    ]


GOOD = _good_cases()


def ids(cases: Sequence[Bad | Good]) -> list[str]:
    return [case.name for case in cases]


# -- the raw peer -------------------------------------------------------------


class Raw:
    """A peer that writes bytes as given and reads our side's frames strictly.

    ``ours_is_client``: our side is the client, so its frames must be masked.
    """

    def __init__(self, stream: trio.SocketStream, ours_is_client: bool) -> None:
        self.stream = stream
        self.ours_is_client = ours_is_client
        self.buffer = bytearray()
        self.inflater = zlib.decompressobj(-15)  # our side keeps its context across messages

    async def _fill(self, size: int) -> bool:
        while len(self.buffer) < size:
            data = await self.stream.receive_some()
            if not data:
                return False
            self.buffer += data
        return True

    async def read_head(self) -> dict[str, str]:
        """An HTTP head; returns its headers (names lower case) and ``:start`` line."""
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some()
            assert data, "EOF before the end of the HTTP head"
            self.buffer += data
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        start, *lines = head.decode("latin-1").split("\r\n")
        headers = {":start": start}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return headers

    async def read_frame(self) -> tuple[int, bytes] | None:
        """Our side's next frame as (first byte, payload), or None at a clean EOF."""
        if not await self._fill(2):
            assert not self.buffer, "EOF inside a frame"
            return None
        first, second = self.buffer[0], self.buffer[1]
        assert bool(second & 0x80) == self.ours_is_client, "masked the wrong way"
        length, header = second & 0x7F, 2
        if length == 126:
            assert await self._fill(4)
            length, header = int.from_bytes(self.buffer[2:4], "big"), 4
        elif length == 127:
            assert await self._fill(10)
            length, header = int.from_bytes(self.buffer[2:10], "big"), 10
        key = b""
        if self.ours_is_client:
            assert await self._fill(header + 4)
            key = bytes(self.buffer[header:header + 4])
            header += 4
        assert await self._fill(header + length), "EOF inside a frame"
        payload = bytes(self.buffer[header:header + length])
        del self.buffer[:header + length]
        return first, xor(payload, key) if key else payload

    async def read_close(self) -> tuple[int, str]:
        """Our side's close frame, checked to be well formed: (code, reason)."""
        frame = await self.read_frame()
        assert frame is not None, "EOF without a close frame"
        first, payload = frame
        assert first == 0x88, f"expected a close frame, got first byte {first:#x}"
        assert 2 <= len(payload) <= 125
        return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8")

    async def collect(self, messages: int, pongs: int) -> tuple[list[str | bytes], list[bytes]]:
        """Read our side's frames until that many messages and pongs came."""
        got: list[str | bytes] = []
        ponged: list[bytes] = []
        parts: list[bytes] = []
        opening = 0
        while len(got) < messages or len(ponged) < pongs:
            frame = await self.read_frame()
            assert frame is not None, "EOF while waiting for messages"
            first, payload = frame
            opcode = first & 0x0F
            if opcode == 0xA:
                assert first == 0x8A
                ponged.append(payload)
                continue
            assert opcode in (0x0, 0x1, 0x2), f"unexpected frame {first:#x}"
            assert (opcode == 0) == bool(parts or opening), "fragments out of order"
            if opcode:
                opening = first
            parts.append(payload)
            if first & 0x80:
                data = b"".join(parts)
                if opening & 0x40:
                    data = self.inflater.decompress(data + TAIL)
                got.append(data.decode() if opening & 0x0F == 0x1 else data)
                parts, opening = [], 0
        return got, ponged

    async def send_close(self, code: int, reason: bytes = b"") -> None:
        await self.stream.send_all(F(0x88, close_payload(code, reason)).wire(
            from_client=not self.ours_is_client))

    async def expect_eof(self) -> None:
        assert await self.read_frame() is None, "our side sent more after its close frame"


async def raw_client(port: int, deflate: bool, early: bytes = b"") -> Raw:
    """Connect to our server and do the client's half of the handshake by hand.

    ``early`` goes out in the same write as the request, before the answer.
    """
    stream = await trio.open_tcp_stream(HOST, port)
    key = base64.b64encode(os.urandom(16))
    offer = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b""
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: " + key + b"\r\n" + offer + b"\r\n" + early)
    raw = Raw(stream, ours_is_client=False)
    headers = await raw.read_head()
    assert headers[":start"].startswith("HTTP/1.1 101 ")
    assert headers["sec-websocket-accept"] == base64.b64encode(
        hashlib.sha1(key + GUID).digest()).decode()
    agreed = headers.get("sec-websocket-extensions", "")
    assert agreed.startswith("permessage-deflate") if deflate else not agreed
    return raw


async def raw_server(listener: trio.SocketListener, deflate: bool, early: bytes = b"") -> Raw:
    """Accept our client and answer its request by hand, agreeing to compression if ``deflate``.

    ``early`` goes out in the same write as the 101 response.
    """
    async with listener:
        stream = await listener.accept()
    raw = Raw(stream, ours_is_client=True)
    headers = await raw.read_head()
    assert headers[":start"].startswith("GET / HTTP/1.1")
    assert "permessage-deflate" in headers["sec-websocket-extensions"]  # offered by default
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
    agreed = (b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12; "
              b"client_max_window_bits=12\r\n" if deflate else b"")
    await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n"
                          + agreed + b"\r\n" + early)
    return raw


#: When the raw peer's frames go out: in a write of their own once the
#: handshake is done, or in the same write as its last handshake bytes (so
#: they reach our side together with the handshake and are parsed from the
#: bytes the handshake read past).
DELIVERIES = {"after-handshake": False, "with-handshake": True}


# -- our server against a raw client -------------------------------------------


Seen = CloseReason | str | bytes


async def start_server(nursery: trio.Nursery) -> tuple[WebSocketServer,
                                                       trio.MemoryReceiveChannel[Seen]]:
    """An echo server that reports each message it gets, and why it closed."""
    send, receive = trio.open_memory_channel[Seen](math.inf)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                message = await ws.get_message()
                send.send_nowait(message)
                await ws.send_message(message)
        except ConnectionClosed as exc:
            send.send_nowait(exc.reason)

    server = await nursery.start(partial(serve_websocket, handler, HOST, 0, None,
                                         max_message_size=LIMIT))
    return server, receive


async def assert_still_serving(port: int) -> None:
    async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
        await ws.send_message("still serving")
        assert await ws.get_message() == "still serving"


@asynccontextmanager
async def hostile_client(port: int, deflate: bool, frames: Sequence[F],
                         early: bool) -> AsyncIterator[Raw]:
    """A raw client that has sent ``frames`` after (or with) its handshake."""
    data = wire(frames, from_client=True)
    raw = await raw_client(port, deflate, data if early else b"")
    async with raw.stream:
        if not early:
            await raw.stream.send_all(data)
        yield raw


SERVER_BAD = [c for c in BAD if SERVER in c.roles]
CLIENT_BAD = [c for c in BAD if CLIENT in c.roles]


@pytest.mark.parametrize("early", DELIVERIES.values(), ids=list(DELIVERIES))
@pytest.mark.parametrize("case", SERVER_BAD, ids=ids(SERVER_BAD))
async def test_server_refuses(case: Bad, early: bool, nursery: trio.Nursery) -> None:
    server, seen = await start_server(nursery)
    with trio.fail_after(DEADLINE):
        async with hostile_client(server.port, case.deflate, case.frames, early) as raw:
            code, _ = await raw.read_close()
            assert code == case.code
            if case.handshake:
                await raw.stream.send_all(wire(case.then, from_client=True))
                await raw.send_close(code)  # the server waits for this before closing TCP
            await raw.expect_eof()
        # The handler got no message; its get_message() raised with our code.
        reason = await seen.receive()
        assert isinstance(reason, CloseReason) and reason.code == case.code
        await assert_still_serving(server.port)


@pytest.mark.parametrize("early", DELIVERIES.values(), ids=list(DELIVERIES))
@pytest.mark.parametrize("case", GOOD, ids=ids(GOOD))
async def test_server_accepts(case: Good, early: bool, nursery: trio.Nursery) -> None:
    server, seen = await start_server(nursery)
    with trio.fail_after(DEADLINE):
        async with hostile_client(server.port, case.deflate, case.frames, early) as raw:
            # The echo handler sends each message back as it gets it.
            messages, pongs = await raw.collect(len(case.messages), len(case.pongs))
            assert messages == list(case.messages)
            assert pongs == list(case.pongs)
            await raw.send_close(1000)
            assert await raw.read_close() == (1000, "")
            await raw.expect_eof()
        got = [await seen.receive() for _ in range(len(case.messages) + 1)]
        assert got == [*case.messages, CloseReason(1000, None)]
        await assert_still_serving(server.port)


async def test_server_delivers_messages_before_a_bad_frame(nursery: trio.Nursery) -> None:
    send, seen = trio.open_memory_channel[Seen](math.inf)

    async def reader(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                send.send_nowait(await ws.get_message())
        except ConnectionClosed as exc:
            send.send_nowait(exc.reason)

    server = await nursery.start(serve_websocket, reader, HOST, 0, None)
    with trio.fail_after(DEADLINE):
        async with hostile_client(server.port, False,
                                  (F(0x81, b"first"), F(0x82, b"second"), F(0x83, b"x")),
                                  early=False) as raw:
            assert (await raw.read_close())[0] == 1002
            await raw.expect_eof()
        # Both messages before the bad frame reach the handler, then the failure.
        assert [await seen.receive() for _ in range(3)] == [
            "first", b"second", CloseReason(1002, "unknown opcode 0x3")]


# -- our client against a raw server -------------------------------------------


async def listen() -> tuple[trio.SocketListener, int]:
    [listener] = await trio.open_tcp_listeners(0, host=HOST)
    return listener, listener.socket.getsockname()[1]


@asynccontextmanager
async def hostile_server(listener: trio.SocketListener, deflate: bool, frames: Sequence[F],
                         early: bool) -> AsyncIterator[Raw]:
    """A raw server that has sent ``frames`` after (or with) its 101 response."""
    data = wire(frames, from_client=False)
    raw = await raw_server(listener, deflate, data if early else b"")
    async with raw.stream:
        if not early:
            await raw.stream.send_all(data)
        yield raw


@pytest.mark.parametrize("early", DELIVERIES.values(), ids=list(DELIVERIES))
@pytest.mark.parametrize("case", CLIENT_BAD, ids=ids(CLIENT_BAD))
async def test_client_refuses(case: Bad, early: bool) -> None:
    listener, port = await listen()
    seen: dict[str, object] = {}

    async def peer() -> None:
        async with hostile_server(listener, case.deflate, case.frames, early) as raw:
            seen["code"], _ = await raw.read_close()
            if case.handshake:
                await raw.stream.send_all(wire(case.then, from_client=False))
                await raw.send_close(case.code)
                await raw.stream.send_eof()  # the server closes TCP first (RFC 6455 7.1.1)
            await raw.expect_eof()  # our client closed its side
            seen["eof"] = True

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            async with open_websocket(HOST, port, "/", use_ssl=False,
                                      max_message_size=LIMIT) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason.code == case.code
            assert ws.closed is not None and ws.closed.code == case.code
    assert seen == {"code": case.code, "eof": True}


@pytest.mark.parametrize("early", DELIVERIES.values(), ids=list(DELIVERIES))
@pytest.mark.parametrize("case", GOOD, ids=ids(GOOD))
async def test_client_accepts(case: Good, early: bool) -> None:
    listener, port = await listen()
    seen: dict[str, object] = {}
    collected = trio.Event()  # our client closes only then: no pong is owed after its close

    async def peer() -> None:
        async with hostile_server(listener, case.deflate, case.frames, early) as raw:
            # Our client's application echoes each message it gets.
            seen["messages"], seen["pongs"] = await raw.collect(len(case.messages),
                                                                len(case.pongs))
            collected.set()
            seen["close"] = await raw.read_close()
            await raw.send_close(1000)
            await raw.stream.send_eof()
            await raw.expect_eof()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            async with open_websocket(HOST, port, "/", use_ssl=False,
                                      max_message_size=LIMIT) as ws:
                for expected in case.messages:
                    message = await ws.get_message()
                    assert message == expected
                    await ws.send_message(message)
                await collected.wait()
            assert ws.closed == CloseReason(1000, None)
    assert seen == {"messages": list(case.messages), "pongs": list(case.pongs),
                    "close": (1000, "")}


async def test_client_delivers_messages_before_a_bad_frame() -> None:
    listener, port = await listen()

    async def peer() -> None:
        async with hostile_server(listener, False,
                                  (F(0x81, b"first"), F(0x82, b"second"), F(0x83, b"x")),
                                  early=False) as raw:
            assert (await raw.read_close())[0] == 1002
            await raw.expect_eof()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            async with open_websocket(HOST, port, "/", use_ssl=False,
                                      message_queue_size=4) as ws:
                assert await ws.get_message() == "first"
                assert await ws.get_message() == b"second"
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason == CloseReason(1002, "unknown opcode 0x3")


# -- valid close frames: the largest, with no reason, empty, inside a message --------

CLOSES = {
    "close-of-125-bytes": ((), close_payload(1000, b"r" * 123), CloseReason(1000, "r" * 123)),
    "close-with-code-and-no-reason": ((), close_payload(4000), CloseReason(4000, None)),
    "close-empty": ((), b"", CloseReason(1005, None)),
    # A control frame may come between fragments; the unfinished message is dropped.
    "close-inside-fragmented-message": ((F(0x01, b"unfinished"),), close_payload(1001),
                                        CloseReason(1001, None)),
}


@pytest.mark.parametrize(("before", "payload", "reason"), CLOSES.values(), ids=list(CLOSES))
async def test_server_answers_valid_close(before: tuple[F, ...], payload: bytes,
                                          reason: CloseReason, nursery: trio.Nursery) -> None:
    server, seen = await start_server(nursery)
    with trio.fail_after(DEADLINE):
        async with hostile_client(server.port, False, (*before, F(0x88, payload)),
                                  early=False) as raw:
            # Our server echoes the close frame as it came, then closes TCP at once.
            assert await raw.read_frame() == (0x88, payload)
            await raw.expect_eof()
        assert await seen.receive() == reason
        await assert_still_serving(server.port)


@pytest.mark.parametrize(("before", "payload", "reason"), CLOSES.values(), ids=list(CLOSES))
async def test_client_answers_valid_close(before: tuple[F, ...], payload: bytes,
                                          reason: CloseReason) -> None:
    listener, port = await listen()
    seen: dict[str, object] = {}

    async def peer() -> None:
        async with hostile_server(listener, False, (*before, F(0x88, payload)),
                                  early=False) as raw:
            seen["answer"] = await raw.read_frame()
            await raw.stream.send_eof()  # the client waits for this before it closes TCP
            await raw.expect_eof()
            seen["eof"] = True

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason == reason
    assert seen == {"answer": (0x88, payload), "eof": True}
