"""TLS that a connection can drive over the socket's descriptor itself.

``trio.SSLStream`` is built for any number of tasks sharing one stream: every
``send_all`` and ``receive_some`` takes a lock and passes through trio's
scheduler two or three times, so a small message over TLS costs several
passes where plain TCP costs none (docs/performance.md, "TLS and the generic
stream path"). A WebSocket connection has one reading and one writing path
already, so on POSIX it does TLS itself: :class:`TLSStream` holds an
``ssl.SSLObject`` between two memory BIOs, the opening handshakes (TLS, then
HTTP) go through its stream methods, and the open connection encrypts with
:meth:`TLSStream.encrypt` and decrypts with :meth:`TLSStream.decrypt` around
its own ``os.write`` and ``os.read``. Like ``trio.SSLStream`` with
``https_compatible=True``, it neither sends nor waits for ``close_notify``,
and a peer's EOF without one is a plain EOF.

Everywhere else (Windows, ``TRIO_WEBSOCKET_GENERIC_IO=1``), :func:`tls_stream`
and :func:`tls_listeners` give trio's own ``SSLStream`` and ``SSLListener``.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import trio

from ._http import RECEIVE_SIZE
from ._raw import RAW_SOCKET_IO

__all__ = ["TLSListener", "TLSStream", "tls_listeners", "tls_stream"]


class TLSStream(trio.abc.Stream):
    """TLS over a ``trio.SocketStream``, for one reading and one writing task.

    The handshake runs on first use of a stream method (or
    :meth:`do_handshake`). Failures raise ``trio.BrokenResourceError`` with
    the ``ssl.SSLError`` as its cause, as ``trio.SSLStream`` does.
    """

    __slots__ = ("_ended", "_handshake_lock", "_incoming", "_object", "_outgoing", "_send_lock",
                 "_shaken", "transport_stream")

    def __init__(self, transport_stream: trio.SocketStream, context: ssl.SSLContext, *,
                 server_side: bool, server_hostname: str | None = None) -> None:
        self.transport_stream = transport_stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing,
                                        server_side=server_side, server_hostname=server_hostname)
        self._shaken = False
        self._handshake_lock = trio.Lock()  # a sender and a receiver may both start it
        # Records leave in the order the BIO made them, whichever task sends them.
        self._send_lock = trio.Lock()
        self._ended = False  # decrypt() saw the peer's close_notify, or TLS failed

    @property
    def socket(self) -> trio.socket.SocketType:
        """The TCP socket underneath."""
        return self.transport_stream.socket

    async def do_handshake(self) -> None:
        """Complete the TLS handshake, if it is not done yet, and send its last flight."""
        await self._handshake()
        await self._send_outgoing()

    async def _handshake(self) -> None:
        """The handshake, leaving its last flight for the first send or wait."""
        if self._shaken:
            return
        async with self._handshake_lock:
            while not self._shaken:
                try:
                    self._object.do_handshake()
                except ssl.SSLWantReadError:
                    await self._send_outgoing()
                    await self._receive_incoming()
                    continue
                except (ssl.SSLError, ssl.CertificateError) as exc:
                    await self._send_outgoing_quietly()  # the alert tells the peer why
                    raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
                # Its last flight (a client's Finished, a TLS 1.3 server's
                # session tickets) goes out with the first data sent, or
                # before the first wait for data: one write fewer.
                self._shaken = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and send it (during the opening handshakes)."""
        await self._handshake()
        async with self._send_lock:
            # Taking the lock may yield: a cancellation raised there, after
            # the records were made, would lose them.
            await trio.lowlevel.checkpoint_if_cancelled()
            await self.transport_stream.send_all(self.encrypt(data))

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive and decrypt some bytes; ``b""`` at the peer's EOF."""
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._handshake()
        waited = False
        while True:
            try:
                data = self._object.read(max_bytes or RECEIVE_SIZE)  # b"" at close_notify
            except ssl.SSLWantReadError:
                await self._send_outgoing()  # a post-handshake message may want an answer
                await self._receive_incoming()
                waited = True
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""  # close_notify, or EOF without it
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS failed: {exc}") from exc
            if not waited:
                # Plaintext was already decrypted: still a schedule point, one
                # that cannot lose it to a cancellation.
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def wait_send_all_might_not_block(self) -> None:
        """As the transport's."""
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """TLS cannot half-close; like ``trio.SSLStream``, this is not supported."""
        raise NotImplementedError("TLS streams cannot half-close")

    async def aclose(self) -> None:
        """Close the transport, without ``close_notify`` (as ``https_compatible``)."""
        await self.transport_stream.aclose()

    # -- the connection's own I/O ---------------------------------------------

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """The TLS records that carry ``data``, ready for the socket.

        :raises trio.BrokenResourceError: if TLS failed.
        """
        try:
            self._object.write(data)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS failed: {exc}") from exc
        return self._outgoing.read()

    def decrypt(self, data: bytes | bytearray) -> bytes | None:
        """The plaintext in ``data`` and records before it; ``None`` once TLS ended.

        A record split across reads waits here for its end (``b""`` until then).
        After a call, :meth:`pending_output` may hold bytes TLS wants sent back.

        :raises trio.BrokenResourceError: if the records are not valid TLS.
        """
        if self._ended:
            return None
        incoming = self._incoming
        incoming.write(data)
        read, decrypted = self._object.read, self._object.pending
        chunks: list[bytes] = []
        try:
            while chunk := read(RECEIVE_SIZE):
                chunks.append(chunk)
                if not incoming.pending and not decrypted():
                    break  # all used: the next read could only want more (and raise)
            else:
                self._ended = True  # b"": close_notify (the plaintext before it first)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self._ended = True
        except ssl.SSLError as exc:
            # A forged or broken record, or the peer's fatal alert: TLS is over
            # for good, after the authenticated plaintext before it.
            self._ended = True
            if not chunks:
                raise trio.BrokenResourceError(f"TLS failed: {exc}") from exc
        if len(chunks) == 1:
            return chunks[0]
        if not chunks and self._ended:
            return None
        return b"".join(chunks)

    @property
    def ended(self) -> bool:
        """Whether TLS is over (the peer's ``close_notify``, or a failure): an EOF."""
        return self._ended

    def pending_output(self) -> bytes:
        """Bytes TLS itself wants sent (a TLS 1.2 renegotiation's, say), or ``b""``."""
        return self._outgoing.read() if self._outgoing.pending else b""

    # -- helpers ----------------------------------------------------------------

    async def _send_outgoing(self) -> None:
        if self._outgoing.pending:
            async with self._send_lock:
                await trio.lowlevel.checkpoint_if_cancelled()  # before the BIO is read
                records = self.pending_output()  # none if a send_all took them meanwhile
                if records:
                    await self.transport_stream.send_all(records)

    async def _send_outgoing_quietly(self) -> None:
        try:
            await self._send_outgoing()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _receive_incoming(self) -> None:
        data = await self.transport_stream.receive_some()
        if data:
            self._incoming.write(data)
        else:
            # The SSLObject then raises SSLEOFError: a handshake fails with it
            # as the cause (an OSError, as with trio.SSLStream), a read ends.
            self._incoming.write_eof()


class TLSListener(trio.abc.Listener[TLSStream]):
    """Accepts TCP connections as :class:`TLSStream` (the handshake runs on first use)."""

    def __init__(self, transport_listener: trio.SocketListener, context: ssl.SSLContext) -> None:
        self.transport_listener = transport_listener
        self._context = context

    async def accept(self) -> TLSStream:
        """The next connection, TLS not yet negotiated."""
        return TLSStream(await self.transport_listener.accept(), self._context, server_side=True)

    async def aclose(self) -> None:
        """Stop listening."""
        await self.transport_listener.aclose()


def tls_stream(transport_stream: trio.SocketStream, context: ssl.SSLContext,
               server_hostname: str) -> trio.abc.Stream:
    """A client's TLS stream: ours where connections drive the socket, else trio's."""
    if RAW_SOCKET_IO:
        return TLSStream(transport_stream, context, server_side=False,
                         server_hostname=server_hostname)
    return trio.SSLStream(transport_stream, context, server_hostname=server_hostname,
                          https_compatible=True)


def tls_listeners(listeners: Sequence[trio.SocketListener],
                  context: ssl.SSLContext) -> list[trio.abc.Listener[Any]]:
    """A server's TLS listeners: ours where connections drive the socket, else trio's."""
    if RAW_SOCKET_IO:
        return [TLSListener(listener, context) for listener in listeners]
    return [trio.SSLListener(listener, context, https_compatible=True) for listener in listeners]
