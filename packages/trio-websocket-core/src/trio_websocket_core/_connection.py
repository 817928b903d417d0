"""An open WebSocket connection over a trio stream.

The protocol state lives in a Sans-IO ``FrameProtocol``; this module only
moves bytes and events between it, the stream and the user. One background
task per connection reads; a second one, started on first need, writes what
the transport did not take at once.

Writing: a frame is built (and compressed) and handed on without waiting, so
no send is ever half done. On plain TCP on POSIX it goes straight to the
kernel when nothing is queued ahead of it; on a plain SocketStream
elsewhere, a task alternating sends and gets writes an uncompressed frame
itself with the socket's ``send`` (which raises having sent nothing, or
says what it sent). Anything else joins the
connection's outgoing queue, which the writer task hands to the stream a
batch at a time (on TLS, many frames then share one ``send_all`` and few
records). The queue plays the part of a socket's send buffer: a send waits,
before it builds anything, while more than ``WRITE_BUFFER_SIZE`` bytes are
queued, so a cancelled send has done nothing, and only the writer task's own
failure (or the connection's end) aborts the connection. Pongs owed while the
queue is full wait with it (at most the latest ``MAX_OWED_PONGS``, as RFC
6455 5.5.3 allows), so the reader never waits for a slow peer to read.

Fairness: calls that finish without waiting spend from the cooperative
budget (``_budget``), which bounds how long any task runs them in a row.

TCP on POSIX, plain or with TLS made by us (``_tls.TLSStream``, which the
connection encrypts and decrypts through): reads and writes use the
socket's descriptor directly (``os.read``/``os.write``) and go through trio
only to wait. Every other stream, and every platform but POSIX, takes the
stream's own methods.

On TCP, a task waiting in ``get_message()`` may read the socket itself
while the reader task stands aside ("lends" the socket), so a request and
its answer cost one pass of trio's scheduler instead of two: through the
descriptor where the connection has it, else through a plain
``trio.SocketStream``'s ``receive_some`` (Windows, or the generic path),
which takes nothing if cancelled. Only reading and plain messages move to
the getter; anything that needs an answer or a decision (pings, close
frames, errors, a full queue) is left, in order, to the reader task, which
takes the socket back whenever no getter is reading.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import trio
from wsproto.connection import ConnectionState

from ._budget import UNIT_BYTES, UNIT_BYTES_COMPRESSED, charge, spend
from ._close_reason import CloseReason, check_sendable_close_code
from ._endpoint import Endpoint, stream_endpoints
from ._exceptions import ConnectionClosed
from ._http import RECEIVE_SIZE, decode_headers
from ._inbox import Inbox
from ._pings import PingTracker
from ._protocol import CLOSE, FAIL, MESSAGE, PING, PONG, TOO_BIG, Event, Frame, FrameProtocol
from ._raw import RAW_SOCKET_IO
from ._tls import TLSStream

__all__ = [
    "CLOSE_EOF_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MESSAGE_QUEUE_SIZE",
    "MAX_OWED_PONGS",
    "RAW_SOCKET_IO",
    "RECEIVE_SIZE",
    "WRITE_BUFFER_SIZE",
    "WebSocketConnection",
]

logger = logging.getLogger("trio_websocket_core")

#: How many received messages wait for ``get_message()`` before the connection
#: stops reading, unless ``message_queue_size`` says otherwise. One, as in
#: trio-websocket 0.12: a peer that sends faster than the application takes
#: messages is then held back by TCP flow control instead of filling memory.
DEFAULT_MESSAGE_QUEUE_SIZE = 1
#: The largest message received, 1 MiB, counted as ``len()`` of the ``str`` or
#: ``bytes``, unless ``max_message_size`` says otherwise. A larger one closes the
#: connection with 1009 (MESSAGE_TOO_BIG), so a peer cannot make a connection
#: hold an unbounded message; it also bounds what a compressed message may
#: inflate to. The same default as trio-websocket 0.12.
DEFAULT_MAX_MESSAGE_SIZE = 2**20

#: Seconds a client waits for the server to close TCP once the closing
#: handshake is done (RFC 6455 7.1.1 lets it close TCP itself after a while).
CLOSE_EOF_TIMEOUT = 2.0

#: Pings answered at most per batch of frames, or while the outgoing queue
#: is full; older ones beyond this go unanswered (the most recent always is).
MAX_OWED_PONGS = 32

#: Bytes of frames a connection holds that the transport has not taken yet,
#: beyond which a send waits (its own message may take it past this). Like a
#: socket's send buffer, it lets a task send on without waiting for each
#: write, and bounds what a peer that does not read can make us hold.
WRITE_BUFFER_SIZE = 64 * 1024

# Frames shorter than this are copied into one buffer at the end of the
# queue, so the bound above is the memory they take (a small frame object
# costs more than its bytes), and the writer task sends them in one call.
_MERGE_BELOW = 16 * 1024
# The writer task hands longer frames to the stream in pieces of this size,
# so that a peer reading slowly still shows progress (see _drain).
_WRITE_PIECE = 256 * 1024


_READER_NAME = "trio_websocket reader"  # one string for every reader task
_WRITER_NAME = "trio_websocket writer"
# Bytes per budget unit as shifts: sent as they are, and compressed on top of that.
_SEND_SHIFT = UNIT_BYTES.bit_length() - 1
_COMPRESS_SHIFT = UNIT_BYTES_COMPRESSED.bit_length() - 1
_OPEN = ConnectionState.OPEN
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
_NO_MESSAGE: Any = object()


class WebSocketConnection(trio.abc.AsyncResource):
    """An open WebSocket: send and receive messages, ping the peer, close.

    Obtain one from the client functions or from
    ``WebSocketRequest.accept()``; building one directly needs a stream whose
    opening handshake is already done. Using it as an async context manager
    closes it on exit.
    """

    # Slots: thousands of idle connections are a normal load for a server.
    __slots__ = ("_backlog", "_broken", "_closed", "_flushing", "_getter_reading",
                 "_getter_scope", "_handshake_headers", "_inbox", "_inline_task", "_lent_sock",
                 "_local", "_max_message_size", "_nursery", "_outgoing", "_outgoing_size",
                 "_outgoing_skip", "_outgoing_tail", "_owed_pongs", "_path", "_pings",
                 "_protocol", "_reader_done", "_reader_finished", "_reader_lent",
                 "_reader_parked", "_reader_scope", "_remote", "_room", "_sending_inline",
                 "_sock", "_stream", "_subprotocol", "_tls", "_writer_parked", "_writer_scope")

    def __init__(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        protocol: FrameProtocol,
        *,
        path: str,
        subprotocol: str | None = None,
        handshake_headers: Sequence[tuple[bytes, bytes]] = (),
        message_queue_size: float = DEFAULT_MESSAGE_QUEUE_SIZE,
        max_message_size: float = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        """Take over ``stream`` and start the reader task in ``nursery``.

        ``protocol`` holds the frame state agreed in the opening handshake,
        already fed any bytes that arrived after it. ``handshake_headers``
        are the peer's, as received (decoded only when asked for).
        """
        self._stream = stream
        self._protocol = protocol
        self._path = path
        self._subprotocol = subprotocol
        self._handshake_headers = handshake_headers
        self._max_message_size = max_message_size
        self._local, self._remote = stream_endpoints(stream)
        self._closed: CloseReason | None = None
        self._inbox: Inbox[str | bytes] = Inbox(message_queue_size)
        self._pings = PingTracker()
        # Frames the transport has not taken yet, oldest first, for the writer
        # task; their size, including the batch it is sending; and how much of
        # the first one the kernel already took.
        self._outgoing: list[Frame] = []
        self._outgoing_size = 0
        self._outgoing_skip = 0
        self._outgoing_tail: bytearray | None = None  # the last frame, if small frames merge in it
        self._writer_scope: trio.CancelScope | None = None  # the writer task's, once started
        self._writer_parked: trio.lowlevel.Task | None = None  # it sleeps until frames come
        self._flushing = False  # the writer task is in the stream's send_all
        self._sending_inline = False  # a sender writes a plain SocketStream (_send_inline)
        # The id() of the task whose last call here was a send it wrote itself
        # (not the task: that would keep a finished one and its context alive).
        self._inline_task = 0
        self._room: trio.lowlevel.ParkingLot | None = None  # tasks waiting for the queue
        # Payloads of pings not answered yet, oldest first (None: none owed).
        self._owed_pongs: list[bytes] | None = None
        self._broken = False  # nothing more can be written
        # Plain TCP on POSIX: the socket, whose descriptor is used directly.
        # Its fileno() is asked before every use: -1 once anyone closed it.
        self._sock: trio.socket.SocketType | None = None
        self._tls: TLSStream | None = None  # encrypts and decrypts around the socket
        if RAW_SOCKET_IO and type(stream) is trio.SocketStream:
            self._sock = stream.socket
        elif (RAW_SOCKET_IO and type(stream) is TLSStream
              and type(stream.transport_stream) is trio.SocketStream):
            self._sock, self._tls = stream.socket, stream
        # The socket a waiting getter may read in the reader's stead: the raw
        # one, or a plain SocketStream's on the generic path (which the getter
        # reads through receive_some; a cancelled receive_some took nothing).
        self._lent_sock: trio.socket.SocketType | None = self._sock
        if self._sock is None and self._tls is None and type(stream) is trio.SocketStream:
            self._lent_sock = stream.socket
        self._reader_scope = trio.CancelScope()
        # Lending the socket to getters (see the module docstring).
        self._reader_lent = False  # the reader stands aside: it will not touch the socket
        self._reader_parked: trio.lowlevel.Task | None = None  # it sleeps until woken
        self._getter_reading = False  # a getter is reading the socket now
        self._getter_scope: trio.CancelScope | None = None  # its reads, which aclose() cancels
        # Events a getter left to the reader, and where to resume in them.
        self._backlog: tuple[list[Event], int] | None = None
        self._reader_finished = False
        self._reader_done: trio.Event | None = None  # made when someone waits for it
        self._nursery = nursery
        nursery.start_soon(self._read_loop, name=_READER_NAME)

    # -- metadata -----------------------------------------------------------

    @property
    def closed(self) -> CloseReason | None:
        """Why the connection closed, or ``None`` while it is open.

        Set as soon as either side starts the closing handshake, or when the
        connection is lost (code 1006).
        """
        return self._closed

    @property
    def is_client(self) -> bool:
        """True for the end that opened the connection."""
        return self._protocol.client

    @property
    def is_server(self) -> bool:
        """True for the end that accepted the connection."""
        return not self._protocol.client

    @property
    def local(self) -> Endpoint | str:
        """This end of the connection (a string for non-TCP streams)."""
        return self._local

    @property
    def remote(self) -> Endpoint | str:
        """The peer's end of the connection (a string for non-TCP streams)."""
        return self._remote

    @property
    def path(self) -> str:
        """The requested resource: path and query string of the URL."""
        return self._path

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol both ends agreed on, or ``None``."""
        return self._subprotocol

    @property
    def handshake_headers(self) -> tuple[tuple[str, str], ...]:
        """Headers the peer sent in the opening handshake, names in lower case."""
        return decode_headers(self._handshake_headers)

    def __repr__(self) -> str:
        role = "client" if self._protocol.client else "server"
        return f"<WebSocketConnection {role} remote={self._remote} closed={self._closed}>"

    def _closing(self) -> CloseReason | None:
        """Why sending is over, or None while it is not.

        The peer's close frame may already be parsed while messages before it
        are still being handed to the user; sending must stop from then on.
        """
        if self._closed is None and self._protocol.state is not _OPEN:
            peer = self._protocol.peer_close
            return CloseReason(*peer) if peer else CloseReason(1006, None)
        return self._closed

    def _closed_error(self) -> ConnectionClosed:
        """The error for a send attempted once sending is over."""
        reason = self._closing()
        assert reason is not None, "only raised once the connection is closing or broken"
        return ConnectionClosed(reason)

    # -- messages -----------------------------------------------------------

    async def get_message(self) -> str | bytes:
        """Return the next message, waiting for one if none is queued.

        After the peer closes, queued messages are still returned first.
        After a local ``aclose()`` they are dropped. Cancelling it never
        loses a message.

        :raises ConnectionClosed: once the connection is closed and no
            message is left.
        """
        await spend(1)
        if self._inline_task and self._inline_task == id(trio.lowlevel.current_task()):
            self._inline_task = 0  # it alternates: its next send may write itself
        inbox = self._inbox
        try:
            try:
                return inbox.get_nowait()
            except trio.WouldBlock:
                pass
            # Waiting outside the except block: an idle connection then holds
            # no exception and traceback while it waits.
            if (self._reader_lent and not self._getter_reading and self._backlog is None
                    and not inbox.waiting()):
                message = await self._read_for_message()
                if message is not _NO_MESSAGE:
                    return message  # type: ignore[no-any-return]
            try:
                return await inbox.get()
            finally:
                self._wake_reader()  # it may stand aside for this getter
        except trio.EndOfChannel:
            assert self._closed is not None
            raise ConnectionClosed(self._closed) from None

    async def _read_for_message(self) -> Any:
        """Read the socket in the reader's stead until a message is ours.

        Called only while the reader stands aside, no backlog is left and no
        other getter waits (so this one is first in line and takes the first
        message). Returns ``_NO_MESSAGE`` when it had to stop without one:
        the rest is then the reader's, and the caller waits in the inbox.
        """
        self._getter_reading = True
        try:
            if self._sock is not None:
                return await self._getter_reads()
            # A SocketStream on the generic path: aclose() from another task
            # cancels this scope (a cancelled receive_some took nothing), and
            # the reader takes the socket back for the closing handshake. The
            # raw path is woken with notify_closing instead (see aclose()): a
            # scope costs ~7 us in trio 0.35, a tenth of a round trip there.
            mine: Any = _NO_MESSAGE
            with trio.CancelScope() as self._getter_scope:
                mine = await self._getter_reads()
            return mine
        finally:
            self._getter_reading = False
            self._getter_scope = None
            self._wake_reader()

    async def _getter_reads(self) -> Any:
        """The reads and parsing of _read_for_message, until a message or a stop."""
        sock = self._sock
        protocol = self._protocol
        inbox = self._inbox
        mine: Any = _NO_MESSAGE
        while mine is _NO_MESSAGE and self._closed is None:
            if protocol.more:  # the last read's frames are not all parsed yet
                await trio.lowlevel.checkpoint()
            elif self._tls is not None and self._tls.ended:
                break  # close_notify came: the reader ends the connection
            elif sock is None:  # a SocketStream on the generic path
                try:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # lost: the reader decides
                if not data:
                    break  # the reader sees the peer's EOF too
                protocol.receive_data(data)
            else:
                fd = sock.fileno()
                if fd < 0:
                    break  # closed by its owner: the reader ends the connection
                try:
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError:
                    break  # closed, or woken by aclose(): the reader decides
                fd = sock.fileno()  # closed by its owner while this task was woken?
                if fd < 0:
                    break
                try:
                    data = os.read(fd, RECEIVE_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    break  # the reader reads again and sees the connection is lost
                if not data:
                    break  # likewise for the peer's EOF
                if self._tls is not None:
                    plaintext = self._decrypt(self._tls, data)
                    if plaintext is None:
                        break  # the reader finds TLS over, or failed, too
                    data = plaintext
                protocol.receive_data(data)
            events = protocol.events()
            for index, (kind, value) in enumerate(events):
                if kind == MESSAGE and self._closed is None:
                    if mine is _NO_MESSAGE:
                        mine = value
                    elif not inbox.put_nowait(value):
                        self._backlog = (events, index)  # the queue is full
                        break
                elif kind == PONG:
                    self._pings.acknowledge(value)
                else:  # it needs an answer or a decision, or we are closing
                    self._backlog = (events, index)
                    break
            if self._backlog is not None:
                break
        return mine

    async def send_message(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (bytes-like) message.

        Returns once the frame is handed to the transport or queued for it
        (like a socket's send buffer); waits while more than 64 KiB of
        frames are queued, or (a plain SocketStream without raw descriptors)
        for a full kernel buffer, as a socket send would. If cancelled,
        nothing was sent and the connection stays usable: a send is never
        half done.

        :raises ConnectionClosed: if the connection is closed or closing.
        :raises TypeError: for anything but ``str`` or bytes-like.
        """
        protocol = self._protocol
        if self._closed is not None or protocol.state is not _OPEN:
            raise self._closed_error()
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"message must be str or bytes, not {type(message).__name__}")
        await spend(1 + (len(message) >> _SEND_SHIFT))
        if self._outgoing_size > WRITE_BUFFER_SIZE:
            await self._wait_for_room()
        if self._closed is not None or protocol.state is not _OPEN or self._broken:
            raise self._closed_error()  # it closed while this send waited
        # From here on nothing waits: the compressor moves on only for a frame
        # that is written or queued at once.
        frame = protocol.message(message)
        if frame[0] & 0x40:  # RSV1: it was compressed, which costs far more a byte
            charge(len(message) >> _COMPRESS_SHIFT)
        elif self._outgoing_size == 0 and not self._sending_inline \
                and self._sock is None and self._lent_sock is not None \
                and not self._inbox.queued():
            # A plain SocketStream on the generic path with nothing queued
            # either way: a task that alternates sending and getting (a request
            # and its answer) writes itself, sparing the writer task's switch.
            # One that sends again without getting in between streams, as
            # does a peer whose messages queue up, and the writer task batches
            # those frames. An uncompressed frame moved no state the peer
            # depends on, so one dropped when the send is cancelled means the
            # send did nothing.
            task = id(trio.lowlevel.current_task())
            if self._inline_task != task:
                self._inline_task = task
                await self._send_inline(frame)
                return
        self._send(frame)

    # -- pings --------------------------------------------------------------

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for the matching pong.

        A pong also answers every ping sent before its own. Without a
        payload, a random unique 4-byte one is used. Cancelled before the
        ping is sent, nothing is sent; cancelled while waiting for the pong,
        it stops waiting (a late pong is ignored).

        :raises ConnectionClosed: if the connection closes before the pong.
        :raises ValueError: if a ping with the same payload is in flight.
        """
        closing = self._closing()
        if closing is not None:
            raise ConnectionClosed(closing)
        payload = self._pings.unique_payload() if payload is None else bytes(payload)
        answered = self._pings.register(payload)
        try:
            await self._send_control(self._protocol.ping, payload)
            await answered.wait()
        finally:
            unanswered = self._pings.forget(payload, answered)
        if unanswered:
            assert self._closed is not None
            raise ConnectionClosed(self._closed)

    async def pong(self, payload: bytes | None = None) -> None:
        """Send an unsolicited pong, for a one-way heartbeat.

        :raises ConnectionClosed: if the connection is closed or closing.
        """
        closing = self._closing()
        if closing is not None:
            raise ConnectionClosed(closing)
        await self._send_control(self._protocol.pong, bytes(payload or b""))

    async def _send_control(self, build: Callable[[bytes], Frame], payload: bytes) -> None:
        if len(payload) > 125:  # refused before anything happens
            raise ValueError("ping and pong payloads are limited to 125 bytes")
        await spend(1)
        if self._outgoing_size > WRITE_BUFFER_SIZE:
            await self._wait_for_room()
        closing = self._closing()
        if closing is not None:
            raise ConnectionClosed(closing)
        if self._broken:
            raise self._closed_error()
        self._send(build(payload))

    # -- closing ------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection and wait until the transport is closed.

        Starts the closing handshake unless one is under way, drops queued
        messages, and returns when the peer has answered (or the transport is
        gone). Calling it again is harmless. If cancelled, the connection is
        aborted without waiting, as trio's ``aclose`` convention asks.

        :raises ValueError: for a close code that may not be sent.
        """
        check_sendable_close_code(code)
        try:
            await spend(1)
            # Nothing yields from here until _start_close has set _closed: a
            # getter woken by the closed inbox must find the reason there.
            self._inbox.close_get()
            try:
                self._start_close(code, reason)
            except ConnectionClosed:
                pass  # the transport broke; the connection is already aborted
            # Wake a getter reading the socket (it then sees the inbox closed),
            # so that the reader takes the socket back for the closing handshake.
            sock = self._sock
            if self._getter_scope is not None:
                self._getter_scope.cancel()
            elif self._getter_reading and not self._flushing and sock is not None \
                    and sock.fileno() >= 0:
                # Raw descriptors. Never while the writer task is in send_all:
                # this would wake it too if it waits for the socket, and that
                # aborts the connection. (Small frames mostly go out with
                # os.write, so the writer rarely runs; when it does, the getter
                # leaves at the peer's answer, taking no message after ours.)
                trio.lowlevel.notify_closing(sock.fileno())
            if not self._reader_finished:
                if self._reader_done is None:
                    self._reader_done = trio.Event()
                await self._reader_done.wait()
        except BaseException:
            self._abort()
            self._inbox.close_get()  # queued messages are dropped, as by any aclose()
            raise

    def _start_close(self, code: int, reason: str | None) -> None:
        if self._closed is not None:
            return
        self._closed = self._closing() or CloseReason(code, reason)
        self._inbox.close_put()
        if self._protocol.state is _OPEN and not self._broken:
            self._send_owed_pongs(full=True)  # pings that came before our close
            self._send(self._protocol.close(code, reason))

    def _abort(self) -> None:
        """Give up on the closing handshake: the reader closes the transport."""
        self._stop_writing()
        if self._closed is None:
            self._closed = CloseReason(1006, None)
        self._inbox.close_put()
        self._reader_scope.cancel()

    def _stop_writing(self) -> None:
        """Nothing more can be written: the writer task ends, waiting senders see it."""
        self._broken = True
        if self._writer_scope is not None:
            self._writer_scope.cancel()
        if self._room is not None:
            self._room.unpark_all()

    # -- writing ------------------------------------------------------------

    def _send(self, frame: Frame) -> None:
        """Write ``frame`` now if the transport takes it at once, else queue it.

        Never waits, so callers never leave a frame half sent. Only a
        transport already gone raises (ConnectionClosed, having aborted).
        """
        tls = self._tls
        if tls is not None:
            try:
                records = tls.encrypt(frame)
            except trio.BrokenResourceError as exc:
                self._abort()
                raise self._closed_error() from exc
            FrameProtocol.release(frame)
            frame = records
        self._put(frame)

    async def _send_inline(self, frame: Frame) -> None:
        """Write ``frame`` on a plain SocketStream from the sending task.

        trio's ``socket.send`` either raises having sent nothing (cancelled
        before the kernel took a byte) or returns how much the kernel took;
        the rest goes first in the queue, for the writer task. Frames queued
        meanwhile wait behind it, and the writer task starts only once it is
        out of the way, so frames keep their order and one task at a time
        waits to write.
        """
        sock = self._lent_sock
        assert sock is not None
        size = len(frame)
        sent = 0
        self._sending_inline = True
        try:
            sent = await sock.send(frame)
        except (OSError, trio.ClosedResourceError) as exc:
            self._abort()  # reset, or closed by the connection's end
            raise self._closed_error() from exc
        finally:
            self._sending_inline = False
            if 0 < sent < size:
                self._outgoing.insert(0, frame)  # the rest goes first
                self._outgoing_skip = sent
                self._outgoing_size += size - sent
                if len(self._outgoing) == 1:
                    self._outgoing_tail = None  # not a merge target
            else:
                FrameProtocol.release(frame)  # all sent, or none (cancelled)
            if self._outgoing and not self._broken:
                self._wake_writer()
            if self._room is not None:
                self._room.unpark_all()  # _drain may wait for this send

    def _put(self, frame: Frame) -> None:
        """Write bytes (encrypted, on TLS) now if the kernel takes them, else queue them."""
        size = len(frame)
        if self._outgoing_size == 0:  # nothing ahead of it
            sock = self._sock
            if sock is not None:
                # Hand the bytes to the kernel directly; what does not fit
                # waits in the queue for the writer task, which waits for the socket.
                fd = sock.fileno()
                if fd < 0:  # closed by its owner
                    self._abort()
                    raise self._closed_error()
                try:
                    sent = os.write(fd, frame)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._abort()
                    raise self._closed_error() from exc
                if sent == size:
                    FrameProtocol.release(frame)
                    return
                if sent and size - sent < _MERGE_BELOW:
                    rest = bytes(memoryview(frame)[sent:])  # a copy, merged below
                    FrameProtocol.release(frame)
                    frame = rest
                else:
                    self._outgoing_skip = sent
                size -= sent
        self._outgoing_size += size
        if size < _MERGE_BELOW:
            tail = self._outgoing_tail
            if tail is None:
                self._outgoing_tail = tail = bytearray(frame)
                self._outgoing.append(tail)
            else:
                tail += frame
        else:
            self._outgoing.append(frame)
            self._outgoing_tail = None  # small frames after it queue behind it
        if not self._sending_inline:  # else it wakes the writer once it is done
            self._wake_writer()

    def _wake_writer(self) -> None:
        """The writer task looks at the queue: woken if it sleeps, started if none runs."""
        writer = self._writer_parked
        if writer is not None:
            self._writer_parked = None
            trio.lowlevel.reschedule(writer)
        elif self._writer_scope is None:
            self._writer_scope = trio.CancelScope()
            self._nursery.start_soon(self._write_loop, name=_WRITER_NAME)

    async def _wait_for_room(self) -> None:
        """Wait, having done nothing, until the queue is below its bound or broken."""
        while self._outgoing_size > WRITE_BUFFER_SIZE and not self._broken:
            await self._until_progress()

    async def _until_progress(self) -> None:
        """Wait until the writer task hands bytes over, or writing stops."""
        if self._room is None:
            self._room = trio.lowlevel.ParkingLot()
        await self._room.park()

    async def _write_loop(self) -> None:
        """The writer task: hand queued frames to the stream, a batch per send_all."""
        scope = self._writer_scope
        assert scope is not None
        try:
            with scope:
                await self._write_batches()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
            pass  # the transport is gone: the connection is lost
        except Exception:
            # A fault in one connection's machinery ends that connection only.
            logger.exception("writer for %s failed", self._remote)
        finally:
            self._flushing = False
            self._abort()  # frames may be left unsent: nothing more can be written

    async def _write_batches(self) -> None:
        stream = self._stream if self._tls is None else self._tls.transport_stream
        release = FrameProtocol.release
        while True:
            frames = self._outgoing
            if not frames:
                self._writer_parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort_writer_park)
                continue
            # Frames sent meanwhile queue behind this batch.
            self._outgoing, self._outgoing_tail = [], None
            skip, self._outgoing_skip = self._outgoing_skip, 0
            for frame in frames:
                if not skip and len(frame) <= _WRITE_PIECE:
                    await self._hand_over(stream, frame)  # most frames: no views, no pieces
                else:
                    with memoryview(frame) as view:
                        for start in range(skip, len(frame), _WRITE_PIECE):
                            with view[start:start + _WRITE_PIECE] as piece:
                                await self._hand_over(stream, piece)
                    skip = 0
                release(frame)
            if self._owed_pongs is not None and self._outgoing_size <= WRITE_BUFFER_SIZE:
                self._send_owed_pongs()

    async def _hand_over(self, stream: trio.abc.Stream, data: Frame) -> None:
        """One send_all of queued bytes; then waiting senders and _drain look again."""
        size = len(data)
        self._flushing = True
        await stream.send_all(data)
        self._flushing = False
        self._outgoing_size -= size
        if self._room is not None:
            self._room.unpark_all()  # progress, even while the queue is still full

    def _abort_writer_park(self, _: object) -> trio.lowlevel.Abort:
        self._writer_parked = None  # cancelled: the connection is ending
        return _SUCCEEDED

    async def _drain(self) -> None:
        """Wait until every queued frame, and one a sender writes itself, is handed on.

        For the last frames (a close frame) before the transport closes. A
        peer that reads nothing for ``CLOSE_EOF_TIMEOUT`` seconds (no piece
        of up to 256 KiB goes out) would hold it forever: the connection is
        then aborted.
        """
        while (self._outgoing_size or self._sending_inline) and not self._broken:
            with trio.move_on_after(CLOSE_EOF_TIMEOUT) as waited:
                await self._until_progress()
            if waited.cancelled_caught:
                logger.debug("giving up on %s: %d bytes unsent", self._remote, self._outgoing_size)
                self._abort()

    def _send_owed_pongs(self, *, full: bool = False) -> None:
        """Answer the pings owed, in one frame write, unless our close frame is out.

        While the queue is over its bound they stay owed (the writer task
        sends them when it has room), unless ``full``: before a close frame.
        """
        payloads = self._owed_pongs
        if payloads is None or self._broken:
            return
        if self._outgoing_size > WRITE_BUFFER_SIZE and not full:
            return
        self._owed_pongs = None
        state = self._protocol.state
        if state is _OPEN or state is _REMOTE_CLOSING:
            pong = self._protocol.pong
            self._send(b"".join([pong(payload) for payload in payloads]))

    # -- reading ------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            with self._reader_scope:
                try:
                    await self._read()
                    if self._outgoing_size or self._sending_inline:
                        await self._drain()  # our last frames go out before the transport closes
                except ConnectionClosed:
                    pass  # a write failed and aborted the connection
                except Exception:
                    # A fault in one connection's machinery ends that connection only.
                    logger.exception("reader for %s failed", self._remote)
        finally:
            self._reader_lent = False
            try:
                if self._closed is None:
                    self._closed = CloseReason(1006, None)
                self._inbox.close_put()
                self._pings.abandon_all()
                self._stop_writing()
                await trio.aclose_forcefully(self._stream)
            finally:
                self._reader_finished = True
                if self._reader_done is not None:
                    self._reader_done.set()

    async def _read(self) -> None:
        stream = self._stream
        protocol = self._protocol
        sock = self._sock
        tls = self._tls
        lend = self._lent_sock is not None
        drained = True  # nothing read yet: wait for the first bytes
        data: bytes | bytearray | None
        if tls is not None:
            # Records that came behind the HTTP head, not yet decrypted (if TLS
            # ended there too, the loop below sees it after these events).
            data = self._decrypt(tls, b"")
            if data:
                protocol.receive_data(data)
        keep_reading = await self._handle_events(protocol.events(), 0)
        while keep_reading:
            if self._backlog is not None:
                events, index = self._backlog
                self._backlog = None
                keep_reading = await self._handle_events(events, index)
                drained = True  # what a getter read was all used
                continue
            if self._getter_reading:
                await self._stand_aside()  # a getter parses (and reads) now
                continue
            if protocol.more:
                # A batch of frames from the last read is still unparsed:
                # let others run between batches, then parse the next one.
                await trio.lowlevel.checkpoint()
                keep_reading = await self._handle_events(protocol.events(), 0)
                continue
            if sock is not None:
                # Read the socket directly, and go through trio only to wait
                # for it (a reader parked in receive_some holds ~2 KiB of
                # frames and helpers).
                if tls is not None and tls.ended:
                    return  # close_notify came: an EOF, whatever the socket says
                if drained:
                    # Stand aside while a getter reads, or when one was just
                    # handed a message and will likely ask again.
                    if self._getter_reading or self._inbox.handed():
                        await self._stand_aside()
                        continue
                fd = sock.fileno()
                if fd < 0:
                    return  # closed by its owner: the connection is lost
                if drained:
                    # Waiting first spares a read that would fail: a third
                    # of the reader's work per round trip.
                    try:
                        await trio.lowlevel.wait_readable(fd)
                    except trio.ClosedResourceError:
                        return
                    fd = sock.fileno()
                    if fd < 0:
                        return
                try:
                    data = os.read(fd, RECEIVE_SIZE)
                except BlockingIOError:
                    drained = True  # wait above, outside the except block
                    continue
                except OSError:
                    return  # reset by the peer, and the like: the connection is lost
                if not drained:
                    await trio.lowlevel.checkpoint()  # others run; cancellation gets in
            else:
                if lend and drained and (self._getter_reading or self._inbox.handed()):
                    await self._stand_aside()  # as above, for receive_some
                    continue
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            if not data:
                return
            read_size = len(data)
            if tls is not None:
                data = self._decrypt(tls, data)
                if data is None:
                    return  # TLS is over (close_notify) or failed: the connection is lost
            # After the peer's close frame the protocol ignores input, so a
            # client just reads on until the server's EOF.
            protocol.receive_data(data)
            keep_reading = await self._handle_events(protocol.events(), 0)
            # A short read emptied the kernel's buffer. If the messages were
            # taken at once, the peer most likely waits for an answer
            # (request and response), so the next read would fail; if some
            # are still queued, the peer streams and more has probably
            # arrived meanwhile.
            drained = read_size < RECEIVE_SIZE and not self._inbox.queued()

    def _decrypt(self, tls: TLSStream, data: bytes | bytearray) -> bytes | None:
        """The plaintext of bytes read from the socket; None once TLS ended or failed."""
        try:
            plaintext = tls.decrypt(data)
            answer = tls.pending_output()  # e.g. a TLS 1.2 renegotiation's
            if answer:
                self._put(answer)
        except (trio.BrokenResourceError, ConnectionClosed):
            return None
        return plaintext

    def _wake_reader(self) -> None:
        """Let a reader that stands aside look again at who should read."""
        task = self._reader_parked
        if task is not None:
            self._reader_parked = None
            trio.lowlevel.reschedule(task)

    async def _stand_aside(self) -> None:
        """The reader sleeps, leaving the socket to getters, until one wakes it.

        It counts as lent until it runs again, so a getter that asks at once
        after waking it may still read (the reader then sees it reading).
        """
        self._reader_lent = True
        self._reader_parked = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_park)
        self._reader_lent = False  # back at work until it decides again

    def _abort_park(self, _: object) -> trio.lowlevel.Abort:
        self._reader_parked = None  # cancelled: the connection is being aborted
        return _SUCCEEDED

    async def _handle_events(self, events: list[Event], index: int) -> bool:
        """Act on ``events[index:]`` in order; return False to stop reading.

        Pings only note their payload; the pongs owed go out in one write,
        before anything that may wait and at the end, so a batch of pings
        costs one write.
        """
        while index < len(events):
            kind, value = events[index]
            index += 1
            if kind == MESSAGE:
                if self._closed is not None:
                    continue  # closing: nothing more is delivered
                # After a local aclose() the inbox drops what it is given.
                if not self._inbox.put_nowait(value):
                    # The queue is full: wait, holding this message and the ones
                    # right behind it, which getters then take without waking us.
                    start = index - 1
                    while index < len(events) and events[index][0] == MESSAGE:
                        index += 1
                    self._send_owed_pongs()
                    await self._inbox.put([message for _, message in events[start:index]])
            elif kind == PING:
                state = self._protocol.state
                if state is _OPEN or state is _REMOTE_CLOSING:  # not once our close is out
                    owed = self._owed_pongs
                    if owed is None:
                        self._owed_pongs = [value]
                    else:
                        owed.append(value)
                        if len(owed) > MAX_OWED_PONGS:
                            del owed[0]  # RFC 6455 5.5.3: the most recent must be answered
            elif kind == PONG:
                self._pings.acknowledge(value)
            elif kind == CLOSE:
                return await self._on_close_frame(*value)
            elif kind == TOO_BIG:
                limit = self._max_message_size
                shown = "unlimited" if limit == math.inf else f"{int(limit)} bytes"
                logger.debug("closing %s: message over the limit of %s", self._remote, shown)
                self._start_close(1009, f"message exceeds the limit of {shown}")
            elif kind == FAIL:
                code, reason = value
                logger.debug("failing %s with %d: %s", self._remote, code, reason)
                self._start_close(code, reason)
                return False  # no closing handshake: the transport is closed at once
        self._send_owed_pongs()
        return True

    async def _on_close_frame(self, code: int, reason: str | None) -> bool:
        protocol = self._protocol
        if protocol.state is _REMOTE_CLOSING:
            # The peer started the closing handshake: record why, then answer
            # (after any pong owed for a ping that came before its close).
            if self._closed is None:
                self._closed = CloseReason(code, reason)
            self._inbox.close_put()
            self._send_owed_pongs(full=True)
            if protocol.state is _REMOTE_CLOSING and not self._broken:
                self._send(protocol.close(code, reason))
        if not protocol.client:
            return False  # the closing handshake is complete: the server closes TCP first
        if self._outgoing_size or self._sending_inline:
            await self._drain()  # our answer goes out before the wait for EOF starts
        # RFC 6455 7.1.1: a client waits for the server's EOF, within a bound.
        self._reader_scope.deadline = min(self._reader_scope.deadline,
                                          trio.current_time() + CLOSE_EOF_TIMEOUT)
        return True
