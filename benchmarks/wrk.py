"""Running ``wrk`` (Debian's package) pinned to the client core, read through a Lua report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .server import CLIENT_CPU, pinned

REPORT_SCRIPT = Path(__file__).with_name("wrk_report.lua")
_MARK = "WRKJSON "


def ensure_wrk() -> str:
    """The path of ``wrk``, installing Debian's package first if it is missing (as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("wrk is missing: install it with `sudo apt-get install -y wrk`")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get installed wrk but it is not on PATH")
    return found


def wrk_version() -> str:
    """wrk's version line."""
    result = subprocess.run([ensure_wrk(), "-v"], capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr).splitlines()[0].split(" Copyright")[0]


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: completed responses, their rate, latency percentiles and errors."""

    requests: int
    seconds: float
    bytes: int
    errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    command: tuple[str, ...]

    @property
    def rate(self) -> float:
        """Completed responses per second."""
        return self.requests / self.seconds


def wrk_command(
    url: str, *, connections: int, seconds: int, threads: int = 2, accept: str, timeout: int = 30
) -> list[str]:
    """The wrk command line, pinned to the client core."""
    threads = max(1, min(threads, connections))
    command = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={timeout}s",
        "-H",
        f"Accept: {accept}",
        "-s",
        str(REPORT_SCRIPT),
        url,
    ]
    return pinned(command, CLIENT_CPU)


def run_wrk(
    url: str, *, connections: int, seconds: int, threads: int = 2, accept: str, timeout: int = 30
) -> WrkResult:
    """Load ``url`` for ``seconds`` s over ``connections`` keep-alive connections."""
    command = wrk_command(
        url,
        connections=connections,
        seconds=seconds,
        threads=threads,
        accept=accept,
        timeout=timeout,
    )
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + timeout + 30, check=False
    )
    for line in completed.stdout.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
            break
    else:
        raise RuntimeError(f"wrk printed no report:\n{completed.stdout}\n{completed.stderr}")
    errors = sum(
        data[key] for key in ("connect_errors", "read_errors", "write_errors", "status_errors")
    )
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        bytes=data["bytes"],
        errors=errors,
        timeouts=data["timeouts"],
        p50_ms=data["p50_us"] / 1e3,
        p90_ms=data["p90_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        command=tuple(command),
    )
