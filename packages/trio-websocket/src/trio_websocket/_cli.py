"""The command-line tool behind ``python -m trio_websocket``: an interactive client and an
echo server, built on the public API alone.

The client sends each line read from standard input as a text message and shows each
message from the server as it arrives. At a terminal, incoming messages are written above
the line being typed, so they never break into it; anywhere else the output is plain, one
message a line, so the tool can sit in a pipeline.

Exit status: 0 after the end of input (Ctrl-D) or a normal close by the peer (1000 or
1001), 1 when connecting fails or the connection ends otherwise, 2 for a usage error
(including a URL that is not one, and a closed standard input or output), and 130
(128 + SIGINT, as shells report it) after Ctrl-C, in both roles; 143 (128 + SIGTERM) when
the server is stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import codecs
import functools
import math
import os
import signal
import sys
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TextIO

import trio

from trio_websocket_client import open_websocket_url
from trio_websocket_core import (
    CloseReason,
    ConnectionClosed,
    ConnectionFailed,
    ConnectionRejected,
    ConnectionTimeout,
    Endpoint,
    HandshakeError,
    WebSocketConnection,
)
from trio_websocket_server import WebSocketRequest, WebSocketServer, serve_websocket

PROG = "python -m trio_websocket"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: What a shell reports for a process ended by SIGINT (128 + 2); the tool exits with it
#: after Ctrl-C, so that a script can tell an interruption from a finished exchange.
EXIT_INTERRUPTED = 130
#: 128 + SIGTERM, for the server stopped by a service manager.
EXIT_TERMINATED = 143
#: Close codes that mean the peer ended the conversation on purpose.
NORMAL_CLOSES = frozenset({1000, 1001})
#: Close codes this end's library also sends on its own (a protocol error, text that is
#: not UTF-8, a message over the size limit): the public API cannot tell who sent them,
#: so the tool does not blame the server for them.
CODES_SENT_LOCALLY_TOO = frozenset({1002, 1007, 1009})
#: Seconds connecting (TCP, TLS and the opening handshake) and then the closing handshake
#: may each take, unless ``--timeout`` says otherwise. A person is waiting, so less than
#: the library's 60; Ctrl-C gives up sooner.
DEFAULT_TIMEOUT = 10.0
#: Seconds of quiet after the end of piped input before the client closes, unless
#: ``--linger`` says otherwise: replies still on their way are printed, not lost.
DEFAULT_PIPED_LINGER = 1.0
#: Seconds a closing handshake may go unanswered before the client says it is waiting.
CLOSE_HINT_AFTER = 1.0
#: Bytes of a binary message shown in hex at a terminal; a pipe gets them all.
HEX_SHOWN = 64
#: The reason the echo server gives, with code 1001, when Ctrl-C stops it.
SHUTDOWN_REASON = "server shutting down"


# -- output -------------------------------------------------------------------------------


def _escape_controls(text: str) -> str:
    """Show what is not printable (control and format characters, line and paragraph
    separators) as escapes, so a peer can neither drive the terminal nor disguise text."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


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
        # repr() quotes the text and escapes what is not printable, once.
        text += f", reason: {reason.reason!r}"
    return text


class Output:
    """One of the process's output streams, written a whole piece at a time.

    The first write that fails (the reader of a pipe went away, the terminal is gone)
    silences it for good: the stream is pointed at the null device, so that neither a
    later write nor Python's flush at exit fails again, and nothing else is disturbed.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.working = True

    def write(self, text: str) -> bool:
        """Write and flush ``text``; False if the stream is (now) gone."""
        if not self.working:
            return False
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:
            self.working = False
            _point_at_null_device(self.stream)
        return self.working

    def isatty(self) -> bool:
        """Whether the stream is a terminal."""
        try:
            return self.stream.isatty()
        except (OSError, ValueError):
            return False


def _point_at_null_device(stream: TextIO) -> None:
    # The way Python's documentation recommends for a closed pipe (in "signal"): what
    # is still buffered then goes nowhere instead of failing again when Python exits.
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass  # no file descriptor behind it: nothing will flush to one either


class OutputGone(Exception):
    """Standard output can no longer be written (its reader went away)."""


class Console:
    """Where the client writes: to a person at a terminal, or plainly to a pipe.

    Interactive (standard input and output both a terminal): everything goes to standard
    output, a ``> `` prompt starts the input line and each message from the server is
    written on a row inserted above that line, so the line being typed stays where it
    is, whole (the terminal holds it; the tool cannot see it before Enter).

    Otherwise messages go to standard output as received, each followed by a newline,
    and the lines about the connection to standard error, so that the messages can be
    piped on alone. Whenever standard output is a terminal, characters from the server
    that are not printable are shown as escapes rather than obeyed.
    """

    def __init__(self, out: TextIO, err: TextIO, *, interactive: bool, terminal: bool) -> None:
        self.out = Output(out)
        self.err = Output(err)
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
        (self.out if self.interactive else self.err).write(line + "\n")

    def note(self, line: str) -> None:
        """A line about the connection once the prompt is up: it replaces the input line."""
        if self.interactive:
            self.out.write("\r\x1b[K")  # to the start of the input line, and clear it
        self.info(line)

    def prompt(self) -> None:
        """Mark the start of the input line (interactive only)."""
        if self.interactive:
            self.out.write("> ")

    def end_of_partial_line(self) -> None:
        """Keep a line ended by Ctrl-D rather than Enter on screen, as Enter would."""
        if self.interactive:
            self.out.write("\n")

    def message(self, message: str | bytes) -> None:
        """Show one message from the server.

        :raises OutputGone: once standard output cannot be written.
        """
        if isinstance(message, str):
            text = message
        else:
            text = describe_binary(message, HEX_SHOWN if self.terminal else math.inf)
        if not self.terminal:
            written = self.out.write(text + "\n")
        else:
            lines = [_escape_controls(line) for line in text.split("\n")]
            if self.interactive:
                written = self._above_input([f"< {line}" for line in lines])
            else:
                written = self.out.write("".join(line + "\n" for line in lines))
        if not written:
            raise OutputGone

    def finish(self, line: str) -> None:
        """The last line: at a terminal it replaces the input line and its prompt."""
        if self.interactive:
            _discard_typed_input()
        self.note(line)

    def _above_input(self, lines: list[str]) -> bool:
        # Each screen row is written the same way: save the cursor (which sits in the
        # input line); go down a row, which scrolls the screen when the input line is
        # the last one, and back up, so a row now exists below the input line; insert a
        # blank row there, which pushes the input line down by one; write the text in
        # it; then go back to the saved position and down one row, to where the input
        # line is now. The text is cut to the width first, so that it never wraps into
        # the input line.
        try:  # the terminal's own width, whatever COLUMNS says
            width = max(os.get_terminal_size(self.out.stream.fileno()).columns - 1, 1)
        except (OSError, ValueError):
            width = 79
        pieces = []
        for line in lines:
            for row in _screen_rows(line, width):
                pieces.append(f"\x1b7\n\x1b[A\x1b[L{row}\x1b8\x1b[B")
        return self.out.write("".join(pieces))


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


# -- input --------------------------------------------------------------------------------


def _line_reader(stdin: TextIO) -> Callable[[], str]:
    """A blocking function that returns the next piece of input: a line with its line
    ending, a last line without one, or ``""`` at the end of input.

    At a POSIX terminal it reads the terminal directly, because there a read ends either
    at Enter or at Ctrl-D: a piece without a line ending is a line ended by Ctrl-D, which
    ends the input at once, instead of on a second and third press as ``readline`` has
    it. Elsewhere it reads lines. Bytes that are not valid in the input's encoding become
    U+FFFD (the replacement character) either way.
    """
    if sys.platform == "win32" or not stdin.isatty():
        return stdin.readline
    fd = stdin.fileno()
    decoder = codecs.getincrementaldecoder(stdin.encoding or "utf-8")(errors="replace")

    def read_piece() -> str:
        while True:  # a read returns at least one byte, or none at the end of input
            data = os.read(fd, 65536)
            text = decoder.decode(data, final=not data)
            if text or not data:
                return text

    return read_piece


async def _read_piece(read: Callable[[], str]) -> str:
    # A thread, because that is the one way to wait for standard input that works on
    # every platform and for every kind of input (a Windows console is no file
    # descriptor Trio can wait on). Abandoned when cancelled: the thread stays blocked
    # until the process exits, which is soon, since only quitting cancels this.
    return await trio.to_thread.run_sync(read, abandon_on_cancel=True)


# -- the client ---------------------------------------------------------------------------


class _Talk:
    """What the sending and receiving tasks share while the client talks."""

    def __init__(self, console: Console, linger: float) -> None:
        self.console = console
        self.linger = linger
        #: Waiting after the end of input; each message moves its deadline on.
        self.lingering = trio.CancelScope()
        self.input_ended = False
        self.output_gone = False


async def _receive(ws: WebSocketConnection, talk: _Talk, done: trio.CancelScope) -> None:
    try:
        while True:
            message = await ws.get_message()
            if talk.input_ended:
                talk.lingering.deadline = trio.current_time() + talk.linger
            talk.console.message(message)
    except ConnectionClosed:
        pass
    except OutputGone:
        talk.output_gone = True
    done.cancel()


async def _send_lines(
    ws: WebSocketConnection, talk: _Talk, read: Callable[[], str], done: trio.CancelScope
) -> None:
    console = talk.console
    console.prompt()
    while True:
        piece = await _read_piece(read)
        if not piece:  # end of input: Ctrl-D, or the end of a pipe
            break
        ended_by_eof = not piece.endswith("\n")
        if ended_by_eof:
            console.end_of_partial_line()
        else:
            console.prompt()
        try:
            await ws.send_message(piece.removesuffix("\n").removesuffix("\r"))
        except ConnectionClosed:
            break  # the receiving task reports it
        if ended_by_eof:
            break  # a last line without a line ending is the end of input too
    # Replies may still be on their way: wait until the server has been quiet for a
    # while. This ends when the server stops sending (or closes, which cancels it).
    talk.input_ended = True
    with talk.lingering:
        talk.lingering.deadline = trio.current_time() + talk.linger
        await trio.sleep_forever()
    done.cancel()


def _connect_error(url: str, exc: Exception) -> str:
    """One line saying why connecting failed."""
    if isinstance(exc, ConnectionFailed):
        return f"cannot connect to {url}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRejected):
        line = f"{url} refused the WebSocket handshake: HTTP {exc.status_code}"
        if exc.body:
            body = exc.body[:200].decode("utf-8", "replace").strip()
            line += f": {body}"
        return line
    if isinstance(exc, ConnectionTimeout):
        return f"timed out connecting to {url}"
    return f"WebSocket handshake with {url} failed: {exc}"


async def run_client(
    url: str, console: Console, read: Callable[[], str], *, linger: float, allowed: float
) -> int:
    """Talk to ``url`` until the input ends, the user presses Ctrl-C or the peer closes.

    ``linger``: seconds of quiet to wait for after the end of input; ``allowed``: seconds
    that connecting, and then the closing handshake, may each take. Ctrl-C while talking
    closes the connection with 1000; Ctrl-C at any other time (connecting, or waiting for
    the server to answer the close) drops it at once.
    """
    session = trio.CancelScope()  # everything
    talk_scope = trio.CancelScope()  # sending and receiving
    talk = _Talk(console, linger)
    phase = "connecting"  # then "talking", then "closing"
    interrupted = False
    ended_by: CloseReason | None = None  # how the connection ended, if not by this end
    unanswered = False  # the server did not answer the close in time

    async def watch_interrupts(interrupts: AsyncIterator[int]) -> None:
        nonlocal interrupted
        async for _ in interrupts:
            if phase == "talking" and not interrupted:
                console.note("Closing the connection (Ctrl-C again drops it).")
                talk_scope.cancel()
            else:
                session.cancel()
            interrupted = True

    async def hint_if_slow() -> None:
        await trio.sleep(CLOSE_HINT_AFTER)
        if not interrupted:  # after Ctrl-C the hint is out already
            console.note("Waiting for the server to answer the close (Ctrl-C drops the "
                         "connection).")

    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with trio.open_nursery() as watcher:
            watcher.start_soon(watch_interrupts, interrupts)
            try:
                with session:
                    async with open_websocket_url(url, connect_timeout=allowed,
                                                  disconnect_timeout=allowed) as ws:
                        phase = "talking"
                        console.info(f"Connected to {url}.")
                        with talk_scope:
                            async with trio.open_nursery() as nursery:
                                done = nursery.cancel_scope
                                nursery.start_soon(_receive, ws, talk, done)
                                nursery.start_soon(_send_lines, ws, talk, read, done)
                        ended_by = ws.closed  # set by now only if it closed without us
                        phase = "closing"
                        async with trio.open_nursery() as closing:
                            closing.start_soon(hint_if_slow)
                            with trio.move_on_after(allowed) as waiting:
                                await ws.aclose()
                            unanswered = waiting.cancelled_caught
                            closing.cancel_scope.cancel()
                    final = ws.closed
            except ValueError as exc:  # from the URL, before anything was sent
                console.err.write(f"{PROG}: invalid URL: {exc}\n")
                return EXIT_USAGE
            except HandshakeError as exc:
                console.err.write(f"{PROG}: {_escape_controls(_connect_error(url, exc))}\n")
                return EXIT_FAILED
            finally:
                watcher.cancel_scope.cancel()
    failed = EXIT_INTERRUPTED if interrupted else EXIT_FAILED
    if session.cancelled_caught:
        connected = phase != "connecting"
        console.finish("Interrupted; connection dropped." if connected else "Interrupted.")
        return EXIT_INTERRUPTED
    if unanswered:
        console.finish(f"The server did not answer the close within {allowed:g} s; "
                       "connection dropped.")
        return failed
    if talk.output_gone:
        console.finish(f"Standard output was closed; connection closed: "
                       f"{describe_close(final)}.")
        return failed
    if ended_by is None:
        console.finish(f"Connection closed: {describe_close(final)}.")
        return EXIT_INTERRUPTED if interrupted else EXIT_OK
    if ended_by.code == 1006:
        console.finish("Connection lost: 1006 (ABNORMAL_CLOSURE).")
        return failed
    if ended_by.code in CODES_SENT_LOCALLY_TOO:
        console.finish(f"Connection closed: {describe_close(ended_by)}.")
        return failed
    console.finish(f"Connection closed by the server: {describe_close(ended_by)}.")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if ended_by.code in NORMAL_CLOSES else EXIT_FAILED


# -- the server ---------------------------------------------------------------------------


def _address(endpoint: Endpoint | str) -> str:
    if isinstance(endpoint, str):
        return endpoint
    if endpoint.address.version == 6:
        return f"[{endpoint.address}]:{endpoint.port}"
    return f"{endpoint.address}:{endpoint.port}"


def _stop_signals() -> tuple[int, ...]:
    """The signals that stop the server: Ctrl-C, and what a service manager sends."""
    if sys.platform == "win32":
        return (signal.SIGINT, signal.SIGBREAK)  # Ctrl-C, Ctrl-Break
    return (signal.SIGINT, signal.SIGTERM)


class EchoServer:
    """Sends every message back; on Ctrl-C (or SIGTERM, or Ctrl-Break on Windows) stops
    listening and closes each connection with 1001, so that clients learn the server
    went away rather than lose the connection.

    Its log goes to standard output, a line per event. If that stops working (the pipe
    it went to was closed), the server goes on without a log.
    """

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = Output(out)
        self.err = Output(err)
        self.connections: dict[WebSocketConnection, str] = {}  # open ones, and who
        self.closing: set[WebSocketConnection] = set()  # the ones the server closes
        self.stopping = False
        self._idle = trio.Event()
        self._idle.set()

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")

    async def handler(self, request: WebSocketRequest) -> None:
        """Echo one connection, reporting when it opens and closes."""
        ws = await request.accept()
        who = _address(ws.remote)
        self._say(f"{who} connected (path {request.path!r})")
        self.connections[ws] = who
        self._idle = trio.Event()
        try:
            if self.stopping:  # accepted while the server was stopping
                await self._close(ws)
                return
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed as closed:
            if ws not in self.closing:  # the peer closed, or the connection broke
                self._say(f"{who} closed: {describe_close(closed.reason)}")
        finally:
            del self.connections[ws]
            if not self.connections:
                self._idle.set()

    async def _close(self, ws: WebSocketConnection) -> None:
        """Close one connection for the shutdown, and log how that went."""
        who = self.connections[ws]
        self.closing.add(ws)
        try:
            await ws.aclose(1001, SHUTDOWN_REASON)
        except BaseException:  # cancelled: the grace period is over, or a second Ctrl-C
            self._say(f"{who} dropped: it did not answer the close")
            raise
        self._say(f"{who} closed: {describe_close(ws.closed)}")

    async def close_all(self) -> None:
        """Close every open connection with 1001 and wait for their handlers to finish."""
        async with trio.open_nursery() as nursery:
            for ws in list(self.connections):
                nursery.start_soon(self._close, ws)
        await self._idle.wait()

    async def run(self, host: str | None, port: int) -> int:
        """Serve until stopped, then shut down; a second stop signal drops what is left."""
        with trio.open_signal_receiver(*_stop_signals()) as stops:
            async with trio.open_nursery() as handlers:
                listening = trio.CancelScope()
                try:
                    server = await handlers.start(self._listen, listening, host, port, handlers)
                except OSError as exc:  # the address is taken, or not ours
                    where = f"[{host}]:{port}" if host and ":" in host else f"{host or ''}:{port}"
                    self.err.write(f"{PROG}: cannot listen on {where}: {exc.strerror or exc}\n")
                    return EXIT_FAILED
                for endpoint in server.listeners:
                    where = endpoint.url if isinstance(endpoint, Endpoint) else endpoint
                    self._say(f"Listening on {where} (Ctrl-C to stop)")
                signum = await stops.__anext__()
                self.stopping = True
                listening.cancel()
                self._over_echoed_interrupt(signum)
                count = len(self.connections)
                if count:
                    self._say(f"Stopping: closing {count} connection{'' if count == 1 else 's'}"
                              f" (Ctrl-C again drops {'it' if count == 1 else 'them'}).")
                else:
                    self._say("Stopping.")
                with trio.move_on_after(DEFAULT_TIMEOUT):
                    async with trio.open_nursery() as closing:
                        closing.start_soon(self._second_stop, stops, closing.cancel_scope)
                        await self.close_all()
                        closing.cancel_scope.cancel()
                handlers.cancel_scope.cancel()  # handshakes under way, closes not answered
        self._say("Stopped.")
        if sys.platform != "win32" and signum == signal.SIGTERM:
            return EXIT_TERMINATED
        return EXIT_INTERRUPTED

    async def _listen(
        self, scope: trio.CancelScope, host: str | None, port: int, handlers: trio.Nursery,
        task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with scope:
            await serve_websocket(self.handler, host, port, None, handler_nursery=handlers,
                                  task_status=task_status)

    async def _second_stop(self, stops: AsyncIterator[int], scope: trio.CancelScope) -> None:
        self._over_echoed_interrupt(await stops.__anext__())
        scope.cancel()

    def _over_echoed_interrupt(self, signum: int) -> None:
        """After Ctrl-C at a terminal, the next line goes over the ``^C`` it echoed."""
        if signum == signal.SIGINT and sys.platform != "win32" and self.out.isatty():
            self.out.write("\r\x1b[K")


# -- the command line ---------------------------------------------------------------------


def _host_and_port(text: str) -> tuple[str | None, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; an empty host means every interface)."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), int(port_text)


def _seconds(text: str) -> float:
    """A number of seconds, zero or more."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}")
    return seconds


def _some_seconds(text: str) -> float:
    """A number of seconds, more than zero: a time limit that leaves time to do something."""
    seconds = _seconds(text)
    if seconds == 0:
        raise argparse.ArgumentTypeError("expected more than 0 seconds")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Talk to a WebSocket server interactively, or run an echo server.",
        epilog="As a client, each line you type is sent as a text message and each message "
        "received is printed. Ctrl-D closes the connection (code 1000), Ctrl-C too (a "
        "second Ctrl-C drops it). Exit status: 0 after Ctrl-D or a normal close by the "
        "server, 1 on failure, 2 for a usage error, 130 after Ctrl-C.",
    )
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("url", nargs="?", help="a ws:// or wss:// URL to connect to")
    role.add_argument("--serve", metavar="HOST:PORT", type=_host_and_port,
                      help="run an echo server on HOST:PORT (port 0: any free port; the "
                      "URL it listens on is printed)")
    parser.add_argument("--linger", metavar="SECONDS", type=_seconds,
                        help="after the end of input, keep printing messages until none "
                        f"has come for SECONDS, then close (default: {DEFAULT_PIPED_LINGER:g}"
                        " when the input is not a terminal, 0 at a terminal)")
    parser.add_argument("--timeout", metavar="SECONDS", type=_some_seconds,
                        default=DEFAULT_TIMEOUT,
                        help="how long connecting, and then the closing handshake, may each "
                        f"take (default: {DEFAULT_TIMEOUT:g})")
    return parser


def _prepare_streams() -> list[str]:
    """Make the standard streams safe to use; the names of those that are closed.

    Output that the stream's encoding cannot represent is written as escapes rather than
    failing, and input bytes that are not valid in its encoding become U+FFFD. A closed
    stream (started with ``<&-`` or ``>&-``) is replaced by the null device.
    """
    closed = []
    for name in ("stdin", "stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            closed.append(name)
            setattr(sys, name, open(os.devnull, "r" if name == "stdin" else "w"))
            continue
        try:
            stream.reconfigure(errors="replace" if name == "stdin" else "backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass  # not a text file Python opened: used as it is
    return closed


def main(argv: list[str] | None = None) -> int:
    """Run the tool with ``argv`` (the process's arguments by default); the exit status."""
    closed = _prepare_streams()
    args = _parser().parse_args(argv)
    needed = ["stdout"] if args.serve is not None else ["stdin", "stdout"]
    missing = [name for name in needed if name in closed]
    if missing:
        names = " and ".join(f"standard {name[3:]}put" for name in missing)
        sys.stderr.write(f"{PROG}: {names} {'is' if len(missing) == 1 else 'are'} closed\n")
        return EXIT_USAGE
    try:
        if args.serve is None:
            linger = args.linger
            if linger is None:
                linger = 0.0 if sys.stdin.isatty() else DEFAULT_PIPED_LINGER
            console = Console.for_this_process()
            client = functools.partial(run_client, args.url, console, _line_reader(sys.stdin),
                                       linger=linger, allowed=args.timeout)
            return trio.run(client)
        host, port = args.serve
        return trio.run(EchoServer(sys.stdout, sys.stderr).run, host, port)
    except KeyboardInterrupt:  # Ctrl-C before Trio listened for it, or after
        return EXIT_INTERRUPTED

