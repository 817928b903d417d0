"""The four cheap memory attacks of issue #12, against a server in its own process.

Each attacker speaks raw bytes over a real socket to ``attack_server.py``
(default settings unless a test says otherwise). Each test asserts that the
server's memory grows by no more than a stated bound of what the attackers
actually sent, that the attacker's connection ends as the protocol says, and
that another client gets its echoes promptly throughout.

Memory is the child's own figure, read over the ``/memory`` path: growth is
its peak since just before the attack less its resident size then, so
nothing the attack allocated and freed again can hide.

Why the readings come after the attack's bytes were read: every attacker's
bytes are in the server's socket buffers (loopback delivers on send) before
the ``/memory`` client connects, and trio's scheduler runs every task whose
socket is readable in the pass that notices it, before the several passes the
new connection's handshake needs.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from trio_websocket import open_websocket

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
KIB = 1024
MIB = 1024 * KIB
# Another client's round trip during an attack: generous for a loaded CI
# machine, and far below what a stalled server would show.
PROMPT = 1.0
LIMIT = 60  # seconds: a hang fails the test instead of stalling the suite
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
ZERO_KEY = b"\0\0\0\0"  # a legal masking key that leaves the payload as it is


@asynccontextmanager
async def attack_server(max_message_size: str = str(MIB)) -> AsyncIterator[int]:
    """Start attack_server.py; yields its port, and checks it outlived the attack."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(HERE / "attack_server.py"), max_message_size],
        stdout=subprocess.PIPE)
    assert process.stdout is not None
    try:
        line = b""
        with trio.fail_after(LIMIT):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, "the attack server exited before listening"
                line += chunk
        assert line.startswith(b"PORT "), line
        yield int(line.split()[1])
        assert process.poll() is None, "one peer ended the server process"
    finally:
        process.kill()
        await process.wait()
        await process.stdout.aclose()


async def memory(port: int, reset: bool = False) -> dict[str, int]:
    """The server's resident memory and its peak, in KiB; ``reset`` starts a new peak."""
    async with open_websocket(HOST, port, "/memory/reset" if reset else "/memory",
                              use_ssl=False) as ws:
        return dict(json.loads(await ws.get_message()))


async def echo(port: int, message: str = "warm-up") -> None:
    async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
        await ws.send_message(message)
        assert await ws.get_message() == message


@asynccontextmanager
async def other_client(port: int) -> AsyncIterator[list[float]]:
    """A client doing round trips all through the block; yields their durations.

    On leaving, at least one round trip must have completed and none may have
    taken longer than PROMPT.
    """
    durations: list[float] = []
    done = trio.Event()

    async def round_trips() -> None:
        async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
            while not done.is_set():
                start = trio.current_time()
                await ws.send_message("still there?")
                assert await ws.get_message() == "still there?"
                durations.append(trio.current_time() - start)
                with trio.move_on_after(0.02):  # a pace, not a synchronisation
                    await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(round_trips)
        yield durations
        done.set()
    assert durations, "the other client never completed a round trip"
    assert max(durations) < PROMPT, f"the other client waited {max(durations):.2f} s"


async def upgrade(port: int, extensions: str | None = None,
                  receive_buffer: int | None = None) -> trio.SocketStream:
    """A raw client connection through the opening handshake (asserted 101).

    ``receive_buffer`` fixes the socket's receive buffer (else the kernel
    grows it, here up to 32 MiB), so a peer that does not read blocks the
    server's writes soon.
    """
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    await sock.connect((HOST, port))
    stream = trio.SocketStream(sock)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1", f"Host: {HOST}:{port}", "Upgrade: websocket",
        "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
    ]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # the server sends nothing after its head yet
        byte = await stream.receive_some(1)
        assert byte, "the server closed during the handshake"
        head += byte
    assert head.startswith(b"HTTP/1.1 101 "), head
    if extensions:
        assert b"permessage-deflate" in head.lower(), head
    return stream


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False,
          length: int | None = None) -> bytes:
    """A client frame, masked with a zero key; ``length`` may announce more than is sent."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    size = len(payload) if length is None else length
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + ZERO_KEY + payload


class FrameReader:
    """Reads the server's (unmasked) frames from a raw connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _bytes(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = await self.stream.receive_some(MIB)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def frame(self) -> tuple[int, bool, bytes]:
        """The next frame: its opcode, its RSV1 bit and its payload."""
        first, second = await self._bytes(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self._bytes(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self._bytes(8))
        assert not second & 0x80, "a server frame must not be masked"
        assert first & 0x80, "the server fragments nothing in these tests"
        return first & 0x0F, bool(first & 0x40), await self._bytes(size)

    async def close_code(self) -> int:
        """Skip frames up to the server's close frame; its code."""
        while True:
            opcode, _, payload = await self.frame()
            if opcode == CLOSE:
                return int.from_bytes(payload[:2], "big")

    async def at_eof(self) -> bool:
        try:
            await self._bytes(len(self.buffer) + 1)
        except EOFError:
            return True
        return False


async def test_a_frame_header_alone_costs_what_arrived_not_what_it_announced() -> None:
    """Point 1: 100 connections each announce a 16 MiB frame and send 14 bytes of it.

    Bound: 160 KiB per connection (one 64 KiB fill buffer, the connection
    itself, the socket's objects), where the announced sizes add 1.6 GB.
    """
    attackers = 100
    with trio.fail_after(LIMIT):
        async with attack_server(str(64 * MIB)) as port:
            await echo(port)
            before = await memory(port, reset=True)
            async with other_client(port):
                streams = []
                for _ in range(attackers):
                    stream = await upgrade(port)
                    await stream.send_all(frame(BINARY, b"x" * 14, length=16 * MIB))
                    streams.append(stream)
                after = await memory(port)
                for stream in streams:  # vanish: the server sees 1006 and carries on
                    await stream.aclose()
            growth = after["peak"] - before["rss"]
            assert growth < attackers * 160, f"{growth} KiB for {attackers} headers"
            await echo(port)


async def test_a_frame_announced_past_the_limit_is_refused_at_its_header() -> None:
    """Point 1, at the default 1 MiB limit: a 4 MiB binary frame announced is 1009 at once.

    Binary frames get no 4x factor (only text does, for UTF-8); nothing is
    allocated for them and the connection ends with 1009 before any payload.
    """
    with trio.fail_after(LIMIT):
        async with attack_server() as port:
            async with other_client(port):
                stream = await upgrade(port)
                await stream.send_all(frame(BINARY, length=4 * MIB))
                reader = FrameReader(stream)
                assert await reader.close_code() == 1009
                assert await reader.at_eof()
                await stream.aclose()


async def test_no_announced_length_ends_the_server_even_without_a_limit() -> None:
    """Point 2: max_message_size=inf, frames announcing 2**50 and 2**63-1 bytes.

    The server's process must survive and serve others; its memory follows
    the 256 KiB each attacker sends (bound: twice that plus 160 KiB a
    connection). A length with the top bit set is a protocol error: 1002.
    """
    sent = 256 * KIB
    announced = [2**50, 2**63 - 1] * 4
    with trio.fail_after(LIMIT):
        async with attack_server("inf") as port:
            await echo(port)
            before = await memory(port, reset=True)
            async with other_client(port):
                streams = []
                for length in announced:
                    stream = await upgrade(port)
                    await stream.send_all(frame(BINARY, b"y" * sent, length=length))
                    streams.append(stream)
                after = await memory(port)
                top_bit = await upgrade(port)
                await top_bit.send_all(struct.pack("!BBQ", 0x82, 0xFF, 2**63) + ZERO_KEY)
                reader = FrameReader(top_bit)
                assert await reader.close_code() == 1002
                assert await reader.at_eof()
                await top_bit.aclose()
                for stream in streams:
                    await stream.aclose()
            growth = after["peak"] - before["rss"]
            bound = len(announced) * (2 * sent // KIB + 160)
            assert growth < bound, f"{growth} KiB for {len(announced)} x {sent // KIB} KiB sent"
            await echo(port)


def compressed_fragments(text: str) -> list[bytes]:
    """``text`` as one compressed message of 1-character frames (RFC 7692 7.2.1).

    Each character is flushed on its own, so every frame's payload inflates to
    exactly that character; RSV1 marks the first frame only.
    """
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    frames = []
    last = len(text) - 1
    for index, character in enumerate(text):
        data = compressor.compress(character.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if index == last:
            data = data.removesuffix(b"\x00\x00\xff\xff")
        frames.append(frame(TEXT if index == 0 else CONTINUATION, data,
                            fin=index == last, rsv1=index == 0))
    return frames


async def test_compressed_one_character_fragments_cost_a_small_multiple_of_the_message() -> None:
    """Point 3: a 300,000-character text message sent as 300,000 compressed frames.

    About 3.7 MB on the wire for 900 KB of UTF-8 (600 KB as a str). Bound:
    8 MiB, where an object kept per fragment costs some 26 MiB. The message arrives intact
    (the echo, inflated here, is the text), and the close is a normal 1000.
    """
    # Not ASCII: Python shares one object for each 1-character Latin-1 string,
    # which would hide the cost of keeping an object per fragment.
    text = "".join(chr(0x4E00 + i % 20_000) for i in range(300_000))
    wire = b"".join(compressed_fragments(text))
    with trio.fail_after(LIMIT):
        async with attack_server() as port:
            await echo(port)
            before = await memory(port, reset=True)
            async with other_client(port):
                stream = await upgrade(port, "permessage-deflate")
                await stream.send_all(wire)
                reader = FrameReader(stream)
                opcode, compressed, payload = await reader.frame()
                after = await memory(port)
                inflater = zlib.decompressobj(-15)
                echoed = inflater.decompress(payload + b"\x00\x00\xff\xff") if compressed \
                    else payload
                assert opcode == TEXT and echoed.decode() == text
                await stream.send_all(frame(CLOSE, struct.pack("!H", 1000)))
                assert await reader.close_code() == 1000
                assert await reader.at_eof()
                await stream.aclose()
            growth = after["peak"] - before["rss"]
            assert growth < 8 * KIB, f"{growth} KiB for {len(wire) // KIB} KiB on the wire"


async def test_pings_to_a_server_blocked_on_a_peer_that_does_not_read_stay_bounded() -> None:
    """Point 4: a peer stops reading while the server echoes to it, then floods pings.

    The attacker (its receive buffer held at 64 KiB) sends an 8 MiB message
    and reads nothing, so the server's echo blocks; then it sends 32 MiB of
    125-byte pings, which the server reads. Bound: 32 MiB, about three
    copies of the echo, where a pong queued per ping adds some 50 MiB. Once
    the attacker reads, the echo arrives whole, most pings went unanswered
    (at most MAX_OWED_PONGS, 32, are owed at a time), and the close is a
    normal 1000.
    """
    message = os.urandom(8 * MIB)
    count = 32 * MIB // 131
    pings = frame(PING, b"p" * 125) * count
    with trio.fail_after(LIMIT):
        async with attack_server(str(16 * MIB)) as port:
            await echo(port)
            before = await memory(port, reset=True)
            async with other_client(port):
                stream = await upgrade(port, receive_buffer=64 * KIB)
                await stream.send_all(frame(BINARY, message))
                await stream.send_all(pings)  # returns once the server has read them
                after = await memory(port)
                reader = FrameReader(stream)
                await stream.send_all(frame(CLOSE, struct.pack("!H", 1000)))
                echoes = pongs = 0
                while True:  # pongs may come before the echo: its sender chose when to send
                    opcode, _, payload = await reader.frame()
                    if opcode == CLOSE:
                        break
                    if opcode == PONG:
                        assert payload == b"p" * 125
                        pongs += 1
                    else:
                        assert opcode == BINARY and payload == message
                        echoes += 1
                assert payload[:2] == struct.pack("!H", 1000)
                assert echoes == 1
                # At most 32 are owed at a time while the echo blocks; only what
                # was written before the socket filled comes on top. Answering
                # every ping would send all of them.
                assert 1 <= pongs < count // 8, f"{pongs} pongs for {count} pings"
                assert await reader.at_eof()
                await stream.aclose()
            growth = after["peak"] - before["rss"]
            assert growth < 32 * KIB, f"{growth} KiB for an 8 MiB echo and 32 MiB of pings"
            await echo(port)


async def test_one_read_of_compressed_messages_is_not_all_inflated_at_once() -> None:
    """A read's worth of compressed messages (61 KiB: 60 messages of 1 MiB each) to a
    server whose handler is blocked echoing to the attacker, who does not read.

    The parser ends a batch once it holds BYTES_PER_BATCH of messages, so the
    full queue stops the reader after about three messages: the one being
    echoed, the queued one and the one in hand. Bound: 8 MiB a connection,
    where inflating the whole read cost 60 MiB each.
    """
    attackers = 6
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    frames = []
    while sum(map(len, frames)) < 60 * KIB:
        data = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        frames.append(frame(BINARY, data.removesuffix(b"\x00\x00\xff\xff"), rsv1=True))
    wire = b"".join(frames)
    with trio.fail_after(LIMIT):
        async with attack_server() as port:
            await echo(port)
            before = await memory(port, reset=True)
            async with other_client(port):
                streams = []
                for _ in range(attackers):
                    stream = await upgrade(port, "permessage-deflate", receive_buffer=64 * KIB)
                    await stream.send_all(wire)
                    streams.append(stream)
                after = await memory(port)
                for stream in streams:
                    await stream.aclose()
            growth = after["peak"] - before["rss"]
            assert growth < attackers * 8 * KIB, \
                f"{growth} KiB for {attackers} x {len(frames)} messages in {len(wire) // KIB} KiB"
            await echo(port)
