"""Runs the scenarios against the contenders and keeps every figure.

Runs are interleaved (run 1 of every contender, then run 2, ...) so that noise from the rest
of the machine falls on all contenders alike. One failed measurement is recorded and the
rest go on.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

from .contenders import CONTENDERS, Contender
from .scenarios import SCENARIOS, Figures, Scenario, Size, warm_up
from .server import CLIENT_CPU, SERVER_CPU, Server, serve, serve_all, server_command
from .wrk import ensure_wrk, wrk_command, wrk_version

PACKAGES = (
    "asgistream",
    "uvicorn",
    "uvloop",
    "httptools",
    "fastapi",
    "starlette",
    "sse-starlette",
    "pydantic",
    "orjson",
    "anyio",
    "pytest-benchmark",
)


@dataclass
class Results:
    """Everything one run of the harness measured."""

    size: dict[str, Any]
    figures: dict[str, dict[str, list[Figures]]] = field(default_factory=dict)
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    logged_errors: dict[str, int] = field(default_factory=dict)
    micro: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    fanout: dict[str, Figures] = field(default_factory=dict)
    """The fan-out benchmark (``benchmarks/fanout.py``): figures by setup."""
    fanout_run: dict[str, Any] = field(default_factory=dict)
    """When and at what size the fan-out benchmark ran."""

    def add(self, scenario: str, contender: str, figures: Figures) -> None:
        self.figures.setdefault(scenario, {}).setdefault(contender, []).append(figures)

    def fail(self, scenario: str, contender: str, error: BaseException) -> None:
        self.failures.setdefault(scenario, {})[contender] = f"{type(error).__name__}: {error}"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1, default=str) + "\n")

    @classmethod
    def load(cls, path: Path) -> Results:
        return cls(**json.loads(path.read_text()))

    def merged_into(self, older: Results) -> Results:
        """``older`` with what this run measured in place of its figures (``--merge``)."""
        merged = Results(**{**asdict(older)})
        for scenario, figures in self.figures.items():
            merged.figures[scenario] = figures
            merged.failures.pop(scenario, None)
        for scenario, failures in self.failures.items():
            merged.failures[scenario] = failures
        if self.figures or self.failures:
            merged.environment = self.environment
            merged.size = self.size
        merged.micro = self.micro or older.micro
        merged.profiles = self.profiles or older.profiles
        if self.fanout:
            merged.fanout, merged.fanout_run = self.fanout, self.fanout_run
        return merged


def raise_open_files(wanted: int = 65536) -> int:
    """Raise the soft open-files limit as far as allowed (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def environment() -> dict[str, Any]:
    """The machine, the versions and the command lines, for the report."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), cpu)
    memory = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as info:
        kib = int(next(line.split()[1] for line in info if line.startswith("MemTotal")))
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    versions["python"] = platform.python_version()
    versions["wrk"] = wrk_version()
    example = wrk_command(
        "http://127.0.0.1:PORT/items", connections=64, seconds=5, accept="application/json"
    )
    return {
        "machine": f"{cpu}, {os.cpu_count()} cores, {memory}, Linux {platform.release()}",
        "versions": versions,
        "server_command": shlex.join(
            ["taskset", "-c", str(SERVER_CPU), *server_command("benchmarks.apps.X:app", 0)]
        ).replace("--port 0", "--port PORT"),
        "wrk_command": shlex.join(example),
        "client_cpu": CLIENT_CPU,
        "open_files": raise_open_files(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def runs_of(scenario: Scenario, size: Size) -> int:
    """How many runs of ``scenario`` to make."""
    if not scenario.repeat:
        return 1
    return size.memory_runs if scenario.fresh_server else size.runs


def run_scenarios(
    size: Size,
    *,
    contenders: Iterable[Contender] = CONTENDERS,
    scenarios: Iterable[Scenario] = SCENARIOS,
    log: Callable[[str], None] = print,
    results: Results | None = None,
) -> Results:
    """Measure every scenario for every contender that can serve it."""
    ensure_wrk()
    raise_open_files()
    contenders = tuple(contenders)
    scenarios = tuple(scenarios)
    results = results or Results(size=asdict(size))
    started = time.monotonic()
    with _Fleet(size, log) as fleet:
        fleet.start(
            [
                c
                for c in contenders
                if any(
                    c.serves(s.name, batch_only=s.batch_only)
                    and not (s.fresh_server and size.fresh_servers)
                    for s in scenarios
                )
            ]
        )
        for scenario in scenarios:
            for run in range(runs_of(scenario, size)):
                for contender in contenders:
                    if not contender.serves(scenario.name, batch_only=scenario.batch_only):
                        continue
                    took = time.monotonic()
                    try:
                        fresh = scenario.fresh_server and size.fresh_servers
                        with fleet.server(contender, fresh=fresh) as server:
                            figures = scenario.run(server, size)
                            server.wait_idle(window=size.settle)
                    except Exception as exc:
                        results.fail(scenario.name, contender.name, exc)
                        log(f"{scenario.name:12} run {run + 1} {contender.name:16} FAILED {exc}")
                        continue
                    results.add(scenario.name, contender.name, figures)
                    shown = ", ".join(f"{k}={_short(v)}" for k, v in figures.items())
                    log(
                        f"{scenario.name:12} run {run + 1} {contender.name:16} "
                        f"{time.monotonic() - took:5.1f}s {shown}"
                    )
        for name, count in fleet.logged_errors.items():
            results.logged_errors[name] = results.logged_errors.get(name, 0) + count
    results.seconds += time.monotonic() - started
    return results


def _short(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


class _Fleet:
    """One long-lived server per contender, plus fresh ones for the memory scenarios."""

    def __init__(self, size: Size, log: Callable[[str], None]) -> None:
        self.size = size
        self.log = log
        self.stack = contextlib.ExitStack()
        self.shared: dict[str, Server] = {}
        self.logged_errors: dict[str, int] = {}

    def __enter__(self) -> _Fleet:
        self.stack.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for name, server in self.shared.items():
            self._count_errors(name, server)
        self.stack.__exit__(exc_type, exc, traceback)

    def start(self, contenders: Iterable[Contender]) -> None:
        """Start the shared servers of ``contenders`` side by side, and warm them up."""
        contenders = [c for c in contenders if c.name not in self.shared]
        servers = self.stack.enter_context(serve_all([c.app for c in contenders]))
        for contender, server in zip(contenders, servers, strict=True):
            warm_up(server, self.size, contender.batch)
            self.shared[contender.name] = server

    def _count_errors(self, name: str, server: Server) -> None:
        self.logged_errors[name] = self.logged_errors.get(name, 0) + server.logged_errors()

    @contextlib.contextmanager
    def server(self, contender: Contender, *, fresh: bool) -> Iterator[Server]:
        if fresh:
            with serve(contender.app) as server:
                try:
                    yield server
                finally:
                    self._count_errors(contender.name, server)
            return
        self.start([contender])
        yield self.shared[contender.name]
