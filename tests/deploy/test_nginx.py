"""Our server behind Debian's nginx, which ends TLS and proxies the WebSocket upgrade.

nginx runs deploy/nginx/websocket.conf, the file docs/deploy.md shows, with
its placeholders filled in; the test's own main configuration around it only
keeps nginx's files in a temporary directory. nginx connects to our server
from 127.0.0.2 (``proxy_bind``), so that the handler can tell the proxy's
address from the client's 127.0.0.1. Linux answers on all of 127.0.0.0/8;
macOS only on 127.0.0.1 unless an alias is added
(``sudo ifconfig lo0 alias 127.0.0.2``), and these tests are skipped where
127.0.0.2 cannot be bound.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    Endpoint,
    PerMessageDeflate,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from ..interop.harness import require
from . import ROOT, recipes

SITE_CONF = ROOT / "deploy" / "nginx" / "websocket.conf"
PROXY_ADDRESS = "127.0.0.2"
LARGE = 4 * 2**20 + 1
MAX_SIZE = 16 * 2**20
START_TIMEOUT = 10.0
PORT_ATTEMPTS = 3
# The server pings every PING_INTERVAL seconds to keep a connection open past
# a short proxy_read_timeout; each pong crosses TLS and nginx, and may take
# far longer on a loaded machine, so it has a wait of its own.
PING_INTERVAL = 0.1
PONG_TIMEOUT = 5.0


def _can_bind(address: str) -> bool:
    try:
        with socket.socket() as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


pytestmark = [
    pytest.mark.peer("nginx"),
    pytest.mark.skipif(
        not _can_bind(PROXY_ADDRESS),
        reason=f"{PROXY_ADDRESS} is not a local address here (macOS has only 127.0.0.1 "
               f"unless an alias is added): nginx connects from it to tell proxy from client"),
]


class Backend:
    """Our server, behind nginx: an echo with a few commands for the tests."""

    def __init__(self) -> None:
        self.closes: list[CloseReason] = []
        self.closed = trio.Event()  # set when a connection ends with the client's close

    async def handler(self, request: WebSocketRequest) -> None:
        if request.path == "/private":
            await request.reject(403, body=b"not for you")
            return
        offered = request.proposed_subprotocols
        ws = await request.accept(subprotocol="chat.v2" if "chat.v2" in offered else None)
        try:
            while True:
                message = await ws.get_message()
                if message == "whoami":
                    headers = {name.decode(): value.decode() for name, value in request.headers}
                    remote = request.remote
                    assert isinstance(remote, Endpoint)
                    await ws.send_message(json.dumps({
                        "client": recipes().client_address(request, proxies=(PROXY_ADDRESS,)),
                        "connected from": str(remote.address), "headers": headers}))
                elif message == "close-me":
                    await ws.aclose(4002, "server says bye")
                elif isinstance(message, str) and message.startswith(("quiet ", "pinging ")):
                    command, seconds = message.split()
                    with trio.move_on_after(float(seconds)):
                        if command == "pinging":
                            await recipes().keepalive(ws, PING_INTERVAL, PONG_TIMEOUT)
                        else:
                            await trio.sleep_forever()
                    await ws.send_message("still here")
                else:
                    await ws.send_message(message)
        except ConnectionClosed as closed:
            self.closes.append(closed.reason)
            self.closed.set()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def nginx() -> str:
    """Debian puts nginx in /usr/sbin, which is not on every user's PATH.

    A plain fixture: a skip raised inside a trio test loses its reason.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which("nginx", path=search)
    return found or require("nginx", "Debian's nginx proxies to our server")


def nginx_conf(directory: Path, port: int, backend_port: int, read_timeout: str | None) -> Path:
    """deploy/nginx/websocket.conf filled in, inside a main configuration of the test's own."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    site = SITE_CONF.read_text()
    for placeholder, value in {"@@LISTEN@@": f"127.0.0.1:{port}",
                               "@@BACKEND@@": f"127.0.0.1:{backend_port}",
                               "@@CERTIFICATE@@": str(cert),
                               "@@CERTIFICATE_KEY@@": str(key)}.items():
        assert placeholder in site
        site = site.replace(placeholder, value)
    assert "@@" not in site
    if read_timeout is not None:
        assert site.count("proxy_read_timeout 60s;") == 1
        site = site.replace("proxy_read_timeout 60s;", f"proxy_read_timeout {read_timeout};")
    (directory / "websocket.conf").write_text(site)
    # Workers run as nginx's default unprivileged user when the test runs as
    # root; they need none of these files: the master reads the
    # configuration and certificate and opens the logs before they start.
    main = f"""
        pid {directory}/nginx.pid;
        error_log {directory}/error.log info;
        worker_processes 1;
        events {{ worker_connections 64; }}
        http {{
            log_format sent '$bytes_sent';  # to the client, upgraded traffic included
            access_log {directory}/access.log sent;
            client_body_temp_path {directory}/client_body;
            proxy_temp_path {directory}/proxy;
            fastcgi_temp_path {directory}/fastcgi;
            uwsgi_temp_path {directory}/uwsgi;
            scgi_temp_path {directory}/scgi;
            proxy_bind {PROXY_ADDRESS};
            include {directory}/websocket.conf;
        }}
    """
    conf = directory / "nginx.conf"
    conf.write_text(main)
    return conf


@dataclass
class Proxy:
    url: str
    ssl_context: ssl.SSLContext
    backend: Backend
    access_log: Path

    async def bytes_sent(self) -> int:
        """Bytes nginx sent to the client on the one connection logged, once it has ended."""
        log = trio.Path(self.access_log)
        with trio.fail_after(START_TIMEOUT):
            # nginx writes the line once the connection has closed, a moment
            # after our end saw it close; a file gives no event to wait on.
            for _ in range(int(START_TIMEOUT / 0.02)):
                if logged := (await log.read_text()).split():
                    [sent] = logged
                    return int(sent)
                await trio.sleep(0.02)
        raise AssertionError("nginx logged no connection")


async def wait_until_listening(process: trio.Process, directory: Path) -> bool:
    """True once nginx listens; False if it exited first (its port was taken).

    nginx writes its pid file after it has opened its listening sockets, so a
    pid file with this process's pid means nginx, not some other program that
    took the port meanwhile, accepts connections there.
    """
    pid_file = trio.Path(directory / "nginx.pid")
    with trio.fail_after(START_TIMEOUT):
        while process.poll() is None:
            if await pid_file.exists() and (await pid_file.read_text()).strip() == str(process.pid):
                return True
            await trio.sleep(0.02)
    logged = await trio.Path(directory / "error.log").read_text(errors="replace")
    assert "Address already in use" in logged, logged
    return False


async def stop(process: trio.Process) -> None:
    """Fast shutdown (SIGTERM): the master stops its worker, then exits."""
    try:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(START_TIMEOUT):
                await process.wait()
    finally:
        try:  # whatever is left of nginx's process group, its worker included
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await process.wait()


@asynccontextmanager
async def run_proxy(nursery: trio.Nursery, binary: str, directory: Path,
                    read_timeout: str | None = None) -> AsyncIterator[Proxy]:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    issued.private_key_pem.write_to_path(str(directory / "key.pem"))
    (directory / "cert.pem").write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    backend = Backend()
    server = await nursery.start(lambda task_status: serve_websocket(
        backend.handler, "127.0.0.1", 0, None, max_message_size=MAX_SIZE,
        compression=PerMessageDeflate(), task_status=task_status))
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        conf = nginx_conf(directory, port, server.port, read_timeout)
        log = directory / "error.log"
        log.write_text("")
        (directory / "nginx.pid").unlink(missing_ok=True)
        process = await trio.lowlevel.open_process(
            [binary, "-p", str(directory), "-c", str(conf), "-e", str(log),
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            if await wait_until_listening(process, directory):
                context = ssl.create_default_context()
                ca.configure_trust(context)
                yield Proxy(f"wss://127.0.0.1:{port}", context, backend,
                            directory / "access.log")
                return
        finally:
            await stop(process)
    pytest.fail(f"nginx found no free port in {PORT_ATTEMPTS} attempts")


@pytest.fixture
async def proxy(nursery: trio.Nursery, nginx: str, tmp_path: Path) -> AsyncIterator[Proxy]:
    async with run_proxy(nursery, nginx, tmp_path) as running:
        yield running


async def test_messages_subprotocol_and_compression_pass_through(proxy: Proxy) -> None:
    large = os.urandom(LARGE)
    with trio.fail_after(10):
        async with open_websocket_url(
                f"{proxy.url}/chat", proxy.ssl_context, subprotocols=["chat.v1", "chat.v2"],
                max_message_size=MAX_SIZE, compression=PerMessageDeflate()) as ws:
            assert ws.subprotocol == "chat.v2"
            for message in ("héllo through nginx", bytes(range(256)), large, "x" * LARGE):
                await ws.send_message(message)
                assert await ws.get_message() == message
            await ws.ping(b"through nginx")
            await ws.aclose(4001, "client says bye")
        await proxy.backend.closed.wait()
        sent = await proxy.bytes_sent()
    assert proxy.backend.closes == [CloseReason(4001, "client says bye")]
    # Compression was agreed end to end: the 4 MiB of "x" came back as a few
    # KiB, while the random bytes went as they are.
    assert LARGE < sent < LARGE + 2**17


async def test_server_close_code_and_reason_pass_through(proxy: Proxy) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(f"{proxy.url}/", proxy.ssl_context) as ws:
            await ws.send_message("close-me")
            with pytest.raises(ConnectionClosed) as caught:
                await ws.get_message()
    assert caught.value.reason == CloseReason(4002, "server says bye")


async def test_handler_sees_the_client_address_not_the_proxy(proxy: Proxy) -> None:
    # Every header the configuration says it sets, as a client might forge it.
    spoofed = [("X-Forwarded-For", "203.0.113.9"), ("X-Real-IP", "203.0.113.9"),
               ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "evil.example"),
               ("Forwarded", "for=203.0.113.9;proto=http;host=evil.example")]
    with trio.fail_after(10):
        async with open_websocket_url(f"{proxy.url}/", proxy.ssl_context,
                                      extra_headers=spoofed) as ws:
            await ws.send_message("whoami")
            seen = json.loads(str(await ws.get_message()))
    port = proxy.url.rsplit(":", 1)[1]
    assert seen["connected from"] == PROXY_ADDRESS
    assert seen["client"] == "127.0.0.1"
    assert ipaddress.ip_address(seen["client"]).is_loopback
    headers = seen["headers"]
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    # The Host the client asked for, port included. (request.headers leaves
    # out Host itself, which nginx sends from the same $http_host.)
    assert headers["x-forwarded-host"] == f"127.0.0.1:{port}"
    assert "forwarded" not in headers
    assert "evil.example" not in json.dumps(headers) and "203.0.113.9" not in json.dumps(headers)


async def test_rejection_passes_through(proxy: Proxy) -> None:
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as caught:
        async with open_websocket_url(f"{proxy.url}/private", proxy.ssl_context):
            pass
    assert caught.value.status_code == 403
    assert caught.value.body == b"not for you"


async def test_traffic_either_way_keeps_a_connection_open_past_proxy_read_timeout(
        nursery: trio.Nursery, nginx: str, tmp_path: Path) -> None:
    # proxy_read_timeout shortened to half a second. The server then says
    # nothing for three times that: with nothing else crossing nginx the
    # connection is cut; it stays open if the server pings every tenth of a
    # second, and also if only the client sends (nginx's wait starts again
    # on traffic either way).
    async def quiet_for(command: str, client_talks: bool) -> str | int:
        async with open_websocket_url(f"{short.url}/", short.ssl_context) as ws:
            await ws.send_message(command)
            async with trio.open_nursery() as talking:
                if client_talks:
                    talking.start_soon(talk, ws)
                try:
                    return str(await ws.get_message())
                except ConnectionClosed as closed:
                    return closed.reason.code
                finally:
                    talking.cancel_scope.cancel()
        raise AssertionError("unreachable")

    async def talk(ws: WebSocketConnection) -> None:
        while True:
            await trio.sleep(PING_INTERVAL)
            await ws.send_message("just talking")

    async with run_proxy(nursery, nginx, tmp_path, read_timeout="500ms") as short:
        results: dict[str, str | int] = {}

        async def run(name: str, command: str, client_talks: bool = False) -> None:
            results[name] = await quiet_for(command, client_talks)

        with trio.fail_after(10):
            async with trio.open_nursery() as clients:
                clients.start_soon(run, "nobody", "quiet 1.5")
                clients.start_soon(run, "server pings", "pinging 1.5")
                clients.start_soon(run, "client sends", "quiet 1.5", True)
    assert results == {"nobody": 1006, "server pings": "still here",
                       "client sends": "still here"}
