"""WebSocket frames built from RFC 6455 and RFC 7692 alone, for the fuzz tests.

Nothing here imports the library: a mistake shared by this encoder and the
parser under test would cancel out. Compression is zlib used as RFC 7692
section 7.2.1 describes. A :class:`Stream` is the bytes of a run of frames
plus, for each frame, where it ends and what a correct parser reports for it,
so a test can tell which events must survive damage done later in the stream.
"""

from __future__ import annotations

import functools
import random
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10
#: What RFC 7692 strips from the end of each compressed message.
TAIL = b"\x00\x00\xff\xff"
#: Close codes a peer may put on the wire (RFC 6455 7.4, with 1012-1014 registered since).
WIRE_CLOSE_CODES = (*range(1000, 1004), *range(1007, 1015), *range(3000, 5000))

#: An expected event: ("message", str | bytes), ("ping", bytes), ("pong", bytes),
#: ("close", (code, reason or None)).
Expected = tuple[str, Any]


def xor_mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XORed with the repeating 4-byte ``key`` (RFC 6455 5.3)."""
    size = len(payload)
    if not size:
        return b""
    keys = (bytes(key) * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(size, "big")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
                 key: bytes | None = None, length: int | None = None,
                 length_form: int | None = None) -> bytes:
    """One frame; masked with ``key`` if given (a client's frame).

    ``length`` announces another length than the payload's, and
    ``length_form`` (7, 16 or 64 bits) forces a length encoding even where a
    shorter one is required: both only to build broken frames.
    """
    size = len(payload) if length is None else length
    form = length_form or (7 if size < 126 else 16 if size < 65536 else 64)
    mask_bit = 0x80 if key is not None else 0
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    if form == 7:
        head += bytes([mask_bit | size])
    elif form == 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if key is None:
        return head + payload
    return head + key + xor_mask(payload, key)


def close_payload(code: int | None, reason: str = "") -> bytes:
    """A close frame's payload: nothing for ``None``, else the code and the reason."""
    if code is None:
        return b""
    return struct.pack("!H", code) + reason.encode("utf-8")


class DeflateSender:
    """The sending half of permessage-deflate, straight on zlib (RFC 7692 7.2.1).

    ``window_bits`` may be smaller than the window agreed (a receiver accepts
    any smaller one). A sender may always start a fresh stream; it must after
    every message when ``no_context_takeover`` was agreed.
    """

    def __init__(self, window_bits: int, no_context_takeover: bool, level: int = 6,
                 mem_level: int = 8) -> None:
        self.window_bits = window_bits
        self.no_context_takeover = no_context_takeover
        self.level = level
        self.mem_level = mem_level
        self._compressor: Any = None

    def compress(self, data: bytes, flush: str = "sync", reset: bool = False) -> bytes:
        """One message's compressed payload.

        ``flush``: "sync" (the usual: Z_SYNC_FLUSH, its empty stored block
        stripped), "full" (Z_FULL_FLUSH, stripped likewise) or "final" (the
        deflate stream ends with a BFINAL block, RFC 7692 7.2.3.3's
        alternative, after which a new stream starts).
        """
        if self._compressor is None:
            self._compressor = zlib.compressobj(self.level, zlib.DEFLATED, -self.window_bits,
                                                self.mem_level)
        out = self._compressor.compress(data)
        if flush == "final":
            out += self._compressor.flush(zlib.Z_FINISH)
            self._compressor = None
            return out
        out += self._compressor.flush(zlib.Z_FULL_FLUSH if flush == "full" else zlib.Z_SYNC_FLUSH)
        assert out.endswith(TAIL)
        if reset or self.no_context_takeover:
            self._compressor = None
        return out[:-4]


def fresh_deflate(data: bytes, window_bits: int = 15) -> bytes:
    """``data`` as a compressed message of its own (a new deflate stream)."""
    return DeflateSender(window_bits, True).compress(data)


@functools.lru_cache(maxsize=8)
def repeated_deflate(size: int) -> bytes:
    """``size`` bytes of "a" as a compressed message: about a thousandth of that on the wire."""
    return fresh_deflate(b"a" * size)


@dataclass
class Message:
    """A data message to send: how it is compressed, split and interleaved."""

    value: str | bytes
    #: None: sent plain; else how the compressor flushes ("sync", "full", "final").
    compress: str | None = None
    #: Where a new frame starts in the (compressed) payload, each taken modulo its length + 1.
    cuts: Sequence[int] = ()
    #: (fragment index, opcode, payload): a control frame sent before that
    #: fragment (index 1 and up: between fragments).
    controls: Sequence[tuple[int, int, bytes]] = ()
    #: Start a fresh compressor after this message although context takeover is allowed.
    reset: bool = False


@dataclass
class Control:
    """A ping or pong frame between messages."""

    opcode: int
    payload: bytes


@dataclass
class Close:
    """A close frame: no payload for ``code=None``."""

    code: int | None
    reason: str = ""


@dataclass
class Stream:
    """The bytes of a run of frames, and what a correct parser makes of them."""

    data: bytearray = field(default_factory=bytearray)
    #: For each frame: (offset just past it, events it completes, a message open after it).
    frames: list[tuple[int, list[Expected], bool]] = field(default_factory=list)
    #: Whether the stream ends in a close frame (after which nothing is parsed).
    closed: bool = False

    @property
    def expected(self) -> list[Expected]:
        """Every event the whole stream should give, in order."""
        return [event for _, events, _ in self.frames for event in events]

    def prefix(self, offset: int) -> list[Expected]:
        """The events of the frames that end at or before ``offset``."""
        return [event for end, events, _ in self.frames if end <= offset for event in events]

    def boundaries(self) -> list[tuple[int, int, bool]]:
        """(frame count, offset, whether a message is open there) at each frame boundary.

        Only the boundaries before a close frame: nothing after it is parsed.
        """
        result = [(0, 0, False)]
        stop = len(self.frames) - 1 if self.closed else len(self.frames)
        for index, (end, _, open_after) in enumerate(self.frames[:stop]):
            result.append((index + 1, end, open_after))
        return result

    def add(self, frame: bytes, events: list[Expected], open_after: bool) -> None:
        self.data += frame
        self.frames.append((len(self.data), events, open_after))


def build_stream(items: Sequence[Message | Control | Close], *, masked: bool,
                 sender: DeflateSender | None, keys: Iterator[bytes]) -> Stream:
    """Encode ``items`` as a peer would send them; ``masked``: the peer is a client."""
    stream = Stream()

    def key() -> bytes | None:
        return next(keys) if masked else None

    for item in items:
        if isinstance(item, Control):
            stream.add(encode_frame(item.opcode, item.payload, key=key()),
                       [("ping" if item.opcode == PING else "pong", item.payload)], False)
        elif isinstance(item, Close):
            reason = item.reason if item.code is not None else ""
            stream.add(encode_frame(CLOSE, close_payload(item.code, reason), key=key()),
                       [("close", (item.code or 1005, reason or None))], False)
            stream.closed = True
            break
        else:
            raw = item.value.encode("utf-8") if isinstance(item.value, str) else item.value
            rsv = 0
            if item.compress is not None:
                assert sender is not None, "compressed message without permessage-deflate"
                raw = sender.compress(raw, item.compress, item.reset)
                rsv = RSV1
            # Cuts are folded into the payload's length; duplicates give empty
            # fragments, which are legal: keep them.
            edges = [0, *sorted(cut % (len(raw) + 1) for cut in item.cuts)]
            pieces = [raw[a:b] for a, b in zip(edges, [*edges[1:], len(raw)], strict=True)]
            opcode = TEXT if isinstance(item.value, str) else BINARY
            for index, piece in enumerate(pieces):
                for where, control, payload in item.controls:
                    if where == index and index > 0:
                        name = "ping" if control == PING else "pong"
                        stream.add(encode_frame(control, payload, key=key()),
                                   [(name, payload)], True)
                last = index == len(pieces) - 1
                stream.add(
                    encode_frame(opcode if index == 0 else CONTINUATION, piece, fin=last,
                                 rsv=rsv if index == 0 else 0, key=key()),
                    [("message", item.value)] if last else [], not last)
    return stream


def key_source(seed: int, zero: bool = False) -> Iterator[bytes]:
    """Masking keys: pseudo-random from ``seed``, or all zero (legal, and a corner)."""
    rng = random.Random(seed)
    while True:
        yield b"\x00\x00\x00\x00" if zero else rng.randbytes(4)


def cut_points(length: int, positions: Sequence[int]) -> list[int]:
    """``positions`` folded into ``0..length``, sorted: where to split ``length`` bytes."""
    return sorted({position % (length + 1) for position in positions})


def decode_frames(data: bytes, *, masked: bool) -> tuple[list[tuple[int, bool, bytes]], bytes]:
    """Whole frames at the start of ``data`` as (opcode, fin, payload), and what is left.

    For what the library sends (pongs and close frames): no extensions, so
    any reserved bit is a test failure.
    """
    frames = []
    pos = 0
    while len(data) - pos >= 2:
        first, second = data[pos], data[pos + 1]
        assert first & 0x70 == 0, f"reserved bits set in a frame we received: {first:#x}"
        assert bool(second & 0x80) == masked, "frame masked the wrong way"
        size, head = second & 0x7F, 2
        if size == 126:
            if len(data) - pos < 4:
                break
            size, head = struct.unpack_from("!H", data, pos + 2)[0], 4
        elif size == 127:
            if len(data) - pos < 10:
                break
            size, head = struct.unpack_from("!Q", data, pos + 2)[0], 10
        key = b""
        if masked:
            if len(data) - pos < head + 4:
                break
            key = data[pos + head:pos + head + 4]
            head += 4
        if len(data) - pos < head + size:
            break
        payload = data[pos + head:pos + head + size]
        frames.append((first & 0x0F, bool(first & 0x80), xor_mask(payload, key) if masked
                       else payload))
        pos += head + size
    return frames, data[pos:]
