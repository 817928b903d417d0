"""The command-line tool behind ``python -m trio_websocket``: an interactive client and an
echo server, built on the public API alone.

The client sends each line read from standard input as a text message and shows each
message from the server as it arrives. At a terminal, incoming messages are written above
the line being typed, so they never break into it; anywhere else the output is plain, one
message a line, so the tool can sit in a pipeline.

Exit status: 0 after the end of input (Ctrl-D) or a normal close by the peer (1000 or
1001), 1 when connecting fails or the connection ends otherwise, 2 for a usage error, and
130 (128 + SIGINT, as shells report it) after Ctrl-C, in both roles.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import signal
import sys
import unicodedata
from collections.abc import AsyncIterator, Iterator
from typing import TextIO

import trio

from trio_websocket_client import open_websocket_url
from trio_websocket_core import (
    CloseReason,
    ConnectionClosed,
    ConnectionFailed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    Endpoint,
    HandshakeError,
    WebSocketConnection,
)
from trio_websocket_server import WebSocketRequest, WebSocketServer, serve_websocket

PROG = "python -m trio_websocket"
EXIT_OK = 0
EXIT_FAILED = 1
#: What a shell reports for a process ended by SIGINT (128 + 2); the tool exits with it
#: after Ctrl-C, so that a script can tell an interruption from a finished exchange.
EXIT_INTERRUPTED = 130
#: Close codes that mean the peer ended the conversation on purpose.
NORMAL_CLOSES = frozenset({1000, 1001})
#: Seconds connecting (TCP, TLS and the opening handshake) may take. A person is
#: waiting, so less than the library's 60; Ctrl-C gives up sooner.
CONNECT_TIMEOUT = 10.0
#: Seconds the closing handshake may take before the connection is dropped instead.
CLOSE_TIMEOUT = 10.0
#: Bytes of a binary message shown in hex at a terminal; a pipe gets them all.
HEX_SHOWN = 64
#: The reason the echo server gives, with code 1001, when Ctrl-C stops it.
SHUTDOWN_REASON = "server shutting down"


# -- output -------------------------------------------------------------------------------


def _escape_controls(text: str) -> str:
    """Show control characters as escapes, so a peer cannot drive the terminal."""
    return "".join(
        ch if unicodedata.category(ch) != "Cc" else repr(ch)[1:-1] for ch in text
    )


def _screen_rows(line: str, width: int) -> Iterator[str]:
    """Cut one line of text into pieces that each fit ``width`` terminal columns."""
    row: list[str] = []
    used = 0
    for ch in line:
        cells = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if used + cells > width and row:
            yield "".join(row)
            row, used = [], 0
        row.append(ch)
        used += cells
    yield "".join(row)


def describe_binary(data: bytes, limit: float = math.inf) -> str:
    """A readable line for a binary message: its length, then its bytes in hex."""
    shown = data if len(data) <= limit else data[: int(limit)]
    more = " ..." if len(shown) < len(data) else ""
    noun = "byte" if len(data) == 1 else "bytes"
    return f"[binary, {len(data)} {noun}] {shown.hex(' ')}{more}".rstrip()


def describe_close(reason: CloseReason | None) -> str:
    """``1000 (NORMAL_CLOSURE)``, with the peer's reason text when it gave one."""
    if reason is None:
        return "unknown"
    text = f"{reason.code} ({reason.name})"
    if reason.reason:
        text += f", reason: {_escape_controls(reason.reason)!r}"
    return text


class Console:
    """Where the client writes: to a person at a terminal, or plainly to a pipe.

    Interactive (standard input and output both a terminal): everything goes to standard
    output, a ``> `` prompt starts the input line and each message from the server is
    written on a row inserted above that line, so the line being typed stays where it
    is, whole (the terminal holds it; the tool cannot see it before Enter).

    Otherwise messages go to standard output as received, each followed by a newline,
    and the lines about the connection to standard error, so that the messages can be
    piped on alone. Whenever standard output is a terminal, control characters from the
    server are shown as escapes rather than obeyed.
    """

    def __init__(self, out: TextIO, err: TextIO, *, interactive: bool, terminal: bool) -> None:
        self.out = out
        self.err = err
        self.interactive = interactive
        self.terminal = terminal or interactive

    @classmethod
    def for_this_process(cls) -> Console:
        """The console that suits how the tool was started."""
        terminal = sys.stdout.isatty()
        interactive = terminal and sys.stdin.isatty() and _terminal_codes_work()
        return cls(sys.stdout, sys.stderr, interactive=interactive, terminal=terminal)

    def info(self, line: str) -> None:
        """A line about the connection, written before the prompt is up."""
        stream = self.out if self.interactive else self.err
        stream.write(line + "\n")
        stream.flush()

    def prompt(self) -> None:
        """Mark the start of the input line (interactive only)."""
        if self.interactive:
            self.out.write("> ")
            self.out.flush()

    def message(self, message: str | bytes) -> None:
        """Show one message from the server."""
        if isinstance(message, str):
            text = message
        else:
            text = describe_binary(message, HEX_SHOWN if self.terminal else math.inf)
        if not self.terminal:
            self.out.write(text + "\n")
            self.out.flush()
            return
        lines = [_escape_controls(line) for line in text.splitlines() or [""]]
        if self.interactive:
            self._above_input([f"< {line}" for line in lines])
        else:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()

    def finish(self, line: str) -> None:
        """The last line: at a terminal it replaces the input line and its prompt."""
        if self.interactive:
            self.out.write("\r\x1b[K")  # to the start of the input line, and clear it
            _discard_typed_input()
        self.info(line)

    def _above_input(self, lines: list[str]) -> None:
        # Each screen row is written the same way: save the cursor (which sits in the
        # input line); go down a row, which scrolls the screen when the input line is
        # the last one, and back up, so a row now exists below the input line; insert a
        # blank row there, which pushes the input line down by one; write the text in
        # it; then go back to the saved position and down one row, to where the input
        # line is now. The text is cut to the width first, so that it never wraps into
        # the input line.
        try:  # the terminal's own width, whatever COLUMNS says
            width = max(os.get_terminal_size(self.out.fileno()).columns - 1, 1)
        except (OSError, ValueError):
            width = 79
        pieces = []
        for line in lines:
            for row in _screen_rows(line, width):
                pieces.append(f"\x1b7\n\x1b[A\x1b[L{row}\x1b8\x1b[B")
        self.out.write("".join(pieces))
        self.out.flush()


def _terminal_codes_work() -> bool:
    """Whether the terminal understands the cursor codes ``Console`` relies on.

    POSIX terminals do. The Windows console does once virtual terminal processing is
    on, which this turns on; where that fails, the output stays plain.
    """
    if sys.platform != "win32":
        return True
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.GetStdHandle(-11)  # STD_OUTPUT_HANDLE
    mode = wintypes.DWORD()
    if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
        return False
    enable_virtual_terminal_processing = 0x0004
    return bool(kernel32.SetConsoleMode(handle, mode.value | enable_virtual_terminal_processing))


def _discard_typed_input() -> None:
    """Drop what was typed but not sent, so it does not end up as a shell command."""
    if sys.platform == "win32":
        return
    import termios

    try:
        termios.tcflush(sys.stdin.fileno(), termios.TCIFLUSH)
    except (OSError, termios.error, ValueError):
        pass  # not a terminal after all, or already closed: nothing typed to drop


# -- the client ---------------------------------------------------------------------------


async def _read_line() -> str:
    # A thread, because that is the one way to wait for standard input that works on
    # every platform and for every kind of input (a Windows console is no file
    # descriptor Trio can wait on). Abandoned when cancelled: the thread stays blocked
    # until the process exits, which is soon, since only quitting cancels this.
    return await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


async def _receive(ws: WebSocketConnection, console: Console, done: trio.CancelScope) -> None:
    try:
        while True:
            console.message(await ws.get_message())
    except ConnectionClosed:
        done.cancel()


async def _send_lines(
    ws: WebSocketConnection, console: Console, done: trio.CancelScope
) -> None:
    console.prompt()
    while True:
        line = await _read_line()
        if not line:  # end of input: Ctrl-D, or the end of a pipe
            break
        console.prompt()
        try:
            await ws.send_message(line.removesuffix("\n").removesuffix("\r"))
        except ConnectionClosed:
            break  # the receiving task reports it
    done.cancel()


def _connect_error(url: str, exc: Exception) -> str:
    """One line saying why connecting failed."""
    if isinstance(exc, ConnectionFailed):
        return f"cannot connect to {url}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRejected):
        line = f"{url} refused the WebSocket handshake: HTTP {exc.status_code}"
        if exc.body:
            body = exc.body[:200].decode("utf-8", "replace").strip()
            line += f": {_escape_controls(body)}"
        return line
    if isinstance(exc, ConnectionTimeout):
        return f"timed out connecting to {url} (no answer within {CONNECT_TIMEOUT:g} s)"
    if isinstance(exc, HandshakeError):
        return f"WebSocket handshake with {url} failed: {exc}"
    return f"invalid URL: {exc}"


async def run_client(url: str, console: Console, err: TextIO) -> int:
    """Talk to ``url`` until the input ends, the user presses Ctrl-C or the peer closes."""
    session = trio.CancelScope()  # everything: a second Ctrl-C cancels it
    talk = trio.CancelScope()  # sending and receiving: the first Ctrl-C ends it
    interrupted = connected = False
    by_peer: CloseReason | None = None  # how the server closed, if it did
    final: CloseReason | None = None  # how the connection ended

    async def watch_interrupts(interrupts: AsyncIterator[int]) -> None:
        nonlocal interrupted
        async for _ in interrupts:
            if interrupted or not connected:
                session.cancel()
            interrupted = True
            talk.cancel()

    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with trio.open_nursery() as watcher:
            watcher.start_soon(watch_interrupts, interrupts)
            try:
                with session:
                    async with open_websocket_url(url, connect_timeout=CONNECT_TIMEOUT,
                                                  disconnect_timeout=CLOSE_TIMEOUT) as ws:
                        connected = True
                        console.info(f"Connected to {url}.")
                        with talk:
                            async with trio.open_nursery() as nursery:
                                nursery.start_soon(_receive, ws, console, nursery.cancel_scope)
                                nursery.start_soon(_send_lines, ws, console,
                                                   nursery.cancel_scope)
                        by_peer = ws.closed  # set by now only if the server closed, or TCP broke
                    final = ws.closed
            except (HandshakeError, ValueError) as exc:
                if isinstance(exc, DisconnectionTimeout):
                    console.finish("The server did not answer the close; connection dropped.")
                else:
                    err.write(f"{PROG}: {_connect_error(url, exc)}\n")
                    err.flush()
                return EXIT_FAILED
            finally:
                watcher.cancel_scope.cancel()
    if session.cancelled_caught:
        console.finish("Interrupted; connection dropped." if connected else "Interrupted.")
        return EXIT_INTERRUPTED
    if by_peer is not None and by_peer.code == 1006:
        console.finish("Connection lost: 1006 (ABNORMAL_CLOSURE).")
        return EXIT_INTERRUPTED if interrupted else EXIT_FAILED
    if by_peer is not None:
        console.finish(f"Connection closed by the server: {describe_close(by_peer)}.")
    else:
        console.finish(f"Connection closed: {describe_close(final)}.")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if by_peer is None or by_peer.code in NORMAL_CLOSES else EXIT_FAILED


# -- the server ---------------------------------------------------------------------------


def _address(endpoint: Endpoint | str) -> str:
    if isinstance(endpoint, str):
        return endpoint
    if endpoint.address.version == 6:
        return f"[{endpoint.address}]:{endpoint.port}"
    return f"{endpoint.address}:{endpoint.port}"


class EchoServer:
    """Sends every message back; on Ctrl-C stops listening and closes each connection with
    1001, so that clients learn the server went away rather than lose the connection."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.connections: set[WebSocketConnection] = set()
        self._idle = trio.Event()
        self._idle.set()

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    async def handler(self, request: WebSocketRequest) -> None:
        """Echo one connection, reporting when it opens and closes."""
        ws = await request.accept()
        who = _address(ws.remote)
        self._say(f"{who} connected (path {request.path!r})")
        self.connections.add(ws)
        self._idle = trio.Event()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed as closed:
            self._say(f"{who} closed: {describe_close(closed.reason)}")
        finally:
            self.connections.discard(ws)
            if not self.connections:
                self._idle.set()

    async def close_all(self) -> None:
        """Close every open connection with 1001 and wait for their handlers to finish."""
        async with trio.open_nursery() as nursery:
            for ws in list(self.connections):
                nursery.start_soon(functools.partial(ws.aclose, 1001, SHUTDOWN_REASON))
        await self._idle.wait()

    async def run(self, host: str | None, port: int) -> int:
        """Serve until Ctrl-C, then shut down; a second Ctrl-C drops what is left."""
        with trio.open_signal_receiver(signal.SIGINT) as interrupts:
            async with trio.open_nursery() as handlers:
                listening = trio.CancelScope()
                try:
                    server = await handlers.start(self._listen, listening, host, port, handlers)
                except OSError as exc:  # the address is taken, or not ours
                    where = f"[{host}]:{port}" if host and ":" in host else f"{host or ''}:{port}"
                    self.err.write(f"{PROG}: cannot listen on {where}: {exc.strerror or exc}\n")
                    self.err.flush()
                    return EXIT_FAILED
                for endpoint in server.listeners:
                    where = endpoint.url if isinstance(endpoint, Endpoint) else endpoint
                    self._say(f"Listening on {where} (Ctrl-C to stop)")
                await interrupts.__anext__()
                listening.cancel()
                if self.out.isatty() and sys.platform != "win32":
                    self.out.write("\r\x1b[K")  # over the ^C the terminal echoed
                count = len(self.connections)
                self._say(f"Stopping: closing {count} connection{'' if count == 1 else 's'}.")
                with trio.move_on_after(CLOSE_TIMEOUT):
                    async with trio.open_nursery() as closing:
                        closing.start_soon(self._second_interrupt, interrupts,
                                           closing.cancel_scope)
                        await self.close_all()
                        closing.cancel_scope.cancel()
                handlers.cancel_scope.cancel()  # handshakes under way, closes not answered
        self._say("Stopped.")
        return EXIT_INTERRUPTED

    async def _listen(
        self, scope: trio.CancelScope, host: str | None, port: int, handlers: trio.Nursery,
        task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with scope:
            await serve_websocket(self.handler, host, port, None, handler_nursery=handlers,
                                  task_status=task_status)

    @staticmethod
    async def _second_interrupt(interrupts: AsyncIterator[int], scope: trio.CancelScope) -> None:
        await interrupts.__anext__()
        scope.cancel()


# -- the command line ---------------------------------------------------------------------


def _host_and_port(text: str) -> tuple[str | None, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; an empty host means every interface)."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), int(port_text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Talk to a WebSocket server interactively, or run an echo server.",
        epilog="As a client, each line you type is sent as a text message and each message "
        "received is printed. Ctrl-D closes the connection (code 1000), Ctrl-C too (a "
        "second Ctrl-C drops it). Exit status: 0 after Ctrl-D or a normal close by the "
        "server, 1 on failure, 130 after Ctrl-C.",
    )
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("url", nargs="?", help="a ws:// or wss:// URL to connect to")
    role.add_argument("--serve", metavar="HOST:PORT", type=_host_and_port,
                      help="run an echo server on HOST:PORT (port 0: any free port; the "
                      "URL it listens on is printed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the tool with ``argv`` (the process's arguments by default); the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.serve is None:
            return trio.run(run_client, args.url, Console.for_this_process(), sys.stderr)
        host, port = args.serve
        return trio.run(EchoServer(sys.stdout, sys.stderr).run, host, port)
    except KeyboardInterrupt:  # Ctrl-C before Trio listened for it, or after
        return EXIT_INTERRUPTED

