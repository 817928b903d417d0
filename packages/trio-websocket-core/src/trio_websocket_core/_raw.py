"""Whether connections drive plain sockets through their descriptors."""

from __future__ import annotations

import os

__all__ = ["RAW_SOCKET_IO"]

#: Whether TCP connections (plain, and TLS made by trio_websocket) use the
#: socket's descriptor directly. Only on POSIX, where a socket is a file
#: descriptor that ``os.read`` and ``os.write`` take (on Windows a socket
#: handle is not). Setting the environment variable
#: ``TRIO_WEBSOCKET_GENERIC_IO=1`` turns it off, which the test suite uses to
#: run everything over the stream methods (and ``trio.SSLStream``) too.
RAW_SOCKET_IO = os.name == "posix" and os.environ.get("TRIO_WEBSOCKET_GENERIC_IO", "0") == "0"
