"""WebSocket framing after the opening handshake (RFC 6455 section 5), Sans-IO.

The handshakes hand the open connection, and any permessage-deflate they
agreed (see _deflate), to this: wsproto's frame layer cost ~25 us a frame
in Python. Here a frame is parsed with a few byte lookups, a partial frame
waits in one growing buffer (never re-parsed per read), messages are
reassembled and size-checked as fragments arrive, and text is validated as
UTF-8 incrementally so bad input fails fast. No I/O: bytes in, events out.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from typing import Any

from wsproto.connection import ConnectionState

from . import _buffers, _mask
from ._close_reason import is_wire_close_code
from ._deflate import Deflate, InflateError
from ._mask import SMALL, new_key

__all__ = [
    "CLOSE",
    "FAIL",
    "FRAMES_PER_BATCH",
    "MESSAGE",
    "PING",
    "PONG",
    "TOO_BIG",
    "Event",
    "Frame",
    "FrameProtocol",
]

# Event kinds, in the order they are most common.
MESSAGE = 0  # value: str | bytes, a whole message
PING = 1  # value: bytes
PONG = 2  # value: bytes
CLOSE = 3  # value: (code, reason), the peer's close frame
FAIL = 4  # value: (code, reason): the peer broke the protocol; fail the connection
TOO_BIG = 5  # value: None: a message passed max_message_size; close with 1009 and drop the rest

Event = tuple[int, Any]
#: Bytes in or out; a long outgoing frame is a view of a pooled buffer (see release()).
Frame = bytes | bytearray | memoryview

_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_OPEN = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED
_LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING

_pack_short = struct.Struct("!BB").pack
_pack_medium = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack
#: A frame at least this long that has not fully arrived gets a buffer of its
#: own, filled straight from the reads, rather than waiting in the receive
#: buffer to be copied out (and unmasked) when it is whole.
_DIRECT = 1 << 16
#: Frames parsed by one call of events(): about a millisecond of work.
FRAMES_PER_BATCH = 1024
#: A batch also ends once its messages hold this much. Compressed messages
#: can be a thousand times what was read; ending the batch lets a full queue
#: stop the reader before it inflates the rest of the read.
BYTES_PER_BATCH = 1 << 16
# Copies into a bytearray go through a memoryview: a bytearray's own slice
# assignment first copies any other bytes-like source into a new bytearray.
_utf8_decoder: Callable[[], codecs.IncrementalDecoder] = codecs.getincrementaldecoder("utf-8")


def _grown(buffer: bytearray, used: int, needed: int, limit: int) -> bytearray:
    """A larger buffer with ``buffer[:used]`` copied in: doubled, to amortise the copies."""
    grown = bytearray(min(limit, max(needed, 2 * len(buffer))))
    memoryview(grown)[:used] = memoryview(buffer)[:used]
    return grown  # the outgrown one goes back to the allocator, not the pool


class _ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class FrameProtocol:
    """The frame-level state of one open WebSocket connection.

    Build one once the opening handshake is done: ``client`` says which end
    this is, ``deflate`` is the permessage-deflate the handshake agreed (a
    :class:`Deflate`), or ``None``, and ``max_message_size`` bounds each
    received message. Then hand it to a
    :class:`~trio_websocket_core.WebSocketConnection`, which feeds it and
    acts on its events; :attr:`state` says where the closing handshake stands.
    """

    __slots__ = (
        "_binary_frame_limit",
        "_data",
        "_decoder",
        "_deflate",
        "_discarding",
        "_done",
        "_fill",
        "_fill_first",
        "_fill_key",
        "_fill_size",
        "_filled",
        "_max_message_size",
        "_message",
        "_need",
        "_opcode",
        "_pending",
        "_pending_keys",
        "_pos",
        "_produced",
        "_size",
        "_text_frame_limit",
        "client",
        "more",
        "peer_close",
        "state",
    )

    def __init__(self, client: bool, deflate: Deflate | None = None,
                 max_message_size: float = float("inf")) -> None:
        #: Whether this is the client's end, which masks the frames it sends.
        self.client = client
        #: Where the closing handshake stands, as wsproto's ``ConnectionState``:
        #: OPEN, then LOCAL_CLOSING or REMOTE_CLOSING, then CLOSED.
        self.state = _OPEN
        #: The peer's (code, reason), once its close frame is parsed. Events
        #: before it may still be on their way to the user at that point.
        self.peer_close: tuple[int, str | None] | None = None
        #: Set by events() when it stopped after a full batch of frames.
        self.more = False
        self._deflate = deflate
        self._max_message_size = max_message_size
        # No frame longer than these can hold an acceptable message: UTF-8
        # takes up to 4 bytes a character, and deflate may make data it cannot
        # shrink longer (zlib's bound for any settings is about 14% more, with
        # one flush per frame; a peer flushing far more often may exceed it).
        expansion = 1.15 if self._deflate is not None else 1
        self._text_frame_limit = max_message_size * 4 * expansion + 1024
        self._binary_frame_limit = max_message_size * expansion + 1024
        # Receiving: _data[_pos:] is unparsed; a partial frame waits in _data
        # (a bytearray then) until it holds _need bytes.
        self._data: bytes | bytearray = b""
        self._pos = 0
        self._need = 0
        self._produced = 0  # the size of the messages in the batch so far
        # A long frame being filled in place: its payload buffer (from the
        # shared pool, so possibly longer), the payload's length, how much
        # of it has arrived, its first header byte and its masking key.
        self._fill: bytearray | None = None
        self._fill_size = 0
        self._filled = 0
        self._fill_first = 0
        self._fill_key: bytes | None = None
        self._done = False  # after a close frame or a failure, nothing more is parsed
        self._discarding = False  # after TOO_BIG, data frames are dropped
        # The message being reassembled.
        self._opcode = 0  # _TEXT or _BINARY while a fragmented message is open
        # The fragments so far, joined as they came: no object per fragment,
        # so a run of 1-character fragments costs what it sends. Text is kept
        # as UTF-8 (checked fragment by fragment as it comes, for the size in
        # characters and to fail fast) and decoded once at the end.
        self._message: bytearray | None = None
        # Small masked fragments still masked, and the key stream that unmasks
        # them, while a run of them lasts (see _parse).
        self._pending: bytearray | None = None
        self._pending_keys = bytearray()
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def compresses(self) -> bool:
        """Whether permessage-deflate was agreed (outgoing messages cost more to frame)."""
        return self._deflate is not None

    # -- receiving ----------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Take bytes read from the peer; :meth:`events` parses them."""
        if self._done or not data:
            return
        fill = self._fill
        if fill is not None:
            filled = self._filled
            room = self._fill_size - filled
            arrived = filled + min(len(data), room)
            if arrived > len(fill):  # grow with what arrived, never to what was announced
                fill = self._fill = _grown(fill, filled, arrived, self._fill_size)
            if len(data) <= room:
                memoryview(fill)[filled:filled + len(data)] = data
                self._filled = filled + len(data)
                return
            memoryview(fill)[filled:self._fill_size] = memoryview(data)[:room]
            self._filled = self._fill_size
            data = data[room:]  # the start of the next frame
        if self._pos >= len(self._data):
            self._data = data
            self._pos = 0
        elif isinstance(self._data, bytearray) and self._pos == 0:
            self._data += data  # a partial frame keeps growing in place
        else:
            leftover = bytearray(memoryview(self._data)[self._pos:])
            leftover += data
            self._data = leftover
            self._pos = 0

    def events(self) -> list[Event]:
        """Parse complete frames received so far into events, at most a batch of them.

        Each event is a ``(kind, value)`` pair for the connection that owns
        this protocol to act on; code that hands the protocol to a
        :class:`~trio_websocket_core.WebSocketConnection` never calls this.
        Afterwards :attr:`more` is True if complete frames may be left: call again
        (after letting others run) before feeding more data. A batch bounds
        the work one call does however small the peer's frames are.
        """
        self.more = False
        self._produced = 0
        if self._done:
            return []
        fill = self._fill
        if fill is not None and self._filled < self._fill_size:
            return []
        data = self._data
        if fill is None and len(data) - self._pos < self._need:
            return []
        events: list[Event] = []
        try:
            if fill is not None:
                self._fill = None
                self._pooled_frame(self._fill_first, fill, self._fill_size, self._fill_key,
                                   events)
            self._parse(data, events)
        except _ProtocolError as error:
            self._done = True
            events.append((FAIL, (error.code, error.reason)))
        return events

    def _parse(self, data: bytes | bytearray, events: list[Event]) -> None:
        pos = self._pos
        end = len(data)
        client = self.client
        need = 0
        frames = 0
        while not self._done:
            if end - pos < 2:
                break
            if frames == FRAMES_PER_BATCH or self._produced >= BYTES_PER_BATCH:
                self.more = True
                break
            frames += 1
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                header = 4
                if length < 126:
                    raise _ProtocolError(1002, "length not in its shortest form")
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
                header = 10
                if length < 65536 or length >> 63:
                    raise _ProtocolError(1002, "length not in its shortest form")
            masked = second & 0x80
            if masked:
                header += 4
            if bool(masked) == client:
                raise _ProtocolError(1002, "frame masked the wrong way for its direction")
            opcode = first & 0x0F
            if opcode >= _CLOSE:
                if length > 125:
                    raise _ProtocolError(1002, "control frame longer than 125 bytes")
                if not first & 0x80:
                    raise _ProtocolError(1002, "fragmented control frame")
            elif length > (self._text_frame_limit
                           if (opcode or self._opcode) == _TEXT else self._binary_frame_limit):
                # Fail before buffering it: no message this long can fit.
                raise _ProtocolError(1009, "frame longer than any acceptable message")
            total = header + length
            start = pos + header
            if end - pos < total:
                if length >= _DIRECT and end >= start:
                    self._start_fill(first, data, start, end, length, masked)
                    pos = end
                else:
                    need = total
                break
            pos += total
            if first == 0 and masked and length < SMALL and self._opcode \
                    and self._deflate is None and not self._discarding:
                # A small non-final fragment from a client. Runs of them are
                # common (Autobahn 9.3/9.4 send 4 MiB in 64-byte fragments), and
                # unmasking each on its own cost half of its ~1.1 us: keep it
                # masked beside its key stream, and unmask the run in one XOR.
                if self._pending is None:  # a run starts
                    self._pending, self._pending_keys = bytearray(), bytearray()
                self._pending += data[start:pos]
                self._pending_keys += (data[start - 4:start] * ((length + 3) >> 2))[:length]
                continue
            if self._pending is not None:
                self._settle(events)
            payload: Frame
            if masked:
                if length < SMALL:
                    payload = _mask.mask(data[start:pos], data[start - 4:start])
                elif length < _DIRECT:
                    payload = bytearray(memoryview(data)[start:pos])
                    _mask.mask_in_place(payload, 0, length, data[start - 4:start])
                else:
                    buffer = _buffers.take(length)
                    memoryview(buffer)[:length] = memoryview(data)[start:pos]
                    self._pooled_frame(first, buffer, length, data[start - 4:start], events)
                    continue
            elif type(data) is bytes:
                payload = data[start:pos]
            else:
                payload = bytes(memoryview(data)[start:pos])
            if (first == 0x81 or first == 0x82) and not self._opcode \
                    and self._deflate is None and not self._discarding:
                # The common case, a whole message in one plain frame, skips
                # the general dispatch.
                self._whole_message(opcode, payload, events)
            elif first & 0x7F == 0 and self._opcode and self._deflate is None \
                    and not self._discarding:
                # A plain continuation frame: straight to reassembly.
                self._add_fragment(payload, first == 0x80, events)
            else:
                self._frame(first, opcode, payload, events)
        if self._pending is not None:
            self._settle(events)  # text is checked as each read arrives, not at the end
        self._need = need
        if pos >= end:
            self._data = b""
            self._pos = 0
        elif pos and isinstance(data, bytearray) and pos > (end >> 1):
            del data[:pos]  # keep a growing buffer from holding consumed bytes
            self._pos = 0
        else:
            self._pos = pos

    def _settle(self, events: list[Event]) -> None:
        """Unmask the run of small fragments held back, and add it to the message."""
        pending = self._pending
        assert pending is not None
        payload = _mask.xor(pending, self._pending_keys)
        self._pending = None
        self._pending_keys = bytearray()  # as long as the run was: not kept while idle
        self._add_fragment(payload, False, events)

    def _start_fill(self, first: int, data: bytes | bytearray, start: int, end: int,
                    length: int, masked: int) -> None:
        # Memory follows what the peer sent, not the length it announced: a
        # pooled buffer that already holds the whole frame, else one for what
        # has arrived (at least _DIRECT), grown as more comes (see _grown).
        fill = _buffers.reuse(length)
        if fill is None:
            fill = bytearray(min(length, max(end - start, _DIRECT)))
        memoryview(fill)[:end - start] = memoryview(data)[start:end]
        self._fill = fill
        self._fill_size = length
        self._filled = end - start
        self._fill_first = first
        self._fill_key = bytes(data[start - 4:start]) if masked else None

    def _pooled_frame(self, first: int, buffer: bytearray, size: int,
                      key: bytes | bytearray | None, events: list[Event]) -> None:
        """Act on a long frame whose payload is ``buffer[:size]``, then pool the buffer."""
        if key is not None:
            _mask.mask_in_place(buffer, 0, size, key)
        with memoryview(buffer) as view, view[:size] as payload:
            self._frame(first, first & 0x0F, payload, events)  # copies what it keeps
        _buffers.give(buffer)

    def _frame(self, first: int, opcode: int, payload: Frame,
               events: list[Event]) -> None:
        if opcode >= _CLOSE:
            self._control_frame(first, opcode, payload, events)
            return
        if opcode > _BINARY:
            raise _ProtocolError(1002, f"unknown opcode {opcode:#x}")
        fin = first & 0x80
        deflate = self._deflate
        if deflate is not None:
            payload = self._inflate(deflate, first, opcode, payload, fin)
        elif first & 0x70:
            raise _ProtocolError(1002, "reserved bits set without an extension")
        if opcode == _TEXT or opcode == _BINARY:
            if self._opcode:
                raise _ProtocolError(1002, "new message before the last one finished")
            if self._discarding:
                return
            if fin:
                self._whole_message(opcode, payload, events)
            else:
                self._opcode = opcode
                self._add_fragment(payload, False, events)
        else:  # continuation
            if not self._opcode:
                raise _ProtocolError(1002, "continuation frame outside a message")
            if self._discarding:
                if fin:
                    self._opcode = 0
                return
            self._add_fragment(payload, bool(fin), events)

    def _control_frame(self, first: int, opcode: int, payload: Frame,
                       events: list[Event]) -> None:
        if first & 0x70:
            raise _ProtocolError(1002, "reserved bits set on a control frame")
        if opcode == _PING:
            events.append((PING, bytes(payload)))
        elif opcode == _PONG:
            events.append((PONG, bytes(payload)))
        elif opcode == _CLOSE:
            self._done = True
            self.peer_close = self._close_payload(payload)
            events.append((CLOSE, self.peer_close))
            self.state = _CLOSED if self.state is _LOCAL_CLOSING else _REMOTE_CLOSING
        else:
            raise _ProtocolError(1002, f"unknown opcode {opcode:#x}")

    def _whole_message(self, opcode: int, payload: Frame,
                       events: list[Event]) -> None:
        message: str | bytes
        if opcode == _TEXT:
            try:
                message = str(payload, "utf-8")
            except UnicodeDecodeError:
                raise _ProtocolError(1007, "text message is not valid UTF-8") from None
        else:
            message = payload if type(payload) is bytes else bytes(payload)
        if len(message) > self._max_message_size:
            self._message_too_big(events)
        else:
            self._produced += len(message)
            events.append((MESSAGE, message))

    def _add_fragment(self, payload: Frame, fin: bool, events: list[Event]) -> None:
        text = self._opcode == _TEXT
        if text:
            if self._decoder is None:
                self._decoder = _utf8_decoder()
            try:
                self._size += len(self._decoder.decode(payload, fin))
            except UnicodeDecodeError:
                raise _ProtocolError(1007, "text message is not valid UTF-8") from None
        if self._message is None:
            self._message = bytearray(payload)
        else:
            self._message += payload
        if not text:
            self._size = len(self._message)
        if self._size > self._max_message_size:
            self._message_too_big(events)
            self._opcode = 0 if fin else self._opcode
            return
        if fin:
            whole = self._message
            self._reset_message()
            self._produced += len(whole)
            events.append((MESSAGE, whole.decode() if text else bytes(whole)))

    def _reset_message(self) -> None:
        self._opcode = 0
        self._message = None
        self._pending = None
        self._pending_keys = bytearray()
        self._size = 0
        self._decoder = None

    def _message_too_big(self, events: list[Event]) -> None:
        opcode = self._opcode
        self._reset_message()
        self._opcode = opcode  # continuation frames of it are still expected, then dropped
        self._discarding = True
        events.append((TOO_BIG, None))

    def _inflate(self, deflate: Deflate, first: int, opcode: int,
                 payload: Frame, fin: int) -> Frame:
        """A data frame's payload, inflated if its message is compressed."""
        if first & 0x30:
            raise _ProtocolError(1002, "reserved bits set that no extension uses")
        if opcode == _CONTINUATION:
            if first & 0x40:
                raise _ProtocolError(1002, "RSV1 set on a continuation frame")
            if not deflate.inflating:
                return payload  # part of a plain message, or of none (_frame fails it)
        elif not first & 0x40 or self._opcode:
            return payload  # a plain message, or one that _frame fails as out of turn
        if self._discarding:
            return b""  # closing for size: inflating more would defeat the point
        if opcode != _CONTINUATION:
            text_factor = 4 if opcode == _TEXT else 1  # UTF-8: up to 4 bytes a character
            deflate.start(self._max_message_size * text_factor)
        try:
            return deflate.inflate(payload, bool(fin))
        except InflateError as error:
            # The inflater's state is unusable after an error: fail the connection.
            raise _ProtocolError(error.code, error.reason) from None

    def _close_payload(self, payload: Frame) -> tuple[int, str | None]:
        if not payload:
            return 1005, None
        if len(payload) == 1:
            raise _ProtocolError(1002, "close frame with a 1-byte payload")
        code = (payload[0] << 8) | payload[1]
        if not is_wire_close_code(code):
            raise _ProtocolError(1002, f"close code {code} may not be sent")
        try:
            return code, str(payload[2:], "utf-8") or None
        except UnicodeDecodeError:
            raise _ProtocolError(1007, "close reason is not valid UTF-8") from None

    # -- sending ------------------------------------------------------------

    def _frame_bytes(self, first: int, payload: Frame) -> Frame:
        length = len(payload)
        client = self.client
        mask_bit = 0x80 if client else 0
        if length < 126:
            header = _pack_short(first, mask_bit | length)
        elif length < 65536:
            header = _pack_medium(first, mask_bit | 126, length)
        else:
            header = _pack_long(first, mask_bit | 127, length)
        if length < _DIRECT:
            if not client:
                return header + payload
            key = new_key()
            if length < SMALL:
                return header + key + _mask.mask(payload, key)
            frame = bytearray(header)
            frame += key
            frame += payload
            _mask.mask_in_place(frame, len(header) + 4, len(frame), key)
            return frame
        # A long frame is built in a pooled buffer (see _buffers), which the
        # caller hands back with release() once written. A masked payload
        # starts on an 8-byte boundary, so the vectorised XOR need not realign.
        head = len(header) + 4 if client else len(header)
        lead = -head & 7
        end = lead + head + length
        buffer = _buffers.take(end)
        view = memoryview(buffer)
        view[lead:lead + len(header)] = header
        view[lead + head:end] = payload
        if client:
            key = new_key()
            view[lead + head - 4:lead + head] = key
            _mask.mask_in_place(buffer, lead + head, end, key)
        return view[lead:end]

    @staticmethod
    def release(frame: Frame) -> None:
        """Hand back the buffer of a frame from this protocol once it is written.

        Only long frames (memoryviews) have one; anything else is left alone.
        """
        if type(frame) is memoryview:
            buffer = frame.obj
            frame.release()
            if type(buffer) is bytearray:
                _buffers.give(buffer)

    def message(self, message: str | bytes | bytearray | memoryview) -> Frame:
        """Bytes for one whole message: text for ``str``, binary for bytes-like."""
        if self.state is not _OPEN:
            raise RuntimeError(f"cannot send a message in state {self.state.name}")
        if isinstance(message, str):
            opcode, payload = _TEXT, message.encode("utf-8")
        else:
            opcode, payload = _BINARY, bytes(message)
        first = 0x80 | opcode
        deflate = self._deflate
        if deflate is not None:
            if deflate.wants(payload, opcode == _TEXT):
                payload = deflate.compress(payload)
                first |= 0x40  # RSV1: this message is compressed
        return self._frame_bytes(first, payload)

    def ping(self, payload: bytes) -> Frame:
        """Bytes for a ping frame."""
        if self.state is not _OPEN:
            raise RuntimeError(f"cannot ping in state {self.state.name}")
        return self._control(_PING, payload)

    def pong(self, payload: bytes) -> Frame:
        """Bytes for a pong frame; also after the peer's close frame, until ours is out."""
        if self.state is not _OPEN and self.state is not _REMOTE_CLOSING:
            raise RuntimeError(f"cannot pong in state {self.state.name}")
        return self._control(_PONG, payload)

    def _control(self, opcode: int, payload: bytes) -> Frame:
        if len(payload) > 125:
            raise ValueError("ping and pong payloads are limited to 125 bytes")
        return self._frame_bytes(0x80 | opcode, payload)

    def close(self, code: int | None, reason: str | None = None) -> Frame:
        """Bytes for a close frame; moves the state on. 1005 or None: no code."""
        if self.state is _OPEN:
            self.state = _LOCAL_CLOSING
        elif self.state is _REMOTE_CLOSING:
            self.state = _CLOSED
        else:
            raise RuntimeError(f"cannot close in state {self.state.name}")
        if code is None or code == 1005:
            return self._frame_bytes(0x80 | _CLOSE, b"")
        text = (reason or "").encode("utf-8")
        if len(text) > 123:  # cut at a character boundary to fit a control frame
            text = text[:123].decode("utf-8", "ignore").encode("utf-8")
        return self._frame_bytes(0x80 | _CLOSE, code.to_bytes(2, "big") + text)
