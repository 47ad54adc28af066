"""One contender's uvicorn server: pinned to a core, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .apps.common import FINALLY_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent

UVICORN_OPTIONS = (
    "--workers",
    "1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
)
"""The same for every contender."""

SERVER_CPU = 0
"""The core the server is pinned to; the load generators get :data:`CLIENT_CPU`."""

CLIENT_CPU = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` under ``taskset -c cpu`` (unchanged if ``cpu`` is None or taskset is absent)."""
    if cpu is None or shutil.which("taskset") is None or cpu >= (os.cpu_count() or 1):
        return command
    return ["taskset", "-c", str(cpu), *command]


def server_command(app: str, port: int) -> list[str]:
    """The uvicorn command line for ``app`` (``module:attribute``)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *UVICORN_OPTIONS,
    ]


@dataclass
class Server:
    """A running uvicorn process; ``finally_dir`` is where its producers record ``finally``."""

    process: subprocess.Popen[bytes]
    port: int
    finally_dir: Path
    log: Path
    command: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """Resident set size in KiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS line")

    def cpu_ticks(self) -> int:
        """User plus system CPU time so far, in clock ticks."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def cpu_and_wait(self) -> tuple[float, float]:
        """Seconds on a processor and seconds runnable but waiting for one, so far, all
        threads, to the nanosecond (each thread's ``schedstat``; ``cpu_ticks`` counts in 10 ms
        steps). The wait is what other processes on the server's core cost it."""
        running = waiting = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                fields = (task / "schedstat").read_text().split()
                running += int(fields[0])
                waiting += int(fields[1])
        return running / 1e9, waiting / 1e9

    def wait_idle(self, timeout: float = 5.0, window: float = 0.2) -> bool:
        """Wait until the server burns (almost) no CPU for ``window`` s; False on timeout.

        Producers that ignore disconnects may still run after a measurement; the next one
        must not share the core with them.
        """
        deadline = time.monotonic() + timeout
        before = self.cpu_ticks()
        while time.monotonic() < deadline:
            time.sleep(window)
            after = self.cpu_ticks()
            if after - before <= 1:
                return True
            before = after
        return False

    def logged_errors(self) -> int:
        """How many errors the server logged so far (tracebacks count once)."""
        with open(self.log, errors="replace") as log:
            return sum(line.startswith("ERROR") for line in log)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout`` s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"server not listening on {port} after {timeout} s")


@contextlib.contextmanager
def serve(
    app: str,
    *,
    cpu: int | None = SERVER_CPU,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """Serve ``app`` with the benchmark's uvicorn options until the block ends."""
    with serve_all([app], cpu=cpu, timeout=timeout, env=env) as servers:
        yield servers[0]


@contextlib.contextmanager
def serve_all(
    apps: list[str],
    *,
    cpu: int | None = SERVER_CPU,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[list[Server]]:
    """Serve each of ``apps`` in a server of its own; they start side by side. ``env``: more
    environment variables for the servers."""
    with contextlib.ExitStack() as stack:
        servers = []
        for app in apps:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-server-"))
            port = free_port()
            command = pinned(server_command(app, port), cpu)
            variables = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                FINALLY_DIR_ENV: folder,
                **(env or {}),
            }
            log = Path(folder) / "server.log"
            with open(log, "wb") as output:
                process = subprocess.Popen(
                    command, cwd=ROOT, env=variables, stdout=output, stderr=subprocess.STDOUT
                )
            server = Server(process, port, Path(folder), log, command)
            stack.callback(server.stop)
            servers.append(server)
        for app, server in zip(apps, servers, strict=True):
            try:
                _wait_listening(server.port, server.process, timeout)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{app}: {exc}\n{server.log.read_text()[-2000:]}") from exc
        yield servers
