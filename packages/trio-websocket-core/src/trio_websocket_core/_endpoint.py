"""Where a connection's two ends are, as far as the transport can tell."""

from __future__ import annotations

import ipaddress
import socket

import trio

from ._tls import TLSStream

__all__ = ["Endpoint", "socket_endpoint", "stream_endpoints"]


class Endpoint:
    """One end of a TCP connection: an IP address, a port, and whether TLS is in use."""

    __slots__ = ("_address", "_is_ssl", "_port")

    def __init__(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
                 port: int, is_ssl: bool) -> None:
        self._address = ipaddress.ip_address(address)
        self._port = port
        self._is_ssl = is_ssl

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The IP address, as an :mod:`ipaddress` object."""
        return self._address

    @property
    def port(self) -> int:
        """The TCP port."""
        return self._port

    @property
    def is_ssl(self) -> bool:
        """Whether the connection is wrapped in TLS."""
        return self._is_ssl

    @property
    def url(self) -> str:
        """A ``ws://`` or ``wss://`` URL naming this endpoint, port always included."""
        scheme = "wss" if self._is_ssl else "ws"
        host = str(self._address) if self._address.version == 4 else f"[{self._address}]"
        return f"{scheme}://{host}:{self._port}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return (self._address, self._port, self._is_ssl) == (
            other._address, other._port, other._is_ssl)

    def __hash__(self) -> int:
        return hash((self._address, self._port, self._is_ssl))

    def __repr__(self) -> str:
        return f"Endpoint(address={str(self._address)!r}, port={self._port}, is_ssl={self._is_ssl})"


def socket_endpoint(sock: trio.socket.SocketType, is_ssl: bool, *, peer: bool) -> Endpoint | str:
    """Describe one end of a socket: an :class:`Endpoint` for IP, else the address as text."""
    name = sock.getpeername() if peer else sock.getsockname()
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(name, tuple):
        return Endpoint(name[0], name[1], is_ssl)
    return str(name)


def stream_endpoints(stream: trio.abc.Stream) -> tuple[Endpoint | str, Endpoint | str]:
    """Return ``(local, remote)`` for a stream.

    TCP streams (optionally under TLS) give :class:`Endpoint` objects; Unix
    sockets give their path; any other stream gives its ``repr``.
    """
    inner: object = stream
    is_ssl = False
    if isinstance(inner, (trio.SSLStream, TLSStream)):
        is_ssl = True
        inner = inner.transport_stream
    if isinstance(inner, trio.SocketStream):
        try:
            return (socket_endpoint(inner.socket, is_ssl, peer=False),
                    socket_endpoint(inner.socket, is_ssl, peer=True))
        except OSError:
            pass
    text = repr(stream)
    return text, text
