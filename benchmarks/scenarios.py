"""The scenarios. Each is a function of a running server and a :class:`Size`, returning
named figures; the same code runs at full size for ``make bench`` and tiny for the smoke
test, so none can rot.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import math
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from . import client, paced
from .apps.common import BATCH_SIZE
from .client import Stream, bounded
from .server import Server
from .wrk import run_wrk

Figures = dict[str, float | None]


@dataclass(frozen=True)
class Size:
    """How big every scenario runs."""

    runs: int = 3
    wrk_seconds: int = 5
    warmup_requests: int = 20
    warmup_seconds: int = 1
    connections: int = 64
    long_events: int = 1_000_000
    long_cap: float = 6.0
    first_event_requests: int = 200
    idle_counts: tuple[int, ...] = (1000, 5000)
    memory_runs: int = 2
    non_reading_seconds: float = 3.0
    disconnect_trials: int = 7
    disconnect_cap: float = 1.5
    finally_wait: float = 3.0
    fresh_servers: bool = True
    settle: float = 0.3  # seconds to let a server settle before reading its RSS or CPU time
    llm_connections: int = 1000
    llm_tokens: int = 20
    llm_delay: float = 0.05
    llm_seconds: int = 6
    paced_streams: int = 250
    paced_events: int = 400
    paced_delay: float = 0.01
    paced_ramp: float = 0.5  # seconds over which the streams open
    capacity_events: int = 250  # per stream, in each trial of the capacity search
    capacity_start: int = 250
    capacity_limit: int = 8192
    capacity_trials: int = 7  # loads tried, at most
    capacity_budget: float = 30.0  # seconds per contender
    fanout_subscribers: int = 1000
    fanout_rate: float = 20.0  # publishes per second
    fanout_seconds: float = 10.0
    fanout_processes: int = 2  # on Redis; the in-memory broker runs in one


FULL = Size()
SMOKE = Size(
    runs=1,
    wrk_seconds=1,
    warmup_requests=2,
    warmup_seconds=0,
    connections=4,
    long_events=3000,
    long_cap=3.0,
    first_event_requests=3,
    idle_counts=(5, 20),
    memory_runs=1,
    non_reading_seconds=0.3,
    disconnect_trials=1,
    disconnect_cap=0.3,
    finally_wait=0.5,
    fresh_servers=False,
    settle=0.05,
    llm_connections=8,
    llm_tokens=3,
    llm_delay=0.01,
    llm_seconds=1,
    paced_streams=8,
    paced_events=20,
    paced_ramp=0.05,
    capacity_events=10,
    capacity_start=4,
    capacity_limit=8,
    capacity_trials=2,
    capacity_budget=10.0,
    fanout_subscribers=20,
    fanout_rate=10.0,
    fanout_seconds=1.0,
)


def _get_json(server: Server, path: str) -> tuple[int, object]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _count_events(server: Server, path: str, timeout: float = 10.0) -> int:
    events, _, stream = client.run(lambda: client.read_stream(server.port, path, limit=timeout))
    if stream.status != 200 or not stream.ended:
        raise RuntimeError(f"{path}: status {stream.status}, ended={stream.ended}")
    return events


def warm_up(server: Server, size: Size, batch: bool) -> None:
    """Let the server compile its routes and fill its caches before anything is measured."""
    for _ in range(size.warmup_requests):
        _count_events(server, f"/items?n={BATCH_SIZE}")
        if batch:
            _get_json(server, "/items")
    if size.warmup_seconds:
        run_wrk(
            server.url + "/items",
            connections=size.connections,
            seconds=size.warmup_seconds,
            accept=client.SSE,
        )


# -- request rates, measured by wrk ----------------------------------------------------------


def batch(server: Server, size: Size) -> Figures:
    """Requests/s and latency of a 100-item JSON body, at ``size.connections``."""
    status, body = _get_json(server, "/items")
    items = body.get("items") if isinstance(body, dict) else None
    if status != 200 or not isinstance(items, list):
        raise RuntimeError(f"batch answered {status}: {str(body)[:200]}")
    result = run_wrk(
        server.url + "/items",
        connections=size.connections,
        seconds=size.wrk_seconds,
        accept="application/json",
    )
    return {
        "requests_s": result.rate,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors + result.timeouts,
        "items_per_response": len(items),
    }


def streams(server: Server, size: Size) -> Figures:
    """Complete 100-event streams per second, at ``size.connections``."""
    path = f"/items?n={BATCH_SIZE}"
    per_response = _count_events(server, path)
    result = run_wrk(
        server.url + path, connections=size.connections, seconds=size.wrk_seconds, accept=client.SSE
    )
    return {
        "events_s": result.rate * per_response,
        "streams_s": result.rate,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors + result.timeouts,
        "events_per_response": per_response,
    }


def llm(server: Server, size: Size) -> Figures:
    """LLM-like streams (a token every ``llm_delay`` s) at ``llm_connections`` at once.

    The latency is that of a whole stream; its ideal is ``llm_tokens * llm_delay``.
    """
    path = f"/tokens?n={size.llm_tokens}&delay={size.llm_delay}"
    per_response = _count_events(server, path)  # the tokens and [DONE]
    result = run_wrk(
        server.url + path,
        connections=size.llm_connections,
        seconds=size.llm_seconds,
        accept=client.SSE,
    )
    ideal_ms = size.llm_tokens * size.llm_delay * 1000
    done = result.requests > 0  # else no stream completed in the window: no latency to show
    return {
        "tokens_s": result.rate * size.llm_tokens,
        "p50_ms": result.p50_ms if done else None,
        "p99_ms": result.p99_ms if done else None,
        "p99_over_ideal_ms": result.p99_ms - ideal_ms if done else None,
        "errors": result.errors + result.timeouts,
        "events_per_response": per_response,
    }


# -- paced streams, measured by the paced client ------------------------------------------


def paced_cpu(server: Server, size: Size) -> Figures:
    """Server CPU per event of ``paced_streams`` streams of ``paced_events`` events, one
    every ``paced_delay`` s, and the events' lateness."""
    load = paced.Load(
        size.paced_streams, size.paced_events, size.paced_delay, size.paced_ramp, grace=2.0
    )
    outcome = paced.run(server, load, size.settle)
    cost = outcome.cpu_us_per_event
    return {
        "cpu_us_per_event": cost,
        # How many such streams a whole core's time would cover at this cost: a reference
        # for the capacity that noise on the server's core does not move as it moves lateness.
        "streams_per_core": None if not cost else size.paced_delay / (cost * 1e-6),
        "p50_ms": outcome.p50_ms,
        "p99_ms": outcome.p99_ms,
        "max_ms": outcome.max_ms,
        "events": outcome.events,
        "expected": outcome.expected,
        "server_busy": outcome.server_busy,
        "server_waited": outcome.server_waited,
        "client_busy": outcome.client_busy,
    }


def paced_capacity(server: Server, size: Size) -> Figures:
    """The most concurrent paced streams (``capacity_events`` events, one every
    ``paced_delay`` s) the server sustains with p99 lateness within ``paced.LATE_MS``."""

    def trial(streams: int) -> paced.Outcome:
        load = paced.Load(
            streams, size.capacity_events, size.paced_delay, size.paced_ramp, grace=1.0
        )
        return paced.run(server, load, size.settle)

    streams, trials = paced.capacity(
        trial,
        start=size.capacity_start,
        limit=size.capacity_limit,
        trials=size.capacity_trials,
        budget=size.capacity_budget,
    )
    best = next((t for t in trials if t.streams == streams and t.sustained), None)
    above = [t for t in trials if t.streams > streams]
    fewest = min((t.streams for t in above), default=None)
    # Of the runs of the smallest load that failed, the best.
    first_failed = min(
        (t for t in above if t.streams == fewest),
        key=lambda t: math.inf if t.p99_ms is None else t.p99_ms,
        default=None,
    )
    return {
        "streams": streams,
        "events_s": streams / size.paced_delay,
        "p99_ms": None if best is None else best.p99_ms,
        "cpu_us_per_event": None if best is None else best.cpu_us_per_event,
        "server_busy": None if best is None else best.server_busy,
        "failed_streams": None if first_failed is None else first_failed.streams,
        "failed_p99_ms": None if first_failed is None else first_failed.p99_ms,
        "failed_waited": None if first_failed is None else first_failed.server_waited,
        # The most of its core the client used in any run: near 1, the client may have been
        # the limit, and the capacity is a floor.
        "client_busy": max(t.client_busy for t in trials),
        "trials": len(trials),  # runs, the repeated runs of failed loads included
    }


# -- what wrk cannot express, measured by the asyncio client ------------------------------


def long_stream(server: Server, size: Size) -> Figures:
    """Events/s of one stream of ``long_events`` events, read as fast as the client can.

    The producer stops after ``long_cap`` s; a slower contender is measured on what it
    sent by then.
    """
    path = f"/items?n={size.long_events}&cap={size.long_cap}"
    events, seconds, stream = client.run(
        lambda: client.read_stream(server.port, path, limit=size.long_cap + 10)
    )
    if stream.status != 200 or events == 0:
        raise RuntimeError(f"long stream: status {stream.status}, {events} events")
    return {
        "events_s": events / seconds,
        "events": events,
        "complete": float(events == size.long_events),
    }


def first_event(server: Server, size: Size) -> Figures:
    """Milliseconds from connecting to the end of the first event, over fresh connections."""

    async def main() -> list[float]:
        return [
            await client.first_event(server.port, "/idle", limit=10)
            for _ in range(size.first_event_requests)
        ]

    times = sorted(t * 1000 for t in client.run(main))
    return {"p50_ms": statistics.median(times), "p99_ms": client.percentile(times, 99)}


def idle_memory(server: Server, size: Size) -> Figures:
    """Server RSS per open idle stream (one event sent, then nothing), in KB of 1000 bytes."""

    async def main() -> Figures:
        streams: list[Stream] = []
        try:
            await _open_idle(server.port, min(20, size.idle_counts[0]), streams)
            await _close_all(streams)
            await asyncio.sleep(size.settle)
            base = server.rss_kib()
            figures: Figures = {"base_rss_mb": base / 1024}
            for count in size.idle_counts:
                await _open_idle(server.port, count - len(streams), streams)
                await asyncio.sleep(size.settle)
                grown = server.rss_kib() - base
                figures[f"kb_per_stream_{count}"] = grown * 1.024 / count
            return figures
        finally:
            await _close_all(streams)

    return client.run(main)


async def _open_idle(port: int, count: int, streams: list[Stream], parallel: int = 100) -> None:
    limit = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with limit:
            stream = await bounded(Stream.open(port, "/idle"), 30)
            streams.append(stream)
            await bounded(stream.read_head(), 30)
            await bounded(stream.read_events(1), 30)
            if stream.events != 1:
                raise RuntimeError("an idle stream sent no event")

    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(one())


async def _close_all(streams: list[Stream]) -> None:
    for stream in streams:
        await stream.close()
    streams.clear()


def non_reading(server: Server, size: Size) -> Figures:
    """Server RSS while one client reads nothing of an endless stream.

    ``growth_kb`` is the largest growth over the RSS before; ``late_growth_kb`` the growth
    over the second half of the window (near 0 when the server applies backpressure).
    """
    seconds = size.non_reading_seconds

    async def main() -> Figures:
        base = server.rss_kib()
        path = f"/items?n=-1&cap={seconds + 0.2}"
        stream = await bounded(Stream.open(server.port, path), 10)
        try:
            await bounded(stream.read_head(), 10)
            started = time.monotonic()
            samples: list[tuple[float, int]] = []
            while (elapsed := time.monotonic() - started) < seconds:
                samples.append((elapsed, server.rss_kib()))
                await asyncio.sleep(seconds / 40)
        finally:
            await stream.close()
        half = next(rss for t, rss in samples if t >= seconds / 2)
        return {
            "growth_kb": (max(rss for _, rss in samples) - base) * 1.024,
            "late_growth_kb": (samples[-1][1] - half) * 1.024,
        }

    return client.run(main)


def disconnect(server: Server, size: Size) -> Figures:
    """Milliseconds from the client's close to the producer's ``finally``.

    ``send-only``: a producer that never awaits anything but the framework's ``send``;
    ``paced``: one that sleeps 10 ms between items. A producer that is never stopped runs
    until its cap (``disconnect_cap`` s) and counts as ``capped``; one whose ``finally`` has
    not run ``finally_wait`` s after that (it was abandoned, left to the garbage collector)
    counts as neither stopped nor capped.
    """
    figures: Figures = {}
    for name, path in (("send_only", "/items?n=-1"), ("paced", "/paced?delay=0.01")):
        outcomes: list[tuple[float, str]] = []
        for _ in range(size.disconnect_trials):
            elapsed, outcome = client.run(functools.partial(_disconnect_trial, server, path, size))
            outcomes.append((elapsed, outcome))
            server.wait_idle(window=size.settle)
            if outcome != "stopped":
                break  # more trials would only burn the cap again
        median = statistics.median(t for t, _ in outcomes)
        figures[f"{name}_ms"] = None if math.isinf(median) else median
        figures[f"{name}_trials"] = len(outcomes)
        for outcome in ("stopped", "capped"):
            figures[f"{name}_{outcome}"] = sum(o == outcome for _, o in outcomes) / len(outcomes)
    return figures


async def _disconnect_trial(server: Server, path: str, size: Size) -> tuple[float, str]:
    run = uuid.uuid4().hex
    cap = size.disconnect_cap
    stream = await bounded(Stream.open(server.port, f"{path}&cap={cap}&run={run}"), 10)
    try:
        await bounded(stream.read_head(), 10)
        await bounded(stream.read_events(3), 10)
    finally:
        closed_at = time.monotonic()
        await stream.close()
    record = server.finally_dir / f"{run}.txt"
    deadline = time.monotonic() + cap + size.finally_wait
    while not record.exists():
        if time.monotonic() > deadline:
            return math.inf, "never"
        await asyncio.sleep(0.0005)
    stamp, reason = record.read_text().split()
    if reason == "cap":
        return math.inf, "capped"
    return (float(stamp) - closed_at) * 1000, "stopped"


@dataclass(frozen=True)
class Scenario:
    """A scenario and how the harness runs it."""

    name: str
    title: str
    run: Callable[[Server, Size], Figures]
    tool: str
    batch_only: bool = False
    fresh_server: bool = False
    repeat: bool = True  # False: runs once, it repeats trials itself


SCENARIOS = (
    Scenario("batch", "Batch: 100-item JSON body", batch, "wrk", batch_only=True),
    Scenario("paced_cpu", "Paced streams: server CPU per event", paced_cpu, "paced asyncio client"),
    Scenario(
        "paced_capacity",
        "Paced streams: most concurrent streams one core sustains",
        paced_capacity,
        "paced asyncio client",
        repeat=False,
    ),
    Scenario("streams", "100-event streams", streams, "wrk"),
    Scenario("long_stream", "One long stream", long_stream, "asyncio client"),
    Scenario("first_event", "Time to first event", first_event, "asyncio client"),
    Scenario(
        "idle_memory", "RSS per open idle stream", idle_memory, "asyncio client", fresh_server=True
    ),
    Scenario(
        "non_reading",
        "RSS under a client that stops reading",
        non_reading,
        "asyncio client",
        fresh_server=True,
    ),
    Scenario(
        "disconnect",
        "Client disconnect to producer finally",
        disconnect,
        "asyncio client",
        repeat=False,
    ),
    Scenario("llm", "LLM-like token streams", llm, "wrk"),
)

BY_NAME = {s.name: s for s in SCENARIOS}
