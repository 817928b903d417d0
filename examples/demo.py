"""Serve WebSocket on 127.0.0.1 and talk to it: text and binary echo, a ping, a clean close."""

import sys

import trio

from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket_url, serve_websocket


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    print(f"server: accepted {request.path} from {ws.remote}")
    try:
        while True:
            message = await ws.get_message()
            print(f"server: echoing {message!r}")
            await ws.send_message(message)
    except ConnectionClosed as closed:
        print(f"server: client closed with {closed.reason.code} ({closed.reason.name})")


async def main() -> int:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/demo"
        print(f"server: listening on {url}")
        with trio.fail_after(10):
            async with open_websocket_url(url) as ws:
                for message in ("hello, websocket", b"\x00\x01binary\xff"):
                    await ws.send_message(message)
                    reply = await ws.get_message()
                    assert reply == message, (reply, message)
                    print(f"client: got {reply!r} back")
                await ws.ping(b"are you there?")
                print("client: ping answered by a pong")
            print(f"client: closed cleanly: {ws.closed}")
        nursery.cancel_scope.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
