"""Each distribution installs on its own and carries only its own code.

Builds the four wheels, then installs them into fresh virtual
environments the way a user would, and runs code there.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import trio

from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket, serve_websocket
from trio_websocket_core import _mask

from .conftest import HOST

ROOT = Path(__file__).resolve().parent.parent
IMPORT_NAMES = {
    "trio-websocket-core": "trio_websocket_core",
    "trio-websocket-client": "trio_websocket_client",
    "trio-websocket-server": "trio_websocket_server",
    "trio-websocket": "trio_websocket",
}


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse")
    for dist in IMPORT_NAMES:
        subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
                       cwd=ROOT / "packages" / dist, check=True, capture_output=True)
    # Third-party dependencies too, so installs can use --no-index and can
    # only ever pick our wheels (PyPI has an older trio-websocket).
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                    "-d", str(out), "trio>=0.25", "wsproto>=1.2,<2"],
                   check=True, capture_output=True)
    return out


def make_venv(wheelhouse: Path, where: Path, requirement: str) -> Path:
    """A new virtual environment with ``requirement`` installed from the wheelhouse."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = where / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-index", "--find-links", str(wheelhouse), requirement],
                   check=True, capture_output=True)
    return python


def clean_env() -> dict[str, str]:
    # Nothing from the test environment may leak into the new one's imports.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def client_python(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(wheelhouse, tmp_path_factory.mktemp("client") / "venv",
                     "trio-websocket-client")


@pytest.fixture(scope="module")
def server_python(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(wheelhouse, tmp_path_factory.mktemp("server") / "venv",
                     "trio-websocket-server")


def test_each_wheel_holds_only_its_own_package(wheelhouse: Path) -> None:
    wheels = sorted(wheelhouse.glob("trio_websocket*.whl"))
    assert len(wheels) == 4
    for wheel in wheels:
        dist = wheel.name.split("-")[0].replace("_", "-")
        with zipfile.ZipFile(wheel) as archive:
            tops = {name.split("/")[0] for name in archive.namelist()
                    if not name.split("/")[0].endswith(".dist-info")}
            assert tops == {IMPORT_NAMES[dist]}, wheel.name
            assert f"{IMPORT_NAMES[dist]}/py.typed" in archive.namelist()


CLIENT_SCRIPT = """
import importlib.util, os, sys, trio
from trio_websocket_client import open_websocket_url
from trio_websocket_core import _mask
assert importlib.util.find_spec("trio_websocket_server") is None
assert importlib.util.find_spec("trio_websocket") is None
# The wheel carries the C masking accelerator exactly when the test
# environment's own build of the core got one (the same compiler, or none).
assert _mask.ACCELERATED == (sys.argv[2] == "1"), _mask.ACCELERATED
async def main():
    async with open_websocket_url(sys.argv[1]) as ws:
        long = os.urandom(300000)
        await ws.send_message(long)
        assert await ws.get_message() == long
        await ws.send_message("from a client-only install")
        print(await ws.get_message())
trio.run(main)
"""


async def test_client_only_install_connects(nursery: trio.Nursery, client_python: Path) -> None:
    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        for _ in range(2):
            await ws.send_message(await ws.get_message())

    server = await nursery.start(serve_websocket, echo, HOST, 0, None)
    result = await trio.run_process(
        [str(client_python), "-c", CLIENT_SCRIPT, f"ws://{HOST}:{server.port}/",
         str(int(_mask.ACCELERATED))],
        capture_stdout=True, env=clean_env(), cwd="/")
    assert result.stdout.decode().strip() == "from a client-only install"


SERVER_SCRIPT = """
import importlib.util, trio
from trio_websocket_server import serve_websocket
assert importlib.util.find_spec("trio_websocket_client") is None
assert importlib.util.find_spec("trio_websocket") is None
async def main():
    done = trio.Event()
    async def handler(request):
        ws = await request.accept()
        await ws.send_message("from a server-only install")
        await ws.get_message()
        done.set()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(server.port, flush=True)
        await done.wait()
        nursery.cancel_scope.cancel()
trio.run(main)
"""


async def test_server_only_install_serves(server_python: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            run = functools.partial(trio.run_process, [str(server_python), "-c", SERVER_SCRIPT],
                                    stdout=subprocess.PIPE, env=clean_env(), cwd="/")
            process: trio.Process = await nursery.start(run)
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "server exited without printing its port"
                line += chunk
            async with open_websocket(HOST, int(line), "/", use_ssl=False) as ws:
                assert await ws.get_message() == "from a server-only install"
                await ws.send_message("thanks")
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
    assert process.returncode == 0


def test_meta_package_runs_the_reference_examples(
        wheelhouse: Path, tmp_path: Path) -> None:
    python = make_venv(wheelhouse, tmp_path / "venv", "trio-websocket")
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                            check=True, capture_output=True, text=True).stdout
    for dist in IMPORT_NAMES:
        assert f"{dist}==" in listed
    result = subprocess.run([str(python), str(ROOT / "tests" / "reference_examples.py")],
                            capture_output=True, text=True, env=clean_env(), cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reference examples: ok"

