"""A real redis-server in a child process, on a free loopback port, for the scale-out tests.

``make test`` installs Debian's ``redis-server``; a machine without it fails these tests
(never skips them). The server keeps nothing on disk unless a test asks for an append-only
file (to restart it with its data, as after a failover to a replica that kept up).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from asgistream.backends.redis import RedisBackend
from tests.server import free_port


class RedisServer:
    """One redis-server process; :meth:`stop` and :meth:`start` keep its port (and, with
    ``persist=True``, its data)."""

    def __init__(self, *, persist: bool = False, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make redis` (make test does)")
        self.binary = binary
        self.port = port or free_port()
        self.persist = persist
        self.directory = Path(tempfile.mkdtemp(prefix="asgistream-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else []
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.directory),
                "--loglevel",
                "warning",
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self.command("PING") == b"+PONG":
                return
            time.sleep(0.02)
        raise TimeoutError(f"redis-server not answering on {self.port} after {timeout}s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server by its pid (``SIGKILL`` for a crash) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def command(self, *args: str) -> bytes | None:
        """Send one command and return the first line of the reply (``None``: no answer)."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(request.encode())
                return sock.recv(65536).split(b"\r\n", 1)[0]
        except OSError:
            return None

    def flush(self) -> None:
        """Lose every key, as a flush, an eviction or a failover to an empty replica would."""
        assert self.command("FLUSHALL") == b"+OK"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def redis_server(*, persist: bool = False) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped (by its pid) and removed when the block ends."""
    server = RedisServer(persist=persist)
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextlib.asynccontextmanager
async def processes(
    url: str, n: int = 2, *, socket_timeout: float = 5.0, prefix: str | None = None
) -> AsyncIterator[list[RedisBackend]]:
    """``n`` open backends on ``url`` under one new key prefix (or ``prefix``): the views of
    ``n`` processes of one deployment, in one test process."""
    prefix = prefix or f"test-{uuid.uuid4().hex[:12]}"
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                RedisBackend(url, prefix=prefix, socket_timeout=socket_timeout)
            )
            for _ in range(n)
        ]
