"""``python -m trio_websocket``: the client and the echo server, in a real terminal and piped.

The terminal tests run each program in a window of a private tmux server, type into it
with ``send-keys`` and read the screen with ``capture-pane``, so they see what a person
at a terminal sees: the prompt, the messages, what Ctrl-C and Ctrl-D do, the exit status.
The piped tests check what a script relies on: plain output, each message written
as it arrives rather than when a buffer fills, and the lines about the connection on
stderr.
"""

from __future__ import annotations

import functools
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

from .conftest import HOST
from .interop.harness import require

TOOL = [sys.executable, "-m", "trio_websocket"]
DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
#: Seconds any one thing the tests wait for may take.
PATIENCE = 15.0
#: Seconds between two looks at a screen or a pipe while waiting.
POLL = 0.02
#: The most looks a wait takes (it ends sooner, after PATIENCE seconds, if looking is slow).
LOOKS = int(PATIENCE / POLL)
#: Runs a program and then shows its exit status in the window. (tmux's own record of it,
#: #{pane_dead_status}, is sometimes never filled in for a window opened with new-window.)
#: It ignores Ctrl-C itself once the program runs, as a shell waiting for it would, and
#: the program starts with the usual handling of Ctrl-C.
SHOW_EXIT = ("import signal, subprocess, sys\n"
             "program = subprocess.Popen(sys.argv[1:])\n"
             "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
             "print(f'[exit status {program.wait()}]')\n")
EXITED = re.compile(r"^\[exit status (-?\d+)\]$", re.MULTILINE)
LISTENING = re.compile(r"Listening on (ws://\S+) \(Ctrl-C to stop\)")
EXIT_INTERRUPTED = 130


# -- a terminal ---------------------------------------------------------------------------


class Terminal:
    """A private tmux server: programs in windows, keys typed into them, screens read."""

    def __init__(self, tmux: str, home: Path) -> None:
        self.tmux = tmux
        self.socket = home / "tmux"
        self.config = home / "tmux.conf"
        # remain-on-exit keeps a window whose program ended, so that what it printed
        # can still be read; default-size is the size of windows with no client.
        self.config.write_text("set -g remain-on-exit on\nset -g default-size 100x30\n")
        self.started = False

    async def _tmux(self, *args: str) -> str:
        command = [self.tmux, "-S", str(self.socket), "-f", str(self.config), *args]
        result = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                        check=False)
        assert result.returncode == 0, (command, result.stderr.decode())
        return result.stdout.decode()

    async def start(self, name: str, args: list[str]) -> str:
        """Run ``python -m trio_websocket args`` in a new window called ``name``."""
        command = "exec " + shlex.join([sys.executable, "-c", SHOW_EXIT, *TOOL, *args])
        if self.started:
            await self._tmux("new-window", "-d", "-n", name, command)
        else:
            await self._tmux("new-session", "-d", "-s", "cli", "-n", name, "-x", "100",
                             "-y", "30", command)
            self.started = True
        return f"cli:{name}"

    async def screen(self, window: str) -> str:
        """All the window has shown (its scrollback too), without the empty rows below."""
        # -J: a line the terminal wrapped comes back as one, and a row keeps the spaces
        # written at its end (the prompt is "> "). -S -: from the start of the scrollback.
        screen = await self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", window)
        return screen.rstrip("\n")

    async def type(self, window: str, text: str) -> None:
        """Type ``text`` as it is, without pressing Enter."""
        await self._tmux("send-keys", "-t", window, "-l", text)

    async def press(self, window: str, *keys: str) -> None:
        """Press keys by their tmux names: ``Enter``, ``C-c``, ``C-d``."""
        await self._tmux("send-keys", "-t", window, *keys)

    async def wait_for(self, window: str, check: Callable[[str], bool] | str) -> str:
        """Look at the window until ``check`` holds (or its text shows); the screen then."""
        test = check if callable(check) else (lambda screen: check in screen)
        with trio.move_on_after(PATIENCE):
            for _ in range(LOOKS):
                if test(screen := await self.screen(window)):
                    return screen
                await trio.sleep(POLL)
        pytest.fail(f"waited {PATIENCE} s for {check!r}; the screen shows:\n{screen}")

    async def exit_status(self, window: str) -> int:
        """The status its program exited with, once it has (minus the signal's number if a
        signal ended it)."""
        screen = await self.wait_for(window, EXITED.search)
        match = EXITED.search(screen)
        assert match is not None
        return int(match.group(1))

    async def close(self) -> None:
        if self.started:
            await self._tmux("kill-server")


@pytest.fixture
async def terminal() -> AsyncIterator[Terminal]:
    tmux = require("tmux", "the command-line tests run the tool in a terminal")
    # A directory of its own for the server's socket: a short path (a socket's path has
    # a length limit that pytest's tmp_path can pass), and removed afterwards.
    with tempfile.TemporaryDirectory(prefix="trio-websocket-cli-") as home:
        terminal = Terminal(tmux, Path(home))
        try:
            yield terminal
        finally:
            with trio.CancelScope(shield=True):
                await terminal.close()


async def start_echo_server(terminal: Terminal) -> tuple[str, str]:
    """The tool's echo server in a window of its own: the window and the URL it serves."""
    window = await terminal.start("server", ["--serve", f"{HOST}:0"])
    screen = await terminal.wait_for(window, LISTENING.search)
    match = LISTENING.search(screen)
    assert match is not None
    return window, match.group(1)


def last_line(screen: str) -> str:
    return screen.splitlines()[-1]


def no_traceback(screen: str) -> None:
    assert "Traceback" not in screen, screen


def refused_port() -> socket.socket:
    """A socket bound to a port and not listening: connecting to the port is refused."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    return sock


# -- in a terminal ------------------------------------------------------------------------


@pytest.mark.peer("tmux")
async def test_typed_lines_come_back_and_ctrl_d_closes(terminal: Terminal) -> None:
    server, url = await start_echo_server(terminal)
    client = await terminal.start("client", [f"{url}/chat"])
    await terminal.wait_for(client, f"Connected to {url}/chat.\n> ")
    await terminal.type(client, "hello, terminal")
    await terminal.press(client, "Enter")
    screen = await terminal.wait_for(client, "< hello, terminal")
    # What was typed, the echo, then a fresh prompt for the next line.
    assert screen.splitlines()[-3:] == ["> hello, terminal", "< hello, terminal", "> "]
    await terminal.type(client, "été 🌍")
    await terminal.press(client, "Enter")
    await terminal.wait_for(client, "< été 🌍")

    await terminal.press(client, "C-d")
    screen = await terminal.wait_for(client, "Connection closed: 1000 (NORMAL_CLOSURE).")
    assert await terminal.exit_status(client) == 0
    no_traceback(screen)
    await terminal.wait_for(server, "closed: 1000 (NORMAL_CLOSURE)")
    assert "connected (path '/chat')" in await terminal.screen(server)


@pytest.mark.peer("tmux")
async def test_ctrl_c_on_the_client_closes_cleanly(terminal: Terminal) -> None:
    server, url = await start_echo_server(terminal)
    client = await terminal.start("client", [url])
    await terminal.wait_for(client, "> ")
    await terminal.type(client, "never sent")
    await terminal.press(client, "C-c")
    screen = await terminal.wait_for(client, "Connection closed: 1000 (NORMAL_CLOSURE).")
    assert await terminal.exit_status(client) == EXIT_INTERRUPTED
    no_traceback(screen)
    assert "never sent" not in screen  # not sent, and its prompt line cleared
    server_screen = await terminal.wait_for(server, "closed: 1000 (NORMAL_CLOSURE)")
    assert "never sent" not in server_screen


@pytest.mark.peer("tmux")
async def test_ctrl_c_on_the_server_closes_its_clients_with_1001(terminal: Terminal) -> None:
    server, url = await start_echo_server(terminal)
    client = await terminal.start("client", [url])
    await terminal.wait_for(server, "connected (path '/')")

    await terminal.press(server, "C-c")
    screen = await terminal.wait_for(server, "Stopped.")
    assert "Stopping: closing 1 connection." in screen
    assert "closed: 1001 (GOING_AWAY), reason: 'server shutting down'" in screen
    assert await terminal.exit_status(server) == EXIT_INTERRUPTED
    no_traceback(screen)
    # For the client, the peer closed the connection, normally: exit status 0.
    screen = await terminal.wait_for(client, "Connection closed by the server: 1001 "
                                     "(GOING_AWAY), reason: 'server shutting down'.")
    assert await terminal.exit_status(client) == 0
    no_traceback(screen)


@pytest.mark.peer("tmux")
async def test_messages_arrive_above_the_line_being_typed(
    terminal: Terminal, nursery: trio.Nursery
) -> None:
    push = trio.Event()
    received: list[str | bytes] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await push.wait()
        await ws.send_message("news\x1b[2J flash\nsecond line of it " + "x" * 150)
        await ws.send_message(b"\x00\x01\xfe\xff")
        received.append(await ws.get_message())
        await ws.aclose(4000, "bye now")

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    client = await terminal.start("client", [f"ws://{HOST}:{server.port}/"])
    await terminal.wait_for(client, "> ")
    await terminal.type(client, "half a li")
    await terminal.wait_for(client, lambda screen: last_line(screen) == "> half a li")

    push.set()
    screen = await terminal.wait_for(client, "< [binary, 4 bytes] 00 01 fe ff")
    rows = screen.splitlines()
    # The server's escape code shows as text instead of clearing the screen; the long
    # line is cut to the width; the line being typed is still whole, below it all.
    assert rows[1] == "< news\\x1b[2J flash"
    assert rows[2].startswith("< second line of it xxx") and len(rows[2]) == 99
    assert rows[3] == "x" * (150 - (99 - len("< second line of it ")))
    assert rows[4:] == ["< [binary, 4 bytes] 00 01 fe ff", "> half a li"]

    await terminal.type(client, "ne")
    await terminal.press(client, "Enter")
    screen = await terminal.wait_for(client, "Connection closed by the server: 4000 "
                                     "(PRIVATE_RESERVED), reason: 'bye now'.")
    assert received == ["half a line"]
    # Closed by the server, but not normally: exit status 1.
    assert await terminal.exit_status(client) == 1
    no_traceback(screen)


@pytest.mark.peer("tmux")
async def test_connection_refused_in_a_terminal(terminal: Terminal) -> None:
    with refused_port() as sock:
        url = f"ws://{HOST}:{sock.getsockname()[1]}/"
        client = await terminal.start("client", [url])
        assert await terminal.exit_status(client) == 1
    screen = await terminal.screen(client)
    assert screen.startswith(f"python -m trio_websocket: cannot connect to {url}: ")
    assert "Connection refused" in screen.splitlines()[0]
    assert "Traceback" not in screen


# -- piped --------------------------------------------------------------------------------


class Pipe:
    """Lines from a child process's pipe, each waited for with a bound."""

    def __init__(self, stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        self.stream = stream
        self.buffer = b""

    async def line(self) -> str:
        with trio.fail_after(PATIENCE):
            while b"\n" not in self.buffer:
                chunk = await self.stream.receive_some()
                assert chunk, f"the pipe closed; it held {self.buffer!r}"
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    async def rest(self) -> str:
        with trio.fail_after(PATIENCE):
            while chunk := await self.stream.receive_some():
                self.buffer += chunk
        return self.buffer.decode()


async def start_tool(nursery: trio.Nursery, *args: str, stdin: bool = True) -> trio.Process:
    run = functools.partial(trio.run_process, [*TOOL, *args], check=False,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process: trio.Process = await nursery.start(run)
    return process


async def exit_status(process: trio.Process) -> int:
    with trio.fail_after(PATIENCE):
        return await process.wait()


async def test_piped_client_prints_messages_plainly(nursery: trio.Nursery) -> None:
    received: list[str | bytes] = []
    closed = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(b"\x00\xff")
        try:
            while True:
                received.append(message := await ws.get_message())
                if message == "one":
                    await ws.send_message(f"{message}\n(twice: {message})")
        except ConnectionClosed:
            closed.set()

    server: WebSocketServer = await nursery.start(serve_websocket, handler, HOST, 0, None)
    url = f"ws://{HOST}:{server.port}/piped"
    client = await start_tool(nursery, url)
    assert client.stdin is not None
    out, err = Pipe(client.stdout), Pipe(client.stderr)
    assert await err.line() == f"Connected to {url}."
    # No prompt, no escape codes; each message written as soon as it arrives.
    assert await out.line() == "[binary, 2 bytes] 00 ff"
    await client.stdin.send_all(b"one\r\n")
    assert [await out.line(), await out.line()] == ["one", "(twice: one)"]
    await client.stdin.send_all(b"two, with no line end")
    await client.stdin.aclose()  # the end of input: what came before it is a line too
    assert await exit_status(client) == 0
    assert await err.rest() == "Connection closed: 1000 (NORMAL_CLOSURE).\n"
    assert await out.rest() == ""
    with trio.fail_after(PATIENCE):
        await closed.wait()
    assert received == ["one", "two, with no line end"]


async def test_piped_server_echoes_and_stops_on_sigint(nursery: trio.Nursery) -> None:
    server = await start_tool(nursery, "--serve", f"{HOST}:0", stdin=False)
    out = Pipe(server.stdout)
    match = LISTENING.fullmatch(await out.line())  # written at once, not when a buffer fills
    assert match is not None
    async with open_websocket_url(f"{match.group(1)}/pipe?x=1") as ws:
        assert re.fullmatch(r"127\.0\.0\.1:\d+ connected \(path '/pipe\?x=1'\)", await out.line())
        for message in ("text", b"\x00binary\xff", ""):
            await ws.send_message(message)
            assert await ws.get_message() == message
        server.send_signal(signal.SIGINT)
        assert await out.line() == "Stopping: closing 1 connection."
        with pytest.raises(ConnectionClosed) as closed:
            with trio.fail_after(PATIENCE):
                await ws.get_message()
        assert (closed.value.reason.code, closed.value.reason.reason) == \
            (1001, "server shutting down")
    assert await out.line() == f"{ws.local.address}:{ws.local.port} closed: 1001 " \
        "(GOING_AWAY), reason: 'server shutting down'"
    assert await out.rest() == "Stopped.\n"
    assert await exit_status(server) == EXIT_INTERRUPTED
    assert await Pipe(server.stderr).rest() == ""


async def test_a_server_that_goes_away_is_a_lost_connection(nursery: trio.Nursery) -> None:
    server = await start_tool(nursery, "--serve", f"{HOST}:0", stdin=False)
    match = LISTENING.fullmatch(await Pipe(server.stdout).line())
    assert match is not None
    client = await start_tool(nursery, match.group(1))
    err = Pipe(client.stderr)
    await err.line()  # Connected to ...
    server.kill()  # no closing handshake: the system closes its socket
    assert await err.rest() == "Connection lost: 1006 (ABNORMAL_CLOSURE).\n"
    assert await exit_status(client) == 1
    await exit_status(server)


@pytest.mark.parametrize(("url", "why"), [
    ("http://example.test/", "invalid URL: WebSocket URLs start with ws:// or wss://"),
    ("ws://", "invalid URL: no host in URL"),
    ("refused", "cannot connect to {url}: "),
    ("rejected", "{url} refused the WebSocket handshake: HTTP 404: no such feed\n"),
])
async def test_failing_to_connect_is_one_line(
    nursery: trio.Nursery, url: str, why: str
) -> None:
    async def reject(request: WebSocketRequest) -> None:
        await request.reject(404, body=b"no such feed\n")

    with refused_port() as sock:
        if url == "refused":
            url = f"ws://{HOST}:{sock.getsockname()[1]}/"
        elif url == "rejected":
            server = await nursery.start(serve_websocket, reject, HOST, 0, None)
            url = f"ws://{HOST}:{server.port}/feed"
        client = await start_tool(nursery, url, stdin=False)
        assert await exit_status(client) == 1
    error = await Pipe(client.stderr).rest()
    assert error.startswith(f"python -m trio_websocket: {why.format(url=url)}"), error
    assert error.count("\n") == 1, error
    assert await Pipe(client.stdout).rest() == ""


async def test_a_port_in_use_is_one_line(nursery: trio.Nursery) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = await start_tool(nursery, "--serve", f"{HOST}:{port}", stdin=False)
        assert await exit_status(server) == 1
    error = await Pipe(server.stderr).rest()
    assert error.startswith(f"python -m trio_websocket: cannot listen on {HOST}:{port}: ")
    assert error.count("\n") == 1, error


@pytest.mark.parametrize("args", [[], ["ws://x/", "--serve", "127.0.0.1:0"],
                                  ["--serve", "nowhere"], ["--serve", "127.0.0.1:70000"]])
async def test_usage_errors_exit_with_2(nursery: trio.Nursery, args: list[str]) -> None:
    process = await start_tool(nursery, *args, stdin=False)
    assert await exit_status(process) == 2
    assert "usage: python -m trio_websocket" in await Pipe(process.stderr).rest()


async def test_the_demo_in_the_readme_runs() -> None:
    with trio.fail_after(30):
        result = await trio.run_process([sys.executable, str(DEMO)], capture_stdout=True,
                                        capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    output = result.stdout.decode()
    for line in ("library client: ping answered by a pong",
                 "  sent 'first line', printed 'first line'",
                 "  Connection closed: 1000 (NORMAL_CLOSURE).",
                 "  Stopped."):
        assert line in output.splitlines(), output
