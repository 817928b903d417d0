"""permessage-deflate (RFC 7692): settings users choose, and the wsproto extension they make.

wsproto implements the framing; the subclass here adds three things it lacks:
inflation bounded by ``max_message_size`` (a small compressed frame cannot
expand into gigabytes before anyone looks), the server honouring its own
window limits when it answers an offer, and a compression level and memory
level of our choosing.
"""

from __future__ import annotations

import math
import zlib

from wsproto.extensions import PerMessageDeflate as _WsprotoDeflate
from wsproto.frame_protocol import CloseReason as _Code
from wsproto.frame_protocol import FrameDecoder, FrameProtocol, Opcode, RsvBits

__all__ = ["DEFAULT_COMPRESSION", "PerMessageDeflate"]

# UTF-8 needs at most 4 bytes per character, and text limits count characters.
_MAX_BYTES_PER_CHARACTER = 4
# The empty stored block that RFC 7692 strips from the end of each message.
_TAIL = b"\x00\x00\xff\xff"


class PerMessageDeflate:
    """Settings for permessage-deflate compression (RFC 7692).

    Pass one as ``compression=`` to the client and server functions, or
    ``None`` to turn compression off. A client offers these settings; a
    server accepts a client's offer within them. ``*_max_window_bits`` (9 to
    15) bound the LZ77 window each side compresses with, which is most of the
    memory a compressing connection holds; ``*_no_context_takeover`` resets
    that side's compressor after every message, trading ratio for memory
    between messages. ``compress_level`` (0 to 9) and ``mem_level`` (1 to 9)
    tune our own compressor, as in :func:`zlib.compressobj`.

    The defaults (windows of 2**12 bytes, level 3, memory level 5) hold about
    49 KiB per compressing connection against 301 KiB for zlib's own
    defaults, compress JSON 1.7 times as fast, and lose 5 points of ratio
    (0.245 against 0.197): see docs/compression.md. zlib state is created
    on a connection's first compressed message, so idle connections pay
    nothing.
    """

    __slots__ = (
        "client_max_window_bits",
        "client_no_context_takeover",
        "compress_level",
        "mem_level",
        "server_max_window_bits",
        "server_no_context_takeover",
    )

    def __init__(
        self,
        *,
        client_max_window_bits: int = 12,
        server_max_window_bits: int = 12,
        client_no_context_takeover: bool = False,
        server_no_context_takeover: bool = False,
        compress_level: int = 3,
        mem_level: int = 5,
    ) -> None:
        for name, bits in (("client_max_window_bits", client_max_window_bits),
                           ("server_max_window_bits", server_max_window_bits)):
            if not 9 <= bits <= 15:
                raise ValueError(f"{name} must be from 9 to 15, not {bits}")
        if not 0 <= compress_level <= 9:
            raise ValueError(f"compress_level must be from 0 to 9, not {compress_level}")
        if not 1 <= mem_level <= 9:
            raise ValueError(f"mem_level must be from 1 to 9, not {mem_level}")
        self.client_max_window_bits = client_max_window_bits
        self.server_max_window_bits = server_max_window_bits
        self.client_no_context_takeover = client_no_context_takeover
        self.server_no_context_takeover = server_no_context_takeover
        self.compress_level = compress_level
        self.mem_level = mem_level

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(self.__slots__))
        return f"PerMessageDeflate({fields})"

    def extension(self, max_message_size: float) -> BoundedDeflate:
        """A fresh wsproto extension for one connection."""
        return BoundedDeflate(self, max_message_size)


#: What the client offers and the server accepts unless told otherwise.
DEFAULT_COMPRESSION = PerMessageDeflate()


def _parse(params: str) -> dict[str, str | None] | None:
    """Split ``name; a=1; b`` into ``{"a": "1", "b": None}``; None if malformed or repeated."""
    parsed: dict[str, str | None] = {}
    for part in params.split(";")[1:]:
        name, _, value = part.partition("=")
        name = name.strip()
        if not name or name in parsed:
            return None
        parsed[name] = value.strip().strip('"') if value else None
    return parsed


def _window_bits(value: str | None) -> int | None:
    if value is None or not value.isdigit() or not 9 <= int(value) <= 15:
        return None
    return int(value)


class BoundedDeflate(_WsprotoDeflate):
    """wsproto's permessage-deflate, with inflation bounded and our settings applied."""

    def __init__(self, settings: PerMessageDeflate, max_message_size: float) -> None:
        super().__init__(
            client_no_context_takeover=settings.client_no_context_takeover,
            client_max_window_bits=settings.client_max_window_bits,
            server_no_context_takeover=settings.server_no_context_takeover,
            server_max_window_bits=settings.server_max_window_bits,
        )
        self._settings = settings
        self._max_message_size = max_message_size
        self._budget = math.inf  # bytes the current message may still inflate to

    # -- negotiation ----------------------------------------------------------

    def accept(self, offer: str) -> bool | str | None:
        """Answer one client offer as a server: within our limits, or not at all."""
        if self._enabled:
            return None  # an earlier offer in the same header was accepted
        params = _parse(offer)
        known = {"client_max_window_bits", "server_max_window_bits",
                 "client_no_context_takeover", "server_no_context_takeover"}
        if params is None or not params.keys() <= known:
            return None
        mine = self._settings
        response = []
        server_bits = mine.server_max_window_bits
        if "server_max_window_bits" in params:
            offered = _window_bits(params["server_max_window_bits"])
            if offered is None:
                return None
            server_bits = min(server_bits, offered)
        if "server_max_window_bits" in params or server_bits < 15:
            response.append(f"server_max_window_bits={server_bits}")
        client_bits = 15
        if "client_max_window_bits" in params:
            value = params["client_max_window_bits"]
            offered = 15 if value is None else _window_bits(value)
            if offered is None:
                return None
            client_bits = min(mine.client_max_window_bits, offered)
            if client_bits < 15 or value is not None:
                response.append(f"client_max_window_bits={client_bits}")
        server_reset = mine.server_no_context_takeover or "server_no_context_takeover" in params
        client_reset = mine.client_no_context_takeover or "client_no_context_takeover" in params
        if server_reset:
            response.append("server_no_context_takeover")
        if client_reset:
            response.append("client_no_context_takeover")
        self.server_max_window_bits = server_bits
        self.client_max_window_bits = client_bits
        self.server_no_context_takeover = server_reset
        self.client_no_context_takeover = client_reset
        self._enabled = True
        return "; ".join(response)

    # -- compressing ----------------------------------------------------------

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        """Compress with our level and memory level; wsproto does the framing."""
        if self._compressor is None and opcode in (Opcode.TEXT, Opcode.BINARY):
            bits = self.client_max_window_bits if proto.client else self.server_max_window_bits
            self._compressor = zlib.compressobj(
                self._settings.compress_level, zlib.DEFLATED, -bits, self._settings.mem_level)
        return super().frame_outbound(proto, opcode, rsv, data, fin)

    # -- inflating, within budget --------------------------------------------

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> _Code | RsvBits:
        """Start a fresh inflation budget with each new message."""
        if self._inbound_compressed is None and opcode in (Opcode.TEXT, Opcode.BINARY):
            factor = _MAX_BYTES_PER_CHARACTER if opcode is Opcode.TEXT else 1
            self._budget = self._max_message_size * factor
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def _inflate(self, data: bytes) -> _Code | bytes:
        assert self._decompressor is not None
        limit = 0 if self._budget == math.inf else int(self._budget) + 1
        try:
            inflated = self._decompressor.decompress(data, limit)
        except zlib.error:
            return _Code.INVALID_FRAME_PAYLOAD_DATA
        self._budget -= len(inflated)
        if self._budget < 0:
            return _Code.MESSAGE_TOO_BIG
        return inflated

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | _Code:
        """Inflate a frame's payload, stopping as soon as the message is too big."""
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | _Code | None:
        """At the end of a compressed message, inflate the stripped tail."""
        if not fin:
            return None
        compressed = self._inbound_compressed and self._inbound_is_compressible
        self._inbound_compressed = None
        if not compressed:
            return None
        result = self._inflate(_TAIL)
        reset = self.server_no_context_takeover if proto.client else self.client_no_context_takeover
        if reset:
            self._decompressor = None
        return result
