"""Run the command-line echo server on 127.0.0.1 and talk to it twice: from this program
with the library (text, binary, a ping, a clean close), then through the command-line
client, its standard input and output piped to this program."""

import functools
import signal
import subprocess
import sys

import trio

from trio_websocket import open_websocket_url

TOOL = [sys.executable, "-m", "trio_websocket"]
PIPE = subprocess.PIPE
if sys.platform == "win32":
    STOP = signal.CTRL_BREAK_EVENT
    NEW_GROUP = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
else:
    STOP = signal.SIGINT
    NEW_GROUP = {}


class Lines:
    """The lines a child process writes to one of its pipes, one at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some()
            if not chunk:
                raise EOFError("the process closed its output")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().rstrip("\r")


async def library_client(url: str) -> None:
    async with open_websocket_url(url) as ws:
        for message in ("hello, websocket", b"\x00\x01binary\xff"):
            await ws.send_message(message)
            reply = await ws.get_message()
            assert reply == message, (reply, message)
            print(f"library client: got {reply!r} back")
        await ws.ping(b"are you there?")
        print("library client: ping answered by a pong")
    print(f"library client: closed cleanly: {ws.closed}")


async def command_line_client(nursery: trio.Nursery, url: str) -> None:
    print(f"$ python -m trio_websocket {url}   (input and output piped)")
    client: trio.Process = await nursery.start(functools.partial(
        trio.run_process, [*TOOL, url], stdin=PIPE, stdout=PIPE, stderr=PIPE, check=False))
    assert client.stdin and client.stdout and client.stderr
    replies, notes = Lines(client.stdout), Lines(client.stderr)
    print(f"  {await notes.next()}")  # Connected to ...
    for line in ("first line", "second line, sent once the first came back"):
        await client.stdin.send_all(line.encode() + b"\n")
        print(f"  sent {line!r}, printed {await replies.next()!r}")
    await client.stdin.aclose()  # the end of input, as Ctrl-D at a terminal
    print(f"  {await notes.next()}")  # Connection closed: 1000 ...
    print(f"  exit status {await client.wait()}")


async def main() -> int:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(20):
            print("$ python -m trio_websocket --serve 127.0.0.1:0")
            server: trio.Process = await nursery.start(functools.partial(
                trio.run_process, [*TOOL, "--serve", "127.0.0.1:0"], stdout=PIPE, check=False,
                **NEW_GROUP))
            assert server.stdout
            output = Lines(server.stdout)
            listening = await output.next()
            print(f"  {listening}")
            url = listening.split()[2]
            await library_client(f"{url}/demo")
            await command_line_client(nursery, f"{url}/cli")
            # Ctrl-C stops the server cleanly. Windows cannot send a signal to one
            # process; Ctrl-Break, sent to the process group the server leads, does
            # the same there.
            print("Ctrl-C to the server; everything it printed since it started listening:")
            server.send_signal(STOP)
            try:
                while True:
                    print(f"  {await output.next()}")
            except EOFError:
                pass
            print(f"  exit status {await server.wait()}")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
