"""The exceptions the library raises to its users."""

from __future__ import annotations

from collections.abc import Sequence

from ._close_reason import CloseReason

__all__ = [
    "ConnectionClosed",
    "ConnectionFailed",
    "ConnectionRejected",
    "ConnectionTimeout",
    "DisconnectionTimeout",
    "HandshakeError",
]


class ConnectionClosed(Exception):
    """The operation cannot complete because the connection is closed or closing.

    ``reason`` is the :class:`CloseReason` recorded when the close began.
    """

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r})"


class HandshakeError(Exception):
    """The opening or closing handshake failed."""


class ConnectionFailed(HandshakeError, OSError):
    """The network failed while opening the connection: TCP, DNS or TLS.

    Both a :class:`HandshakeError` (the reference promises one for any
    networking error) and an :class:`OSError` (so ``except OSError`` works
    too). ``errno`` and ``strerror`` are the original error's, ``filename``
    is the address tried, and the original error is the ``__cause__``.
    """

    @classmethod
    def wrap(cls, error: OSError, address: str) -> ConnectionFailed:
        """The error to raise ``from error`` for a failure while connecting to ``address``."""
        if error.errno is None:
            return cls(f"cannot connect to {address}: {error}")
        return cls(error.errno, error.strerror, address)


class ConnectionRejected(HandshakeError):
    """The server answered the opening handshake with an HTTP error instead of upgrading.

    ``status_code``, ``headers`` (``(name, value)`` byte pairs) and ``body``
    (``None`` when the response had none) are the server's response.
    """

    def __init__(
        self,
        status_code: int,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | None,
    ) -> None:
        super().__init__(status_code, headers, body)
        self.status_code = status_code
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"{type(self).__name__}<status_code={self.status_code}>"


class ConnectionTimeout(HandshakeError):
    """Connecting and completing the opening handshake took longer than allowed."""


class DisconnectionTimeout(HandshakeError):
    """The closing handshake took longer than allowed; the connection was aborted."""
