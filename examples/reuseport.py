"""Several server processes on one port: SO_REUSEPORT, one Trio server in each.

    python examples/reuseport.py --workers 4 --host 127.0.0.1 --port 8000

A Trio server runs on one core. To use more, this script (the supervisor)
starts ``--workers`` copies of itself. Each copy binds its own listening
socket to the same host and port with SO_REUSEPORT, and the kernel hands
every new connection to one of them. Each worker is an ordinary
``WebSocketServer``; nothing is shared between them, so a message meant for
clients of other workers has to travel through something outside the
processes (docs/deploy.md describes the pattern).

Every worker echoes what it receives, except two texts the tests use:
``whoami``, which it answers with ``worker <id> pid <pid>``, and
``print <text>``, which it writes to its standard output (the supervisor
passes on whatever its workers print) and answers with ``printed``.

On SIGTERM or SIGINT (Ctrl+C) every worker drains: it closes its listening
socket so new connections go to the workers still listening, sends close
code 1001 (going away) to its clients, and gives them ``--grace`` seconds to
answer before it cancels what is left. The supervisor exits once every
worker has, with status 0 only if every worker exited with 0.

A worker drains in the same way when its supervisor is gone, even killed
with SIGKILL, which no process can catch: each worker's standard input is a
pipe from the supervisor, which never writes to it, and the end of that
pipe (the system closes it when the supervisor dies) tells the worker. This
works on every system, unlike Linux's PR_SET_PDEATHSIG. A worker whose
supervisor is already gone when it is ready (its output pipe is broken)
drains at once.

With ``--port 0`` the supervisor picks a free port and holds it, with a bound
socket that never listens, so all workers join the same one. It prints
``LISTENING <host> <port>`` once every worker accepts connections.

Linux spreads connections across SO_REUSEPORT sockets (FreeBSD does with
SO_REUSEPORT_LB, used when Python has it). Windows has no SO_REUSEPORT:
there, run one server per port behind a load balancer (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import trio

from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

# FreeBSD's SO_REUSEPORT lets sockets share a port but gives every connection
# to one of them; SO_REUSEPORT_LB is the balancing kind. Linux has only the
# balancing SO_REUSEPORT. Windows has neither: getattr gives None there.
REUSE_PORT: int | None = getattr(socket, "SO_REUSEPORT_LB", None) or getattr(
    socket, "SO_REUSEPORT", None)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STARTUP_TIMEOUT = 30.0


async def reuseport_socket(host: str, port: int, *, listen: bool = True) -> trio.socket.SocketType:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT, listening unless told not to.

    Every process that binds the same address this way gets its own accept
    queue, and the kernel picks one queue for each new connection.
    """
    if REUSE_PORT is None:
        raise SystemExit("this platform has no SO_REUSEPORT: see docs/deploy.md")
    # Host names resolve here too; a numeric address is taken as it is.
    family, kind, proto, _, address = (await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, REUSE_PORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind(address)
        if listen:
            sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


async def run_worker(worker_id: int, host: str, port: int, grace: float) -> None:
    """Serve on the shared port until a stop signal or the supervisor's end, then drain."""
    me = f"worker {worker_id} pid {os.getpid()}"
    connections: set[WebSocketConnection] = set()
    draining = False

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        if draining:  # its handshake finished after the drain began
            await ws.aclose(1001, "server shutting down")
            return
        connections.add(ws)
        try:
            while True:
                message = await ws.get_message()
                if message == "whoami":
                    await ws.send_message(me)
                elif isinstance(message, str) and message.startswith("print "):
                    _say(message[len("print "):])
                    await ws.send_message("printed")
                else:
                    await ws.send_message(message)
        except ConnectionClosed:
            pass
        finally:
            connections.discard(ws)

    listener = trio.SocketListener(await reuseport_socket(host, port))
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        # Handlers live in their own nursery, so that the accept loop can stop
        # (and its listening socket close) while they carry on.
        async with trio.open_nursery() as handlers:
            server = WebSocketServer(handler, [listener], handler_nursery=handlers)
            async with trio.open_nursery() as accepting:
                await accepting.start(server.run)
                # A supervisor that died before this line has nobody to serve
                # for: drain at once.
                if _say(f"READY {worker_id} {os.getpid()}"):
                    await _until_told_to_stop(signals)
                accepting.cancel_scope.cancel()  # closes the listening socket
            draining = True
            handlers.cancel_scope.deadline = trio.current_time() + grace
            for ws in list(connections):
                handlers.start_soon(ws.aclose, 1001, "server shutting down")


def _say(line: str) -> bool:
    """Print ``line`` for the supervisor to pass on; False if the supervisor is gone.

    Our output is a pipe to the supervisor, and once it has died writing there
    fails with BrokenPipeError. A worker then goes on (draining, as it soon
    will) instead of crashing: its output goes to os.devnull, so that what it
    prints from then on, and the flush at exit, write nothing and fail no more.
    """
    try:
        print(line, flush=True)
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        return False
    return True


async def _until_told_to_stop(signals: AsyncIterator[int]) -> None:
    """Return on the first stop signal, or once the supervisor is gone."""
    async with trio.open_nursery() as waiting:

        async def on_signal() -> None:
            async for _ in signals:
                break
            waiting.cancel_scope.cancel()

        async def on_supervisor_gone() -> None:
            await _supervisor_gone()
            waiting.cancel_scope.cancel()

        waiting.start_soon(on_signal)
        waiting.start_soon(on_supervisor_gone)


async def _supervisor_gone() -> None:
    """Return once standard input ends: the supervisor closed its end of the pipe, or died.

    A thread waits in a plain blocking read, which works on pipes everywhere;
    when the worker stops for another reason the thread is left in its read,
    and ends with the process. (os.read, not sys.stdin: a thread left inside
    a buffered file's read would hold its lock as the interpreter shuts down.)
    """
    stdin = sys.stdin.fileno()
    while await trio.to_thread.run_sync(os.read, stdin, 4096, abandon_on_cancel=True):
        pass  # the supervisor writes nothing; anything else that comes is ignored


async def supervise(workers: int, host: str, port: int, grace: float) -> int:
    """Start the workers, wait for a stop signal, stop them; 0 if all exited cleanly."""
    # The placeholder holds the port (and picks one for port 0) without
    # listening, so it never takes a connection itself.
    placeholder = await reuseport_socket(host, port, listen=False)
    port = placeholder.getsockname()[1]
    processes: list[trio.Process] = []
    with placeholder, trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        try:
            for worker_id in range(workers):
                # stdin: a pipe the supervisor holds and never writes to; its
                # end tells the worker that the supervisor is gone.
                processes.append(await trio.lowlevel.open_process(
                    [sys.executable, __file__, "--worker", str(worker_id), "--host", host,
                     "--port", str(port), "--grace", str(grace)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE))
            stopping = False
            output_lock = trio.Lock()
            async with trio.open_nursery() as nursery:

                def stop_all() -> None:
                    # Once only: a second SIGTERM could reach a worker after its
                    # drain, when the signal's default action (exit -15) is back.
                    nonlocal stopping
                    if stopping:
                        return
                    stopping = True
                    for process in processes:
                        if process.returncode is None:
                            process.send_signal(signal.SIGTERM)
                    # Workers drain for at most `grace` seconds; the rest are killed below.
                    nursery.cancel_scope.deadline = min(
                        nursery.cancel_scope.deadline, trio.current_time() + grace + 5)

                waiting = trio.CancelScope()

                async def stop_on_signal() -> None:
                    with waiting:
                        async for _ in signals:
                            stop_all()

                async def stop_when_exits(process: trio.Process) -> None:
                    # One worker ending on its own takes the others down with it:
                    # a supervisor that restarts workers would do that here instead.
                    await process.wait()
                    stop_all()

                # Each worker's output is read to its end, READY first, so that
                # a worker that prints a lot never waits for a full pipe.
                ready = 0
                with trio.move_on_after(STARTUP_TIMEOUT):
                    for process in processes:
                        if not await nursery.start(_pass_output_on, process, output_lock):
                            break
                        ready += 1
                if ready < workers:
                    print(f"worker {ready} failed to start", file=sys.stderr)
                    nursery.cancel_scope.cancel()
                    return 1  # the workers are killed below
                print(f"LISTENING {host} {port}", flush=True)
                nursery.start_soon(stop_on_signal)
                for process in processes:
                    nursery.start_soon(stop_when_exits, process)
                for process in processes:
                    await process.wait()
                waiting.cancel()  # the output tasks end as their pipes do
            return 0 if all(process.returncode == 0 for process in processes) else 1
        finally:
            for process in processes:  # left running only if something above failed
                if process.returncode is None:
                    process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
                    for pipe in (process.stdin, process.stdout):
                        if pipe is not None:
                            await pipe.aclose()


async def _pass_output_on(process: trio.Process, lock: trio.Lock, *,
                          task_status: trio.TaskStatus[bool] = trio.TASK_STATUS_IGNORED,
                          ) -> None:
    """Wait for the worker's READY line, then copy its output to ours until it ends.

    Reports True once the worker is ready; False, and returns, if its first
    line is something else or its output ends first. Whole lines go out,
    one worker's at a time, so that lines from several workers never mix.
    The writes run in a thread: whoever reads our output may be slow, and
    the supervisor must go on handling signals meanwhile.
    """
    assert process.stdout is not None
    pending = b""
    ready = False
    async with process.stdout:
        while chunk := await process.stdout.receive_some():
            pending += chunk
            if not ready:
                if b"\n" not in pending:
                    continue
                line, pending = pending.split(b"\n", 1)
                if not line.startswith(b"READY"):
                    task_status.started(False)
                    return
                ready = True
                task_status.started(True)
            lines, newline, pending = pending.rpartition(b"\n")
            if newline:
                async with lock:
                    await trio.to_thread.run_sync(_write_out, lines + newline)
    if not ready:
        task_status.started(False)
    elif pending:  # a last line without its newline
        async with lock:
            await trio.to_thread.run_sync(_write_out, pending)


def _write_out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds a draining worker waits for its clients to close")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        # A stop signal matters only while run_worker listens for it: Ctrl+C
        # reaches every worker and the supervisor's SIGTERM follows, and the
        # second must not kill a worker that has drained and is on its way out.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        trio.run(run_worker, args.worker, args.host, args.port, args.grace)
        return 0
    if not math.isfinite(args.grace) or args.grace < 0 or args.workers < 1:
        parser.error("--workers must be at least 1 and --grace a finite number >= 0")
    return trio.run(supervise, args.workers, args.host, args.port, args.grace)


if __name__ == "__main__":
    sys.exit(main())
