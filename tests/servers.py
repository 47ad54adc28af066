"""Run an app on each ASGI server in a child process, for the end-to-end tests of every server.

``serve_on(name, "module:attribute")`` is ``tests/server.py``'s ``serve()`` for any server of
``SERVERS``: 127.0.0.1, a free port, the server's output kept in a file (``Running.log()``),
and at the end SIGTERM to its pid, then SIGKILL to its process group after a timeout. The
server leads a process group of its own (with its workers), so a test can also signal the
whole group, as systemd does, or one worker (``Running.kill``, ``Running.workers``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
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
    # a supervisor process and two worker processes that share the socket
    "uvicorn-w2": lambda app, port: [*SERVERS["uvicorn"](app, port), "--workers", "2"],
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
    # the app under trio, in a worker process
    "hypercorn-trio": lambda app, port: _python(
        "hypercorn", app, "--bind", f"127.0.0.1:{port}", "--worker-class", "trio"
    ),
    # under trio in the main process, where nothing handles SIGTERM (its default action)
    "hypercorn-trio-w0": lambda app, port: _python(
        "hypercorn",
        app,
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        "trio",
        "--workers",
        "0",
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

    def kill(self, signum: signal.Signals, *, group: bool = False) -> None:
        """Send ``signum`` to the server's main process, or to its whole process group."""
        if group:
            os.killpg(self.pid, signum)
        else:
            self.process.send_signal(signum)

    def workers(self) -> list[int]:
        """The pids of the main process's children (its workers, and any helper process such
        as multiprocessing's resource tracker), read from ``/proc``."""
        pids: list[int] = []
        for children in Path(f"/proc/{self.pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids.extend(int(pid) for pid in children.read_text().split())
        return pids

    def group(self) -> list[int]:
        """The pids of the processes of the server's group that still run (not zombies: an
        orphaned worker that exited waits for init to reap it), read from ``/proc``."""
        pids: list[int] = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
                state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
                if int(pgrp) == self.pid and state != "Z":
                    pids.append(int(stat.parent.name))
        return pids

    def wait_exit(self, timeout: float) -> float | None:
        """Wait for the main process to exit; return how long that took, or None if it is still
        running after ``timeout`` seconds."""
        started = time.monotonic()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - started

    def force_kill(self) -> None:
        """SIGKILL to the server's whole process group: its workers too."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


@contextlib.contextmanager
def serve_on(
    name: str, app: str, *, env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> Iterator[Running]:
    """Serve ``module:attribute`` with the server ``name`` (a key of ``SERVERS``) on a free
    port until the block ends, with ``env`` added to the environment."""
    with serve_command(
        name, lambda port: SERVERS[name](app, port), env=env, timeout=timeout
    ) as server:
        yield server


@contextlib.contextmanager
def serve_command(
    name: str,
    command: Callable[[int], list[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    running: type[Running] = Running,
) -> Iterator[Running]:
    """Run ``command(port)`` for a free port until the block ends, as ``running``: the
    server's output kept in a file, SIGTERM at the end, then SIGKILL to its process group."""
    port = free_port()
    child_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    with tempfile.NamedTemporaryFile(
        prefix=f"asgistream-{name}-", suffix=".log", delete=False
    ) as log:
        process = subprocess.Popen(
            command(port),
            cwd=ROOT,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one group with its workers, to kill them all if need be
        )
    server = running(process, port, name=name, log_path=Path(log.name))
    try:
        _wait_listening(port, process, timeout)
        yield server
    finally:
        with contextlib.suppress(TimeoutError):
            server.stop()
        server.force_kill()  # a worker the main process left behind
        server.log_path.unlink(missing_ok=True)
