"""Test certificates and servers on TLS, for the HTTP/2 tests (browsers speak HTTP/2 only
over TLS).

``certificates(directory)`` makes a throwaway CA with ``trustme`` and a certificate for
127.0.0.1 signed by it, written as PEM files the servers read. ``serve_tls(name, app,
certs)`` is ``tests/servers.py``'s ``serve_on()`` over TLS for the servers of ``TLS_SERVERS``:
hypercorn and granian offer HTTP/2 and HTTP/1.1 by ALPN, uvicorn only HTTP/1.1.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate

from tests.servers import Running, serve_command

HOST = "127.0.0.1"
"""The address the servers listen on and the certificate names."""


@dataclass(frozen=True)
class Certificates:
    """A test CA and one server certificate for ``HOST``, as files."""

    ca: trustme.CA
    cert_file: Path
    """The server certificate, then the CA's (PEM)."""
    key_file: Path
    """The server's private key (PEM, PKCS#8: granian reads no other format)."""
    spki_sha256: str
    """Base64 SHA-256 of the server certificate's public key, as Chromium's
    ``--ignore-certificate-errors-spki-list`` takes it."""

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the test CA and nothing else, verifying names."""
        return ssl.create_default_context(cadata=self.ca.cert_pem.bytes().decode())


def certificates(directory: Path) -> Certificates:
    """A new CA and a certificate for ``HOST`` signed by it, written into ``directory``."""
    ca = trustme.CA()
    leaf = ca.issue_cert(HOST)
    cert_file = directory / "server.pem"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    key_file = directory / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_key = load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_key()
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return Certificates(ca, cert_file, key_file, digest)


TlsCommand = Callable[[str, int, Certificates], list[str]]


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


TLS_SERVERS: dict[str, TlsCommand] = {
    # ALPN offers h2 and http/1.1; the app runs in one worker process, as by default
    "hypercorn": lambda app, port, certs: _python(
        "hypercorn",
        app,
        "--bind",
        f"{HOST}:{port}",
        "--certfile",
        str(certs.cert_file),
        "--keyfile",
        str(certs.key_file),
    ),
    # --http auto: ALPN offers h2 and http/1.1
    "granian": lambda app, port, certs: _python(
        "granian",
        "--interface",
        "asgi",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--ssl-certificate",
        str(certs.cert_file),
        "--ssl-keyfile",
        str(certs.key_file),
        app,
    ),
    # HTTP/1.1 only
    "uvicorn": lambda app, port, certs: _python(
        "uvicorn",
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--ssl-certfile",
        str(certs.cert_file),
        "--ssl-keyfile",
        str(certs.key_file),
    ),
}


@dataclass
class RunningTls(Running):
    """A server of ``TLS_SERVERS`` serving over TLS."""

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"


@contextlib.contextmanager
def serve_tls(
    name: str, app: str, certs: Certificates, *, timeout: float = 20.0
) -> Iterator[RunningTls]:
    """Serve ``module:attribute`` over TLS with the server ``name`` (a key of
    ``TLS_SERVERS``) on a free port until the block ends."""
    with serve_command(
        f"{name}-tls",
        lambda port: TLS_SERVERS[name](app, port, certs),
        timeout=timeout,
        running=RunningTls,
    ) as server:
        assert isinstance(server, RunningTls)
        yield server
