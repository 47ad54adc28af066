"""``make cluster``: the scale-out demo on one machine, Redis plus two demo processes.

    make cluster                      # redis-server on 6379, the demo on 8000 and 8001
    curl -N 'http://127.0.0.1:8001/events/news'                                  # on B
    curl -X POST 'http://127.0.0.1:8000/events/news' -d '{"data": "hello"}'      # on A
    curl -X POST 'http://127.0.0.1:8000/jobs' -d '{"steps": 20, "delay": 0.5}'   # on A
    curl -N 'http://127.0.0.1:8001/jobs/ID?stream=true'                          # on B

``PORTS=8000,8001,8002`` runs more processes, ``REDIS_PORT`` moves Redis, and
``ASGISTREAM_REDIS_URL`` uses a Redis that is already running instead of starting one.
Ctrl-C stops everything this command started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator


@contextlib.contextmanager
def _redis(port: int) -> Iterator[str]:
    """A redis-server on ``port`` with no persistence, stopped by its pid at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: `make redis` installs Debian's")
    with tempfile.TemporaryDirectory(prefix="asgistream-cluster-") as directory:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", ""]
        )
        try:
            time.sleep(0.3)
            if process.poll() is not None:
                sys.exit(f"redis-server could not start on port {port}")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM too ends every process this command started


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    ports = [int(p) for p in os.environ.get("PORTS", "8000,8001").split(",")]
    with contextlib.ExitStack() as stack:
        url = os.environ.get("ASGISTREAM_REDIS_URL") or stack.enter_context(
            _redis(int(os.environ.get("REDIS_PORT", "6379")))
        )
        env = {**os.environ, "ASGISTREAM_REDIS_URL": url}
        servers = []
        for port in ports:
            command = [sys.executable, "-m", "uvicorn", "examples.demo:app", "--port", str(port)]
            # PORT: the demo's proxy forwards to its own mock model, on its own port.
            child = {**env, "PORT": str(port)}
            servers.append(subprocess.Popen([*command, "--host", "127.0.0.1"], env=child))
            print(f"demo on http://127.0.0.1:{port} (Redis at {url})", flush=True)
        try:
            while all(server.poll() is None for server in servers):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for server in servers:
                server.send_signal(signal.SIGTERM)
            for server in servers:
                server.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
