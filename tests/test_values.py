"""CloseReason and Endpoint, and addresses that need brackets."""

from __future__ import annotations

import ipaddress

import pytest
import trio

from trio_websocket import (
    CloseReason,
    Endpoint,
    WebSocketRequest,
    open_websocket,
    open_websocket_url,
    serve_websocket,
)


@pytest.mark.parametrize(("code", "name"), [
    (1000, "NORMAL_CLOSURE"), (1001, "GOING_AWAY"), (1002, "PROTOCOL_ERROR"),
    (1005, "NO_STATUS_RCVD"), (1006, "ABNORMAL_CLOSURE"), (1009, "MESSAGE_TOO_BIG"),
    (1011, "INTERNAL_ERROR"), (1014, "BAD_GATEWAY"), (2999, "RFC_RESERVED"),
    (3000, "IANA_RESERVED"), (4999, "PRIVATE_RESERVED"), (5000, "INVALID_CODE"),
])
def test_close_reason_names(code: int, name: str) -> None:
    reason = CloseReason(code, "why")
    assert (reason.code, reason.name, reason.reason) == (code, name, "why")
    assert name in repr(reason)


def test_close_reason_is_read_only_and_comparable() -> None:
    reason = CloseReason(1000, None)
    with pytest.raises(AttributeError):
        reason.code = 1001  # type: ignore[misc]
    assert reason == CloseReason(1000, None) != CloseReason(1000, "x")
    assert len({reason, CloseReason(1000, None)}) == 1


def test_endpoint_urls() -> None:
    assert Endpoint("127.0.0.1", 80, False).url == "ws://127.0.0.1:80"
    assert Endpoint("::1", 8443, True).url == "wss://[::1]:8443"
    endpoint = Endpoint("10.0.0.1", 1, False)
    assert endpoint.address == ipaddress.ip_address("10.0.0.1")
    assert endpoint == Endpoint(ipaddress.ip_address("10.0.0.1"), 1, False)
    assert endpoint != Endpoint("10.0.0.1", 1, True)
    with pytest.raises(ValueError):
        Endpoint("not an address", 1, False)


async def test_ipv6_loopback_by_url_and_by_host(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        assert isinstance(ws.local, Endpoint) and ws.local.address.version == 6
        await ws.send_message(request.path)

    server = await nursery.start(serve_websocket, handler, "::1", 0, None)
    assert server.listeners[0].url == f"ws://[::1]:{server.port}"
    async with open_websocket_url(f"ws://[::1]:{server.port}/six?x=1") as ws:
        assert await ws.get_message() == "/six?x=1"
        assert isinstance(ws.remote, Endpoint) and str(ws.remote.address) == "::1"
    async with open_websocket("::1", server.port, "/by-host", use_ssl=False) as ws:
        assert await ws.get_message() == "/by-host"
