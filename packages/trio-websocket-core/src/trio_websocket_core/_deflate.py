"""permessage-deflate (RFC 7692) over zlib: settings, negotiation, and each connection's codec.

Our own rather than wsproto's extension, which we could only bend to our
needs (bounded inflation, the server keeping to its own window limits, our
compression level) through its private attributes, and those may change in
any release. Nothing here does I/O: the handshakes call the negotiation
functions, and the frame layer calls :meth:`Deflate.compress` and
:meth:`Deflate.inflate`.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from typing import Literal

__all__ = ["DEFAULT_COMPRESSION", "MIN_SIZE", "NAME", "TEXT_LOOK_FROM", "WORTH", "Deflate",
           "InflateError", "PerMessageDeflate"]

#: The extension's token in Sec-WebSocket-Extensions.
NAME = "permessage-deflate"
# The empty stored block a sync flush ends with, which RFC 7692 strips from
# each compressed message and the receiver puts back before inflating.
_TAIL = b"\x00\x00\xff\xff"
# Window sizes we agree to, as written on the wire: RFC 7692 allows 8 too, but
# zlib silently widens a raw deflate window of 8 to 9, which a peer holding
# us to 2**8 could not inflate, so 8 is refused in both directions.
_WINDOW_BITS = {str(bits): bits for bits in range(9, 16)}
_FLAGS = ("server_no_context_takeover", "client_no_context_takeover")
_PARAMETERS = frozenset({*_FLAGS, "server_max_window_bits", "client_max_window_bits"})
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_NAME_PART = re.compile(rf"[ \t]*({_TOKEN})[ \t]*")
# "; name", "; name=token" or '; name="quoted"' (RFC 6455 section 9.1).
_PARAMETER = re.compile(
    rf'[ \t]*;[ \t]*({_TOKEN})(?:[ \t]*=[ \t]*(?:({_TOKEN})|"((?:[^"\\]|\\.)*)"))?[ \t]*')
_ESCAPE = re.compile(r"\\(.)")

# -- which messages are worth compressing (the "auto" mode; docs/compression.md)
#: Messages shorter than this many bytes go out as they are: compressing one
#: saves 4 to 15 bytes even for JSON, less than the TCP/IP headers of its
#: packet, for about as much CPU as the rest of sending it
#: (bench/compression_on_off.py; docs/compression.md).
MIN_SIZE = 32
#: Text shorter than this is compressed without a look (see Deflate.wants).
TEXT_LOOK_FROM = 4096
#: A message (or sample) worth compressing deflates to at most this share of its size.
WORTH = 0.9
# First look: the distinct byte values in 256 bytes taken from four places
# (1/8, 3/8, 5/8 and 7/8 of the way through, so neither a file's header nor
# one odd stretch decides), against what as many random bytes would hold
# (162 of 256). At most _FEW_VALUES of that: text, markup, most structured
# binary; compress. At least _MANY_VALUES: random, compressed or encrypted.
# About 3-5 us.
_LOOK_SIZE = 256
_FEW_VALUES = 0.4
_MANY_VALUES = 0.85
# Expected distinct values in n random bytes, for n up to _LOOK_SIZE.
_RANDOM_VALUES = [256 * (1 - (255 / 256) ** n) for n in range(_LOOK_SIZE + 1)]
# In between, a message of _PROBE_FROM bytes or more is probed: 1 KiB from the
# same four places, deflated together by a throwaway compressor at the
# fastest level with a 1 KiB window (10-45 us); a shorter one is compressed.
# (Deflated together, the four pieces share one Huffman table, which a 256-byte
# piece alone would pay dearly for; the price is that pieces which happen to
# repeat each other, as in a random block sent twice, look compressible.)
_PROBE_FROM = 1024
_PROBE = (1024, 4, 10)  # sample size, pieces, window bits
# Random-looking messages of _RECHECK_FROM bytes or more are probed now and
# then for repeats the look cannot see (a list of binary ids or hashes from a
# small set): two stretches of 2 KiB (1/4 and 3/4 of the way through), each
# deflated on its own with a 4 KiB window, so only repeats within a stretch,
# which the connection's compressor would find too, count. The first such
# message on a connection is probed; after one that does not shrink the next
# probe comes 1, 2, 4 ... up to _RECHECK_EVERY random-looking messages later;
# after one that shrinks, every one is probed until one does not.
_RECHECK_FROM = 4096
_RECHECK = (4096, 2, 12)
_RECHECK_EVERY = 64
# compress= -> what Deflate.wants answers without looking (None: it looks).
_MODES: dict[str, bool | None] = {"auto": None, "always": True, "never": False}


def _mode_of(compress: object) -> bool | None:
    """What ``compress=`` means for :meth:`Deflate.wants`; a ValueError if it means nothing."""
    if not isinstance(compress, str) or compress not in _MODES:
        raise ValueError(f"compress must be 'auto', 'always' or 'never', not {compress!r}")
    return _MODES[compress]


def _spread(payload: bytes, size: int, pieces: int = 4) -> list[bytes]:
    """``size`` bytes of ``payload`` as ``pieces`` equal stretches from across it.

    Piece ``i`` is centred ``(2i + 1) / (2 * pieces)`` of the way through (for
    four: 1/8, 3/8, 5/8, 7/8). A payload no longer than ``size`` is one piece.
    """
    length = len(payload)
    if length <= size:
        return [payload]
    part = size // pieces
    starts = ((2 * i + 1) * length // (2 * pieces) - part // 2 for i in range(pieces))
    return [payload[start:start + part] for start in starts]


def _probe(payload: bytes, sample: tuple[int, int, int], window_bits: int, joined: bool) -> bool:
    """Whether a sample of ``payload`` deflates to at most :data:`WORTH` of its size.

    ``joined``: the pieces are deflated as one stream; else each on its own
    (a full flush between them, whose 4-byte marker is not counted).
    """
    size, pieces, bits = sample
    compressor = zlib.compressobj(1, zlib.DEFLATED, -min(bits, window_bits), 4)
    parts = _spread(payload, size, pieces)
    if joined:
        out = len(compressor.compress(b"".join(parts))) + len(compressor.flush())
    else:
        out = sum(len(compressor.compress(part)) + len(compressor.flush(zlib.Z_FULL_FLUSH)) - 4
                  for part in parts)
    return out <= WORTH * sum(map(len, parts))


class PerMessageDeflate:
    """Settings for permessage-deflate compression (RFC 7692).

    Pass one as ``compression=`` to the client and server functions, or
    ``None`` to turn compression off. A client offers these settings; a
    server accepts a client's offer within them.

    ``compress`` says which of our messages we compress; whatever it is, we
    inflate every compressed message the peer sends. ``"auto"`` compresses a
    message only if it is likely to shrink: not under 32 bytes (where the
    saving is smaller than a packet's TCP/IP headers), and not when a look at
    samples of it says it is random or already compressed, unless a probe
    finds repeats (the documentation's Compression page tells how).
    ``"always"`` compresses every message, ``"never"`` none (the peer may
    still compress to us).

    ``*_max_window_bits`` (9 to 15) bound the LZ77 window each side
    compresses with, which is most of the memory a compressing connection
    holds; ``*_no_context_takeover`` resets that side's compressor after
    every message, trading ratio for memory between messages.
    ``compress_level`` (0 to 9) and ``mem_level`` (1 to 9) tune our own
    compressor, as in :func:`zlib.compressobj`.

    The defaults (windows of 2**12 bytes, level 3, memory level 5) hold about
    49 KiB per compressing connection against 301 KiB for zlib's own
    defaults, compress JSON 1.7 times as fast, and lose 5 points of ratio
    (0.245 against 0.197), as measured on the documentation's Compression
    page. zlib state is created on a connection's first compressed message,
    so idle connections pay nothing.
    """

    __slots__ = (
        "client_max_window_bits",
        "client_no_context_takeover",
        "compress",
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
        compress: Literal["auto", "always", "never"] = "auto",
    ) -> None:
        for name, bits in (("client_max_window_bits", client_max_window_bits),
                           ("server_max_window_bits", server_max_window_bits)):
            if not 9 <= bits <= 15:
                raise ValueError(f"{name} must be from 9 to 15, not {bits}")
        if not 0 <= compress_level <= 9:
            raise ValueError(f"compress_level must be from 0 to 9, not {compress_level}")
        if not 1 <= mem_level <= 9:
            raise ValueError(f"mem_level must be from 1 to 9, not {mem_level}")
        _mode_of(compress)
        self.compress = compress
        self.client_max_window_bits = client_max_window_bits
        self.server_max_window_bits = server_max_window_bits
        self.client_no_context_takeover = client_no_context_takeover
        self.server_no_context_takeover = server_no_context_takeover
        self.compress_level = compress_level
        self.mem_level = mem_level

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(self.__slots__))
        return f"PerMessageDeflate({fields})"


#: What the client offers and the server accepts unless told otherwise.
DEFAULT_COMPRESSION = PerMessageDeflate()


class InflateError(Exception):
    """A compressed message the connection must fail on, with the close code to fail with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _element(text: str) -> tuple[str, dict[str, str | None]] | None:
    """Split one list element, ``name; a=1; b``, into its name and parameters.

    None if it is malformed or names a parameter twice: RFC 7692 section 7.1
    has both a server's decline and a client's failure hinge on those.
    """
    match = _NAME_PART.match(text)
    if match is None:
        return None
    name, position = match.group(1), match.end()
    parameters: dict[str, str | None] = {}
    while position < len(text):
        match = _PARAMETER.match(text, position)
        if match is None:
            return None
        key, token, quoted = match.groups()
        if key in parameters:
            return None
        parameters[key] = _ESCAPE.sub(r"\1", quoted) if quoted is not None else token
        position = match.end()
    return name, parameters


def _bits(value: str | None) -> int | None:
    """A window size we can use from its written value, else None."""
    return None if value is None else _WINDOW_BITS.get(value)


def _flags_valid(parameters: dict[str, str | None]) -> bool:
    """Whether the no_context_takeover flags, if present, come without a value."""
    return all(parameters.get(flag, None) is None for flag in _FLAGS)


class Deflate:
    """One connection's agreed permessage-deflate: a compressor and an inflater.

    The four agreed parameters are named as in RFC 7692; ``client`` says
    which side of them is ours. zlib objects are made on the first message
    that needs them and dropped after each message when that direction's
    ``*_no_context_takeover`` was agreed, so idle connections hold none.
    Build one with :meth:`accept` (server) or :meth:`confirm` (client).
    """

    __slots__ = (
        "_compressor",
        "_gap",
        "_inflater",
        "_left",
        "_level",
        "_mem_level",
        "_mode",
        "_receive_bits",
        "_receive_reset",
        "_recheck",
        "_repeats",
        "_send_bits",
        "_send_reset",
        "client",
        "client_max_window_bits",
        "client_no_context_takeover",
        "inflating",
        "server_max_window_bits",
        "server_no_context_takeover",
    )

    def __init__(
        self,
        client: bool,
        *,
        client_max_window_bits: int = 15,
        server_max_window_bits: int = 15,
        client_no_context_takeover: bool = False,
        server_no_context_takeover: bool = False,
        compress_level: int = 3,
        mem_level: int = 5,
        compress: Literal["auto", "always", "never"] = "auto",
    ) -> None:
        self.client = client
        self.client_max_window_bits = client_max_window_bits
        self.server_max_window_bits = server_max_window_bits
        self.client_no_context_takeover = client_no_context_takeover
        self.server_no_context_takeover = server_no_context_takeover
        self._level = compress_level
        self._mem_level = mem_level
        self._mode = _mode_of(compress)
        # Random-looking messages still to pass before the next is probed,
        # the wait after the next probe that fails, and whether the last one
        # probed shrank.
        self._recheck = 0
        self._gap = 1
        self._repeats = False
        if client:
            self._send_bits, self._send_reset = client_max_window_bits, client_no_context_takeover
            self._receive_bits = server_max_window_bits
            self._receive_reset = server_no_context_takeover
        else:
            self._send_bits, self._send_reset = server_max_window_bits, server_no_context_takeover
            self._receive_bits = client_max_window_bits
            self._receive_reset = client_no_context_takeover
        self._compressor: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None
        #: True from a compressed message's first frame until its last.
        self.inflating = False
        self._left: float = math.inf  # bytes the message being inflated may still add

    def __repr__(self) -> str:
        role = "client" if self.client else "server"
        mode = {None: "auto", True: "always", False: "never"}[self._mode]
        return (f"<Deflate {role} compress={mode!r}: "
                f"client_max_window_bits={self.client_max_window_bits}, "
                f"server_max_window_bits={self.server_max_window_bits}, "
                f"client_no_context_takeover={self.client_no_context_takeover}, "
                f"server_no_context_takeover={self.server_no_context_takeover}>")

    # -- negotiation ----------------------------------------------------------

    @staticmethod
    def offer(settings: PerMessageDeflate) -> str:
        """A client's Sec-WebSocket-Extensions element offering ``settings``.

        Both windows are always named: the server's so that it compresses
        within our limit, the client's so that a server may bound ours.
        """
        parts = [NAME, f"client_max_window_bits={settings.client_max_window_bits}",
                 f"server_max_window_bits={settings.server_max_window_bits}"]
        if settings.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if settings.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        return "; ".join(parts)

    @classmethod
    def accept(cls, settings: PerMessageDeflate,
               offers: Sequence[str]) -> tuple[Deflate, str] | None:
        """As a server, agree to the first of a client's offers we can honour.

        ``offers`` are the elements of the request's Sec-WebSocket-Extensions,
        in order. Returns the agreement and the element to answer with, or
        None to answer with no extension. Other extensions, and offers that
        are malformed, repeat or do not know a parameter, or ask for a window
        we do not use, are passed over (declined, not failed).
        """
        for offer in offers:
            parsed = _element(offer)
            if parsed is None or parsed[0] != NAME:
                continue
            agreed = cls._answer(settings, parsed[1])
            if agreed is not None:
                return agreed
        return None

    @classmethod
    def _answer(cls, mine: PerMessageDeflate,
                offered: dict[str, str | None]) -> tuple[Deflate, str] | None:
        if not offered.keys() <= _PARAMETERS or not _flags_valid(offered):
            return None
        answer = [NAME]
        # Our own window never exceeds our setting, however much the client allows.
        server_bits = mine.server_max_window_bits
        if "server_max_window_bits" in offered:
            asked = _bits(offered["server_max_window_bits"])
            if asked is None:
                return None
            server_bits = min(server_bits, asked)
        if "server_max_window_bits" in offered or server_bits < 15:
            answer.append(f"server_max_window_bits={server_bits}")
        # The client's window may be bounded only if it offered to be; else it is 15.
        client_bits = 15
        if "client_max_window_bits" in offered:
            value = offered["client_max_window_bits"]
            hint = 15 if value is None else _bits(value)
            if hint is None:
                return None
            client_bits = min(mine.client_max_window_bits, hint)
            if client_bits < 15 or value is not None:
                answer.append(f"client_max_window_bits={client_bits}")
        server_reset = mine.server_no_context_takeover or "server_no_context_takeover" in offered
        client_reset = mine.client_no_context_takeover or "client_no_context_takeover" in offered
        if server_reset:
            answer.append("server_no_context_takeover")
        if client_reset:
            answer.append("client_no_context_takeover")
        deflate = cls(False, client_max_window_bits=client_bits,
                      server_max_window_bits=server_bits,
                      client_no_context_takeover=client_reset,
                      server_no_context_takeover=server_reset,
                      compress_level=mine.compress_level, mem_level=mine.mem_level,
                      compress=mine.compress)
        return deflate, "; ".join(answer)

    @classmethod
    def confirm(cls, settings: PerMessageDeflate | None,
                response: Sequence[str]) -> Deflate | None:
        """As a client, check the server's answer to our :meth:`offer` of ``settings``.

        ``response`` holds the elements of the 101's Sec-WebSocket-Extensions
        (``settings`` None: we offered nothing). Returns the agreement, or
        None if the server answered with no extension. A limit we asked for
        but the server left out is taken at its widest, which we can always
        inflate; anything RFC 7692 section 7.1 says a client must fail on
        raises.

        :raises ValueError: for an extension we did not offer, or a parameter
            that is unknown, repeated or malformed, or a server window wider
            than we offered.
        """
        if not response:
            return None
        parsed = [_element(element) for element in response]
        for element, result in zip(response, parsed, strict=True):
            if settings is None or (result is not None and result[0] != NAME):
                raise ValueError(f"the server accepted an extension not offered: {element!r}")
        if len(parsed) > 1:
            raise ValueError("the server accepted more than one extension")
        result = parsed[0]
        if result is None:
            raise ValueError(f"malformed extension response: {response[0]!r}")
        assert settings is not None
        answer = result[1]
        unknown = answer.keys() - _PARAMETERS
        if unknown:
            raise ValueError(f"{NAME} response has unknown parameter {min(unknown)}")
        if not _flags_valid(answer):
            raise ValueError(f"{NAME} response gives a value to a flag")
        server_bits = 15
        if "server_max_window_bits" in answer:
            bits = _bits(answer["server_max_window_bits"])
            if bits is None or bits > settings.server_max_window_bits:
                raise ValueError(f"{NAME} response has server_max_window_bits="
                                 f"{answer['server_max_window_bits']}, offered at most "
                                 f"{settings.server_max_window_bits}")
            server_bits = bits
        # We always offer client_max_window_bits, so a server may bound our window.
        # The value we offer is only a hint, which a server may ignore (RFC 7692
        # section 7.1.2.2, and Autobahn 13.4 answers 15 to any offer): a wider
        # bound than our own setting leaves us at our own.
        client_bits = settings.client_max_window_bits
        if "client_max_window_bits" in answer:
            bits = _bits(answer["client_max_window_bits"])
            if bits is None:
                raise ValueError(f"{NAME} response has client_max_window_bits="
                                 f"{answer['client_max_window_bits']}")
            client_bits = min(client_bits, bits)
        return cls(
            True,
            client_max_window_bits=client_bits,
            server_max_window_bits=server_bits,
            client_no_context_takeover=(settings.client_no_context_takeover
                                        or "client_no_context_takeover" in answer),
            # Only the server's word lets us forget its context between messages.
            server_no_context_takeover="server_no_context_takeover" in answer,
            compress_level=settings.compress_level, mem_level=settings.mem_level,
            compress=settings.compress,
        )

    # -- compressing ----------------------------------------------------------

    def wants(self, payload: bytes, text: bool) -> bool:
        """Whether to compress a message with this payload (see :class:`PerMessageDeflate`).

        Looking never touches the compressor: a message sent as it is leaves
        the compression context, ours and the peer's, as it was. Short text
        is compressed without a look: UTF-8 cannot hold 13 of the 256 byte
        values and text seldom uses a hundred, so the look could only say
        "in between", which for a short message means compress.
        """
        mode = self._mode
        if mode is not None:
            return mode
        size = len(payload)
        if size < MIN_SIZE:
            return False
        if text and size < TEXT_LOOK_FROM:
            return True
        look = b"".join(_spread(payload, _LOOK_SIZE))
        values = len(set(look))
        random_values = _RANDOM_VALUES[len(look)]
        if values >= _MANY_VALUES * random_values:
            if size < _RECHECK_FROM:
                return False
            if not self._repeats:
                self._recheck -= 1
                if self._recheck > 0:
                    return False
            self._repeats = _probe(payload, _RECHECK, self._send_bits, joined=False)
            if self._repeats:
                self._gap = 1
            else:
                self._recheck, self._gap = self._gap, min(2 * self._gap, _RECHECK_EVERY)
            return self._repeats
        if values <= _FEW_VALUES * random_values or size < _PROBE_FROM:
            return True
        return _probe(payload, _PROBE, self._send_bits, joined=True)

    def compress(self, message: bytes | bytearray | memoryview) -> bytes:
        """The payload of one whole message, compressed (send it with RSV1 set)."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                self._level, zlib.DEFLATED, -self._send_bits, self._mem_level)
        data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if self._send_reset:
            self._compressor = None
        return data[:-4] if data.endswith(_TAIL) else data

    # -- inflating ------------------------------------------------------------

    def start(self, limit: float) -> None:
        """A compressed message begins; it may inflate to at most ``limit`` bytes."""
        self.inflating = True
        self._left = limit

    def inflate(self, data: bytes | bytearray | memoryview, fin: bool) -> bytes:
        """Inflate one frame's payload of the message begun with :meth:`start`.

        zlib is never asked for more than the message may still grow by (and
        one byte to tell), so a small frame cannot expand into gigabytes
        before we look.

        :raises InflateError: with ``code`` 1009 once the message passes its
            limit, 1007 if the data does not inflate; the inflater is unusable
            afterwards. :class:`FrameProtocol` fails the connection with that code.
        """
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(-self._receive_bits)
        if fin:
            data = b"".join((data, _TAIL))
        left = self._left
        try:
            if left == math.inf:
                inflated = inflater.decompress(data)
            else:
                inflated = inflater.decompress(data, int(left) + 1)
        except zlib.error as exc:
            raise InflateError(1007, f"compressed data does not inflate: {exc}") from None
        if len(inflated) > left:
            raise InflateError(1009, "message inflates past the size limit")
        self._left = left - len(inflated)
        if inflater.eof:
            # The peer closed its deflate stream (a final block): legal at the
            # end of a message, after which it starts a new stream.
            rest = inflater.unused_data
            if rest and not (fin and rest == _TAIL):
                raise InflateError(1007, "data after the end of the compressed stream")
        if fin:
            self.inflating = False
            if self._receive_reset or inflater.eof:
                self._inflater = None
        return inflated
