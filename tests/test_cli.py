"""``python -m trio_websocket``: the client and the echo server, in a real terminal and piped.

The terminal tests run each program in a window of a private tmux server, type into it
with ``send-keys`` and read the screen with ``capture-pane``, so they see what a person
at a terminal sees: the prompt, the messages, what Ctrl-C and Ctrl-D do, the exit status.
The piped tests check what a script relies on: plain output, each message written
as it arrives rather than when a buffer fills, the lines about the connection on
stderr, and no traceback when a pipe closes or an encoding does not fit.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, TextMessage

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

from .conftest import HOST, RawPeer
from .interop.harness import require

TOOL = [sys.executable, "-m", "trio_websocket"]
DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
#: Seconds any one thing the tests wait for may take.
PATIENCE = 15.0
#: Seconds between two looks at a screen or a pipe while waiting.
POLL = 0.02
#: The most looks a wait takes (it ends sooner, after PATIENCE seconds, if looking is slow).
LOOKS = int(PATIENCE / POLL)
#: Runs a program in a tmux window, then shows its exit status there. (tmux's own record
#: of it, #{pane_dead_status}, is sometimes never filled in for a window opened with
#: new-window.) It ignores Ctrl-C itself once the program runs, as a shell waiting for it
#: would, and the program starts with the usual handling of Ctrl-C. Its arguments: the
#: pytest process to watch, the tmux program and the tests' directory (its socket is
#: "tmux" there), whether to show the line typed after the program ended, a file for the
#: program's standard input ("" for the terminal), then the program.
#:
#: It also cleans up after a pytest that is killed (SIGTERM, say) and so never runs its
#: fixtures' teardown: it looks every POLL_WRAPPER seconds whether pytest still runs, and
#: once it does not, ends its program, the tmux server and the directory.
WRAPPER = """\
import os, shutil, signal, subprocess, sys, threading
watched, tmux, home, show_left_over, stdin, *command = sys.argv[1:]
LOOKS = 3000  # at 0.2 s a look: ten minutes, longer than any test
program = subprocess.Popen(command, stdin=open(stdin) if stdin else None)
signal.signal(signal.SIGINT, signal.SIG_IGN)

def pytest_runs():
    try:
        os.kill(int(watched), 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # it exists, as someone else's
    return True

def left_over():  # what reaches the terminal's input after the program ended
    print(f'[left over: {sys.stdin.readline()!r}]', flush=True)

status = None
for _ in range(LOOKS):
    if status is None:
        try:
            status = program.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        else:
            print(f'[exit status {status}]', flush=True)
            if show_left_over:
                threading.Thread(target=left_over, daemon=True).start()
            continue
    else:
        threading.Event().wait(0.2)
    if not pytest_runs():
        break
if program.poll() is None:
    program.kill()
    program.wait()
subprocess.run([tmux, '-S', os.path.join(home, 'tmux'), 'kill-server'], check=False)
shutil.rmtree(home, ignore_errors=True)
"""
EXITED = re.compile(r"^\[exit status (-?\d+)\]$", re.MULTILINE)
LISTENING = re.compile(r"Listening on (ws://\S+) \(Ctrl-C to stop\)")
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


# -- a terminal ---------------------------------------------------------------------------


class Terminal:
    """A private tmux server: programs in windows, keys typed into them, screens read."""

    def __init__(self, tmux: str, home: Path) -> None:
        self.tmux = tmux
        self.home = home
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

    async def start(self, name: str, args: list[str], *, stdin: Path | None = None,
                    show_left_over: bool = False) -> str:
        """Run ``python -m trio_websocket args`` in a new window called ``name``, its
        standard input the terminal or the file ``stdin``."""
        wrapper = [sys.executable, "-c", WRAPPER, str(os.getpid()), self.tmux,
                   str(self.home), "yes" if show_left_over else "", str(stdin or "")]
        command = "exec " + shlex.join([*wrapper, *TOOL, *args])
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

    async def wait_for(self, window: str, check: Callable[[str], object] | str) -> str:
        """Look at the window until ``check`` holds (or its text shows); the screen then."""
        test = check if callable(check) else (lambda screen: check in screen)
        screen = ""
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

    async def ended(self, window: str, status: int) -> str:
        """The window's whole screen once its program exited, having checked the status."""
        assert await self.exit_status(window) == status
        return await self.screen(window)

    async def close(self) -> None:
        if self.started:
            await self._tmux("kill-server")


@pytest.fixture
def tmux() -> str:
    # A plain fixture: a skip raised inside a trio test or fixture loses its reason.
    return require("tmux", "the command-line tests run the tool in a terminal")


@pytest.fixture
async def terminal(tmux: str) -> AsyncIterator[Terminal]:
    # A directory of its own for the server's socket: a short path (a socket's path has
    # a length limit that pytest's tmp_path can pass), and removed afterwards.
    with tempfile.TemporaryDirectory(prefix="trio-websocket-cli-",
                                     ignore_cleanup_errors=True) as home:
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


async def tcp_server(nursery: trio.Nursery,
                     handler: Callable[[trio.SocketStream], Awaitable[None]]) -> str:
    """A TCP server on loopback running ``handler`` for each connection; its ws:// URL."""
    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            await handler(stream)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host=HOST))
    return f"ws://{HOST}:{listeners[0].socket.getsockname()[1]}/"


async def never_answers_a_close(stream: trio.SocketStream) -> None:
    """A WebSocket server that says hello and then ignores everything, a close too."""
    peer = RawPeer(stream, ConnectionType.SERVER)
    await peer.next_event()  # the handshake request
    await peer.send(AcceptConnection())
    await peer.send(TextMessage("hello"))
    while await peer.next_event() is not None:
        pass


# -- in a terminal ------------------------------------------------------------------------


@pytest.mark.peer("tmux")
async def test_typed_lines_come_back_and_ctrl_d_closes(terminal: Terminal) -> None:
    server, url = await start_echo_server(terminal)
    client = await terminal.start("client", [f"{url}/chat"])
    await terminal.wait_for(client, f"Connected to {url}/chat.\n> ")
    await terminal.type(client, "hello, terminal")
    await terminal.press(client, "Enter")
    screen = await terminal.wait_for(client, "< hello, terminal\n> ")
    # What was typed, the echo, then a fresh prompt for the next line.
    assert screen.splitlines()[-3:] == ["> hello, terminal", "< hello, terminal", "> "]
    await terminal.type(client, "été 🌍")
    await terminal.press(client, "Enter")
    await terminal.wait_for(client, "< été 🌍")

    # Ctrl-D on an empty line ends the input; nothing is on its way, so the client
    # closes at once (at a terminal it does not linger).
    await terminal.press(client, "C-d")
    screen = await terminal.ended(client, 0)
    # The empty prompt line is cleared on the way out.
    assert screen.splitlines()[-3:] == [
        "< été 🌍", "Connection closed: 1000 (NORMAL_CLOSURE).", "[exit status 0]"]
    no_traceback(screen)
    await terminal.wait_for(server, "closed: 1000 (NORMAL_CLOSURE)")
    assert "connected (path '/chat')" in await terminal.screen(server)


@pytest.mark.peer("tmux")
async def test_ctrl_d_mid_line_sends_the_line_and_waits_for_replies(
    terminal: Terminal, nursery: trio.Nursery
) -> None:
    async def echo_then_close(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(await ws.get_message())
        await ws.aclose()  # so the test never depends on how long the client lingers

    server = await nursery.start(serve_websocket, echo_then_close, HOST, 0, None)
    client = await terminal.start("client", [f"ws://{HOST}:{server.port}/", "--linger", "30"])
    await terminal.wait_for(client, "> ")
    # Ctrl-D in the middle of a line sends it and ends the input, at the first press;
    # with --linger, the reply still on its way is printed.
    await terminal.type(client, "last words")
    await terminal.press(client, "C-d")
    screen = await terminal.ended(client, 0)
    assert screen.splitlines()[-4:] == [
        "> last words", "< last words",
        "Connection closed by the server: 1000 (NORMAL_CLOSURE).", "[exit status 0]"]
    no_traceback(screen)


@pytest.mark.peer("tmux")
async def test_ctrl_c_on_the_client_closes_cleanly(terminal: Terminal) -> None:
    server, url = await start_echo_server(terminal)
    client = await terminal.start("client", [url])
    await terminal.wait_for(client, "> ")
    await terminal.type(client, "never sent")
    await terminal.press(client, "C-c")
    screen = await terminal.ended(client, EXIT_INTERRUPTED)
    assert screen.splitlines()[-3:] == ["Closing the connection (Ctrl-C again drops it).",
                                        "Connection closed: 1000 (NORMAL_CLOSURE).",
                                        "[exit status 130]"]
    no_traceback(screen)
    assert "never sent" not in screen  # not sent, and its prompt line cleared
    server_screen = await terminal.wait_for(server, "closed: 1000 (NORMAL_CLOSURE)")
    assert "never sent" not in server_screen


@pytest.mark.peer("tmux")
async def test_ctrl_c_while_connecting_gives_up_at_once(
    terminal: Terminal, nursery: trio.Nursery
) -> None:
    asked = trio.Event()

    async def never_answers(stream: trio.SocketStream) -> None:
        await stream.receive_some()  # the handshake request: the client is connecting
        asked.set()
        await trio.sleep_forever()

    url = await tcp_server(nursery, never_answers)
    # Without Ctrl-C, connecting would go on for a minute.
    client = await terminal.start("client", [url, "--timeout", "60"])
    with trio.fail_after(PATIENCE):
        await asked.wait()
    await terminal.press(client, "C-c")
    screen = await terminal.ended(client, EXIT_INTERRUPTED)
    assert screen.splitlines()[-2:] == ["Interrupted.", "[exit status 130]"]


@pytest.mark.peer("tmux")
async def test_a_second_ctrl_c_drops_a_connection_the_server_does_not_close(
    terminal: Terminal, nursery: trio.Nursery
) -> None:
    url = await tcp_server(nursery, never_answers_a_close)
    client = await terminal.start("client", [url, "--timeout", "60"])
    await terminal.wait_for(client, "< hello\n> ")
    await terminal.press(client, "C-c")
    await terminal.wait_for(client, "Closing the connection (Ctrl-C again drops it).")
    await terminal.press(client, "C-c")
    screen = await terminal.ended(client, EXIT_INTERRUPTED)
    assert screen.splitlines()[-3:] == ["Closing the connection (Ctrl-C again drops it).",
                                        "Interrupted; connection dropped.",
                                        "[exit status 130]"]


@pytest.mark.peer("tmux")
async def test_ctrl_c_after_ctrl_d_drops_a_connection_the_server_does_not_close(
    terminal: Terminal, nursery: trio.Nursery
) -> None:
    url = await tcp_server(nursery, never_answers_a_close)
    client = await terminal.start("client", [url, "--timeout", "60"])
    await terminal.wait_for(client, "< hello\n> ")
    await terminal.press(client, "C-d")
    hint = "Waiting for the server to answer the close (Ctrl-C drops the connection)."
    await terminal.wait_for(client, hint)
    await terminal.press(client, "C-c")
    screen = await terminal.ended(client, EXIT_INTERRUPTED)
    assert screen.splitlines()[-3:] == [hint, "Interrupted; connection dropped.",
                                        "[exit status 130]"]


@pytest.mark.peer("tmux")
async def test_ctrl_c_on_the_server_closes_its_clients_with_1001(terminal: Terminal) -> None:
    server, url = await start_echo_server(terminal)
    client = await terminal.start("client", [url])
    await terminal.wait_for(server, "connected (path '/')")

    await terminal.press(server, "C-c")
    screen = await terminal.wait_for(server, "Stopped.")
    assert "Stopping: closing 1 connection (Ctrl-C again drops it)." in screen
    assert "closed: 1001 (GOING_AWAY), reason: 'server shutting down'" in screen
    assert await terminal.exit_status(server) == EXIT_INTERRUPTED
    no_traceback(screen)
    # For the client, the peer closed the connection, normally: exit status 0.
    screen = await terminal.wait_for(client, "Connection closed by the server: 1001 "
                                     "(GOING_AWAY), reason: 'server shutting down'.")
    assert await terminal.exit_status(client) == 0
    no_traceback(screen)


@pytest.mark.peer("tmux")
async def test_a_second_ctrl_c_on_the_server_drops_clients_that_do_not_answer(
    terminal: Terminal,
) -> None:
    server, url = await start_echo_server(terminal)
    with trio.fail_after(PATIENCE):
        stream = await trio.open_tcp_stream(HOST, int(url.rsplit(":", 1)[1]))
    async with stream:
        peer = RawPeer(stream)  # a client that never answers a close
        assert isinstance(await peer.open("/mute"), AcceptConnection)
        await terminal.wait_for(server, "connected (path '/mute')")
        await terminal.press(server, "C-c")
        await terminal.wait_for(server, "Stopping: closing 1 connection (Ctrl-C again "
                                "drops it).")
        await terminal.press(server, "C-c")
        assert await terminal.exit_status(server) == EXIT_INTERRUPTED
    rows = (await terminal.screen(server)).splitlines()
    assert re.fullmatch(r"127\.0\.0\.1:\d+ dropped: it did not answer the close", rows[-3])
    assert rows[-2:] == ["Stopped.", "[exit status 130]"]


@pytest.mark.peer("tmux")
async def test_messages_arrive_above_the_line_being_typed(
    terminal: Terminal, nursery: trio.Nursery
) -> None:
    push = trio.Event()
    received: list[str | bytes] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await push.wait()
        await ws.send_message("news\x1b[2J flash\u202eevil\u200b\r\x85\u2028\n"
                              "second line of it " + "x" * 150)
        await ws.send_message(b"\x00\x01\xfe\xff")
        received.append(await ws.get_message())
        await ws.aclose(4000, "bye\tnow")

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    client = await terminal.start("client", [f"ws://{HOST}:{server.port}/"])
    await terminal.wait_for(client, "> ")
    await terminal.type(client, "half a li")
    await terminal.wait_for(client, lambda screen: last_line(screen) == "> half a li")

    push.set()
    screen = await terminal.wait_for(client, "< [binary, 4 bytes] 00 01 fe ff\n> half a li")
    rows = screen.splitlines()
    # What is not printable (an escape code, a bidi override, a zero-width space, line
    # ends other than \n) shows as escapes instead of acting; the long line is cut to
    # the width; the line being typed is still whole, below it all.
    assert rows[1] == "< news\\x1b[2J flash\\u202eevil\\u200b\\r\\x85\\u2028"
    assert rows[2].startswith("< second line of it xxx") and len(rows[2]) == 99
    assert rows[3] == "x" * (150 - (99 - len("< second line of it ")))
    assert rows[4:] == ["< [binary, 4 bytes] 00 01 fe ff", "> half a li"]

    await terminal.type(client, "ne")
    await terminal.press(client, "Enter")
    # The reason is escaped once, as Python writes the string.
    screen = await terminal.wait_for(client, "Connection closed by the server: 4000 "
                                     "(PRIVATE_RESERVED), reason: 'bye\\tnow'.")
    assert received == ["half a line"]
    # Closed by the server, but not normally: exit status 1.
    assert await terminal.exit_status(client) == 1
    no_traceback(screen)


@pytest.mark.peer("tmux")
async def test_a_half_typed_line_is_dropped_when_the_server_closes(
    terminal: Terminal, nursery: trio.Nursery
) -> None:
    close = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await close.wait()
        await ws.aclose()

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    client = await terminal.start("client", [f"ws://{HOST}:{server.port}/"],
                                  show_left_over=True)
    await terminal.wait_for(client, "> ")
    await terminal.type(client, "rm -rf half")
    await terminal.wait_for(client, lambda screen: last_line(screen) == "> rm -rf half")
    close.set()
    assert await terminal.exit_status(client) == 0
    # What was typed is gone from the terminal's input: the shell (here the wrapper,
    # reading a line) does not get it.
    await terminal.press(client, "Enter")
    screen = await terminal.wait_for(client, "[left over: ")
    assert "[left over: '\\n']" in screen, screen
    assert "Connection closed by the server: 1000 (NORMAL_CLOSURE)." in screen


@pytest.mark.peer("tmux")
async def test_output_at_a_terminal_with_piped_input(
    terminal: Terminal, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("look\x1b[2J\u202e")
        for _ in range(2):
            message = await ws.get_message()
            await trio.sleep(0.05)  # a slow server: replies come after the input ended
            await ws.send_message(message)
        await ws.aclose()  # so the test never depends on how long the client lingers

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    url = f"ws://{HOST}:{server.port}/"
    lines = tmp_path / "lines"
    lines.write_text("one\ntwo\n")
    client = await terminal.start("client", [url, "--linger", "30"], stdin=lines)
    # No prompt and no cursor codes, but nothing the server sends can drive the terminal;
    # the replies still on their way when the input ended are printed.
    screen = await terminal.ended(client, 0)
    assert screen.splitlines() == [f"Connected to {url}.", "look\\x1b[2J\\u202e", "one",
                                   "two", "Connection closed by the server: 1000 (NORMAL_CLOSURE).",
                                   "[exit status 0]"]


@pytest.mark.peer("tmux")
async def test_connection_refused_in_a_terminal(terminal: Terminal) -> None:
    with refused_port() as sock:
        url = f"ws://{HOST}:{sock.getsockname()[1]}/"
        client = await terminal.start("client", [url])
        screen = await terminal.ended(client, 1)
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

    async def rest_bytes(self) -> bytes:
        with trio.fail_after(PATIENCE):
            while chunk := await self.stream.receive_some():
                self.buffer += chunk
        return self.buffer

    async def rest(self) -> str:
        return (await self.rest_bytes()).decode()


#: How the piped tests stop the echo server, as Ctrl-C or a service manager would, and
#: the exit status it then has. Windows has no signals to send to one process; Ctrl-Break
#: can be sent to a process group of its own, which the server takes as Ctrl-C.
if sys.platform == "win32":
    STOPS = [(signal.CTRL_BREAK_EVENT, EXIT_INTERRUPTED)]
    NEW_GROUP = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
else:
    STOPS = [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, EXIT_TERMINATED)]
    NEW_GROUP = {}


async def start_tool(nursery: trio.Nursery, *args: str, stdin: bool = True,
                     env: dict[str, str] | None = None) -> trio.Process:
    run = functools.partial(trio.run_process, [*TOOL, *args], check=False,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, **NEW_GROUP)
    process: trio.Process = await nursery.start(run)
    return process


async def start_piped_server(nursery: trio.Nursery) -> tuple[trio.Process, Pipe, str]:
    """The tool's echo server, piped: the process, its output and the URL it serves."""
    server = await start_tool(nursery, "--serve", f"{HOST}:0", stdin=False)
    out = Pipe(server.stdout)
    match = LISTENING.fullmatch(await out.line())  # written at once, not when a buffer fills
    assert match is not None
    return server, out, match.group(1)


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
    client = await start_tool(nursery, url, "--linger", "0")
    assert client.stdin is not None
    out, err = Pipe(client.stdout), Pipe(client.stderr)
    assert await err.line() == f"Connected to {url}."
    # No prompt, no escape codes; each message written as soon as it arrives.
    assert await out.line() == "[binary, 2 bytes] 00 ff"
    await client.stdin.send_all(b"one\r\n")
    assert [await out.line(), await out.line()] == ["one", "(twice: one)"]
    # Bytes that are not UTF-8 arrive as U+FFFD.
    await client.stdin.send_all(b"not \xff UTF-8\ntwo, with no line end")
    await client.stdin.aclose()  # the end of input: what came before it is a line too
    assert await exit_status(client) == 0
    assert await err.rest() == "Connection closed: 1000 (NORMAL_CLOSURE).\n"
    assert await out.rest() == ""
    with trio.fail_after(PATIENCE):
        await closed.wait()
    assert received == ["one", "not \ufffd UTF-8", "two, with no line end"]


async def test_replies_after_the_end_of_input_are_printed(nursery: trio.Nursery) -> None:
    async def slow_echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        for _ in range(5):
            message = await ws.get_message()
            await trio.sleep(0.02)  # a slow server, not a wait for something
            await ws.send_message(message)
        await ws.aclose()  # so the test never depends on how long the client lingers

    server: WebSocketServer = await nursery.start(serve_websocket, slow_echo, HOST, 0, None)
    client = await start_tool(nursery, f"ws://{HOST}:{server.port}/", "--linger", "30")
    assert client.stdin is not None
    lines = [f"line {n}" for n in range(5)]
    await client.stdin.send_all("".join(line + "\n" for line in lines).encode())
    await client.stdin.aclose()  # at once: no reply has come yet
    assert await exit_status(client) == 0
    assert (await Pipe(client.stdout).rest()).splitlines() == lines


async def test_a_closed_output_ends_the_client_quietly(nursery: trio.Nursery) -> None:
    async def flood(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with trio.move_on_after(PATIENCE):
            for n in range(1_000_000):
                await ws.send_message(f"message {n}")

    server: WebSocketServer = await nursery.start(serve_websocket, flood, HOST, 0, None)
    client = await start_tool(nursery, f"ws://{HOST}:{server.port}/")
    out = Pipe(client.stdout)
    assert [await out.line(), await out.line()] == ["message 0", "message 1"]
    await out.stream.aclose()  # as `| head -2` does
    assert await exit_status(client) == 1
    assert (await Pipe(client.stderr).rest()).splitlines()[1:] == [
        "Standard output was closed; connection closed: 1000 (NORMAL_CLOSURE)."]


async def test_output_that_cannot_take_a_character_gets_an_escape(
    nursery: trio.Nursery,
) -> None:
    async def snowman(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("snow \u2603 and \U0001f30d")
        await ws.aclose()

    server: WebSocketServer = await nursery.start(serve_websocket, snowman, HOST, 0, None)
    # As on Windows, where redirected output has the locale's code page.
    client = await start_tool(nursery, f"ws://{HOST}:{server.port}/",
                              env={"PYTHONIOENCODING": "cp1252"})
    assert await exit_status(client) == 0
    assert await Pipe(client.stdout).rest_bytes() == b"snow \\u2603 and \\U0001f30d\n"
    assert "Connection closed by the server: 1000" in await Pipe(client.stderr).rest()


async def test_a_close_by_this_end_is_not_blamed_on_the_server(
    nursery: trio.Nursery,
) -> None:
    async def too_big(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("z" * (2**20 + 1))  # over the client's limit of 1 MiB
        with trio.move_on_after(PATIENCE):
            await ws.get_message()

    server: WebSocketServer = await nursery.start(serve_websocket, too_big, HOST, 0, None)
    client = await start_tool(nursery, f"ws://{HOST}:{server.port}/")
    assert await exit_status(client) == 1
    assert (await Pipe(client.stderr).rest()).splitlines()[1:] == [
        "Connection closed: 1009 (MESSAGE_TOO_BIG), reason: 'message exceeds the limit "
        "of 1048576 bytes'."]


async def test_a_close_never_answered_is_dropped_in_time(nursery: trio.Nursery) -> None:
    url = await tcp_server(nursery, never_answers_a_close)
    client = await start_tool(nursery, url, "--linger", "0", "--timeout", "1.5")
    assert client.stdin is not None
    out, err = Pipe(client.stdout), Pipe(client.stderr)
    assert await out.line() == "hello"
    await client.stdin.aclose()
    assert await exit_status(client) == 1
    assert (await err.rest()).splitlines() == [
        f"Connected to {url}.",
        "Waiting for the server to answer the close (Ctrl-C drops the connection).",
        "The server did not answer the close within 1.5 s; connection dropped."]


@pytest.mark.parametrize(("stop", "status"), STOPS)
async def test_piped_server_echoes_and_stops_cleanly(
    nursery: trio.Nursery, stop: int, status: int
) -> None:
    server, out, url = await start_piped_server(nursery)
    async with open_websocket_url(f"{url}/pipe?x=1") as ws:
        assert re.fullmatch(r"127\.0\.0\.1:\d+ connected \(path '/pipe\?x=1'\)", await out.line())
        for message in ("text", b"\x00binary\xff", ""):
            await ws.send_message(message)
            assert await ws.get_message() == message
        server.send_signal(stop)
        assert await out.line() == "Stopping: closing 1 connection (Ctrl-C again drops it)."
        with pytest.raises(ConnectionClosed) as closed:
            with trio.fail_after(PATIENCE):
                await ws.get_message()
        assert (closed.value.reason.code, closed.value.reason.reason) == \
            (1001, "server shutting down")
    assert await out.line() == f"{ws.local.address}:{ws.local.port} closed: 1001 " \
        "(GOING_AWAY), reason: 'server shutting down'"
    assert await out.rest() == "Stopped.\n"
    assert await exit_status(server) == status
    assert await Pipe(server.stderr).rest() == ""


async def test_the_server_does_not_wait_for_handshakes_under_way(
    nursery: trio.Nursery,
) -> None:
    server, out, url = await start_piped_server(nursery)
    port = int(url.rsplit(":", 1)[1])
    with trio.fail_after(PATIENCE):
        halfway = await trio.open_tcp_stream(HOST, port)
    async with halfway:
        await halfway.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and no more
        # A connection made after it: once it is in, the first is in the server's hands.
        async with open_websocket_url(url):
            assert (await out.line()).endswith("connected (path '/')")
        server.send_signal(STOPS[0][0])
        assert await exit_status(server) == EXIT_INTERRUPTED
    assert (await out.rest()).endswith("Stopping.\nStopped.\n")


async def test_a_closed_log_does_not_disturb_the_server(nursery: trio.Nursery) -> None:
    server, out, url = await start_piped_server(nursery)
    await out.stream.aclose()  # as `| head -1` does
    for n in range(2):  # the first log line fails; the next ones are not tried
        async with open_websocket_url(url) as ws:
            await ws.send_message(f"still echoed {n}")
            assert await ws.get_message() == f"still echoed {n}"
        assert ws.closed is not None and ws.closed.code == 1000
    server.send_signal(STOPS[0][0])
    assert await exit_status(server) == EXIT_INTERRUPTED
    assert await Pipe(server.stderr).rest() == ""


async def test_a_server_that_goes_away_is_a_lost_connection(nursery: trio.Nursery) -> None:
    server, _, url = await start_piped_server(nursery)
    client = await start_tool(nursery, url)
    err = Pipe(client.stderr)
    await err.line()  # Connected to ...
    server.kill()  # no closing handshake: the system closes its socket
    assert await err.rest() == "Connection lost: 1006 (ABNORMAL_CLOSURE).\n"
    assert await exit_status(client) == 1
    await exit_status(server)


@pytest.mark.parametrize(("url", "status", "why"), [
    ("http://example.test/", 2, "invalid URL: WebSocket URLs start with ws:// or wss://"),
    ("ws://", 2, "invalid URL: no host in URL"),
    ("refused", 1, "cannot connect to {url}: "),
    ("rejected", 1, "{url} refused the WebSocket handshake: HTTP 404: no such feed\n"),
])
async def test_failing_to_connect_is_one_line(
    nursery: trio.Nursery, url: str, status: int, why: str
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
        assert await exit_status(client) == status
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
                                  ["--serve", "nowhere"], ["--serve", "127.0.0.1:70000"],
                                  ["ws://x/", "--linger", "-1"], ["ws://x/", "--timeout", "0"]])
async def test_usage_errors_exit_with_2(nursery: trio.Nursery, args: list[str]) -> None:
    process = await start_tool(nursery, *args, stdin=False)
    assert await exit_status(process) == 2
    assert "usage: python -m trio_websocket" in await Pipe(process.stderr).rest()


@pytest.mark.parametrize(("fd", "name"), [(0, "input"), (1, "output")])
async def test_a_closed_standard_stream_is_a_usage_error(fd: int, name: str) -> None:
    # The tool, started with that descriptor closed (as by `<&-` or `>&-` in a shell).
    starter = f"import os, subprocess, sys; os.close({fd}); sys.exit(subprocess.call(sys.argv[1:]))"
    with trio.fail_after(PATIENCE):
        result = await trio.run_process(
            [sys.executable, "-c", starter, *TOOL, f"ws://{HOST}:9/"],
            capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 2
    assert result.stderr.decode() == f"python -m trio_websocket: standard {name} is closed\n"


async def test_the_demo_in_the_readme_runs() -> None:
    with trio.fail_after(30):
        result = await trio.run_process([sys.executable, str(DEMO)], capture_stdout=True,
                                        capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    output = result.stdout.decode()
    for line in ("library client: ping answered by a pong",
                 "  sent 'first line', printed 'first line'",
                 "  Connection closed: 1000 (NORMAL_CLOSURE).",
                 "  Stopped.",
                 "  exit status 130"):
        assert line in output.splitlines(), output
