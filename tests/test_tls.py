"""wss:// on both sides, with certificates from a throwaway CA."""

from __future__ import annotations

import ssl

import pytest
import trio
import trustme

from trio_websocket import Endpoint, open_websocket, open_websocket_url, serve_websocket

from .conftest import HOST, echo_handler


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(nursery: trio.Nursery, ca: trustme.CA) -> int:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "localhost").configure_cert(context)
    server = await nursery.start(serve_websocket, echo_handler, HOST, 0, context)
    assert server.listeners[0].is_ssl
    return int(server.port)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_wss_echo_by_url(tls_server: int, ca: trustme.CA) -> None:
    async with open_websocket_url(f"wss://{HOST}:{tls_server}/secure", client_context(ca)) as ws:
        await ws.send_message("secret")
        assert await ws.get_message() == "secret"
        assert isinstance(ws.remote, Endpoint) and ws.remote.is_ssl
        assert ws.remote.url == f"wss://{HOST}:{tls_server}"


async def test_wss_echo_by_host(tls_server: int, ca: trustme.CA) -> None:
    async with open_websocket("localhost", tls_server, "/", use_ssl=client_context(ca)) as ws:
        await ws.send_message(b"bytes")
        assert await ws.get_message() == b"bytes"


async def test_client_verifies_certificates_by_default(tls_server: int, ca: trustme.CA) -> None:
    from trio_websocket import ConnectionFailed, HandshakeError

    with pytest.raises(ConnectionFailed) as url_failure:
        async with open_websocket_url(f"wss://{HOST}:{tls_server}/"):
            pass
    with pytest.raises(ConnectionFailed) as host_failure:
        async with open_websocket(HOST, tls_server, "/", use_ssl=True):
            pass
    # Either way of catching it works, and the TLS error is the cause.
    for failure in (url_failure.value, host_failure.value):
        assert isinstance(failure, HandshakeError) and isinstance(failure, OSError)
        assert isinstance(failure.__cause__, ssl.SSLCertVerificationError)
        assert failure.filename == f"{HOST}:{tls_server}"
    # The failed clients did not hurt the server.
    async with open_websocket_url(f"wss://{HOST}:{tls_server}/", client_context(ca)) as ws:
        await ws.send_message("ok")
        assert await ws.get_message() == "ok"


async def test_plain_client_against_tls_server(tls_server: int, ca: trustme.CA) -> None:
    from trio_websocket import HandshakeError

    with pytest.raises(HandshakeError):
        async with open_websocket(HOST, tls_server, "/", use_ssl=False, connect_timeout=5):
            pass
