"""Run a real uvicorn server in a child process for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A uvicorn child process serving one app on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """The server's resident set size in KiB, read from /proc."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS line")

    def stop(self, timeout: float = 10.0) -> float:
        """Send SIGTERM, wait for exit and return how long it took in seconds; after
        ``timeout`` seconds, :meth:`force_kill` it and raise ``TimeoutError``."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.force_kill()
                self.process.wait()
                raise TimeoutError(f"{self.url} still running {timeout}s after SIGTERM") from None
        return time.monotonic() - started

    def force_kill(self) -> None:
        """SIGKILL, at once."""
        self.process.kill()


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"server not listening on {port} after {timeout}s")


@contextlib.contextmanager
def serve(
    app: str,
    *,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    port: int | None = None,
    timeout: float = 20.0,
) -> Iterator[Server]:
    """Serve ``module:attribute`` with uvicorn on a free port until the block ends."""
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        *args,
    ]
    child_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    process = subprocess.Popen(cmd, cwd=ROOT, env=child_env)
    server = Server(process, port)
    try:
        _wait_listening(port, process, timeout)
        yield server
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.stop()
