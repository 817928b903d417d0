"""TLS for the ``wss://`` workloads: contexts from certificates the benchmark made.

bench/run.py makes a certificate authority and a certificate for 127.0.0.1
with trustme, writes them to a directory and names it in the environment
variable ``BENCH_TLS``. Without it every peer speaks plain ``ws://``.
"""

from __future__ import annotations

import functools
import os
import ssl
from pathlib import Path

SERVER_PEM = "server.pem"  # the certificate chain and its private key
CA_PEM = "ca.pem"


def enabled() -> bool:
    return bool(os.environ.get("BENCH_TLS"))


@functools.cache
def server_context() -> ssl.SSLContext | None:
    if not enabled():
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(Path(os.environ["BENCH_TLS"]) / SERVER_PEM)
    return context


@functools.cache
def client_context() -> ssl.SSLContext | None:
    if not enabled():
        return None
    return ssl.create_default_context(cafile=str(Path(os.environ["BENCH_TLS"]) / CA_PEM))


def url(port: int) -> str:
    return f"{'wss' if enabled() else 'ws'}://127.0.0.1:{port}/"


def write_certificates(directory: Path) -> None:
    """Make the authority and the server's certificate (in the benchmark's own environment)."""
    import trustme

    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(directory / CA_PEM))
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(directory / SERVER_PEM))
