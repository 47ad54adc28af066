"""Run an app on each ASGI server in a child process, for the end-to-end tests of every server.

``serve_on(name, "module:attribute")`` is ``tests/server.py``'s ``serve()`` for any server of
``SERVERS``: 127.0.0.1, a free port, the server's output kept in a file (``Running.log()``),
and at the end SIGTERM to its pid, then SIGKILL to its process group after a timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.server import ROOT, Server, _wait_listening, free_port

Command = Callable[[str, int], list[str]]


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


SERVERS: dict[str, Command] = {
    "uvicorn": lambda app, port: _python(
        "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"
    ),
    # hypercorn's default: the app runs in one worker process beside the main one
    "hypercorn": lambda app, port: _python("hypercorn", app, "--bind", f"127.0.0.1:{port}"),
    # -w 0: the app runs in the main process
    "hypercorn-w0": lambda app, port: _python(
        "hypercorn", app, "--bind", f"127.0.0.1:{port}", "--workers", "0"
    ),
    "granian": lambda app, port: _python(
        "granian",
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        app,
    ),
    # daphne runs no lifespan
    "daphne": lambda app, port: _python("daphne", "-b", "127.0.0.1", "-p", str(port), app),
    # the app under trio (issue 11's first item; not in test_servers_e2e.py's matrix yet)
    "hypercorn-trio": lambda app, port: _python(
        "hypercorn", app, "--bind", f"127.0.0.1:{port}", "--worker-class", "trio"
    ),
}


@dataclass
class Running(Server):
    """One server child process serving one app on 127.0.0.1, its output kept in a file."""

    name: str = ""
    log_path: Path = Path()

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> float:
        """SIGTERM to the server's pid, SIGKILL to its group after ``timeout`` seconds; return
        how long it took to exit (``TimeoutError`` once killed, if it had to be)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)  # its workers too
                self.process.wait()
                raise TimeoutError(f"{self.name} still running {timeout}s after SIGTERM") from None
        return time.monotonic() - started


@contextlib.contextmanager
def serve_on(name: str, app: str, *, timeout: float = 20.0) -> Iterator[Running]:
    """Serve ``module:attribute`` with the server ``name`` (a key of ``SERVERS``) on a free
    port until the block ends."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with tempfile.NamedTemporaryFile(
        prefix=f"asgistream-{name}-", suffix=".log", delete=False
    ) as log:
        process = subprocess.Popen(
            SERVERS[name](app, port),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one group with its workers, to kill them all if need be
        )
    server = Running(process, port, name=name, log_path=Path(log.name))
    try:
        _wait_listening(port, process, timeout)
        yield server
    finally:
        with contextlib.suppress(TimeoutError):
            server.stop()
        server.log_path.unlink(missing_ok=True)
