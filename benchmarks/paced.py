"""Paced streams, as an LLM sends tokens: many concurrent streams, each an event every
``delay`` s, read by one raw-socket asyncio client (an ``asyncio.Protocol`` per connection,
on uvloop) that stamps every event's lateness as it arrives.

A stream's start is the client's ``time.monotonic()`` when it sends the request; it goes in
the query, and the shared producer (``common.paced``) sleeps until each item's due time,
``start + (i + 1) * delay``, on the same clock (one clock for every process on the machine).
The lateness of event ``i`` is its arrival minus that due time: whatever the server did not
get to in time, the request and the stream's set-up included.

Server CPU is the server process's CPU time (all threads, from ``/proc``) over the window
from the first connection to the last stream's end; the client's own CPU time over the same
window says whether it, not the server, was the limit.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import client
from .server import Server

LATE_MS = 50.0
"""The p99 lateness a sustained load stays within."""

DISTURBED = 0.05
"""Share of a run's time the server spent waiting for its core (other processes on it)
above which a failed run does not count and is run again."""

_END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked body


@dataclass(frozen=True)
class Load:
    """``streams`` concurrent streams of ``events`` events, one every ``delay`` s, opened
    evenly over ``ramp`` s; stragglers get ``grace`` s after the last due time."""

    streams: int
    events: int
    delay: float = 0.01
    ramp: float = 0.5
    grace: float = 2.0


@dataclass(frozen=True)
class Outcome:
    """What one run of a :class:`Load` measured. Lateness percentiles count an event that
    never came as infinitely late (``None`` when that decides them)."""

    streams: int
    expected: int
    events: int
    complete: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    server_cpu_s: float
    server_wait_s: float
    client_cpu_s: float
    seconds: float

    @property
    def cpu_us_per_event(self) -> float | None:
        return self.server_cpu_s / self.events * 1e6 if self.events else None

    @property
    def sustained(self) -> bool:
        """Every event came, and p99 lateness is within :data:`LATE_MS`."""
        return self.complete == self.streams and self.p99_ms is not None and self.p99_ms <= LATE_MS

    @property
    def disturbed(self) -> bool:
        return self.server_waited > DISTURBED

    @property
    def client_busy(self) -> float:
        return self.client_cpu_s / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_busy(self) -> float:
        return self.server_cpu_s / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_waited(self) -> float:
        """Share of the run the server was ready to run but another process had its core."""
        return self.server_wait_s / self.seconds if self.seconds > 0 else 0.0


class Reader(asyncio.Protocol):
    """One stream: counts its events by their ``data:`` lines and records their lateness."""

    def __init__(self, load: Load, lateness: list[float], done: asyncio.Future[None]) -> None:
        self.delay = load.delay
        self.lateness = lateness
        self.done = done
        self.start = 0.0
        self.events = 0
        self.status = 0
        self.transport: asyncio.Transport | None = None
        self._tail = b""

    def send(self, transport: asyncio.Transport, path: str) -> None:
        """Send the request on ``transport``, its schedule starting now."""
        self.transport = transport
        self.start = time.monotonic()
        request = (
            f"GET {path}&start={self.start!r} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        self.transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.status:
            self.status = int(data[9:12])  # b"HTTP/1.1 200 OK": the head comes in one piece
        # A "\ndata:" may straddle two reads: count the seam apart (without copying ``data``).
        new = data.count(b"\ndata:") + (self._tail[-5:] + data[:5]).count(b"\ndata:")
        first = self.events + 1
        self.events += new
        due = self.start + first * self.delay
        for k in range(new):
            self.lateness.append(now - due - k * self.delay)
        self._tail = data[-7:] if len(data) >= 7 else (self._tail + data)[-7:]
        if self._tail == _END or self.status != 200:
            self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()


async def _run(server: Server, load: Load) -> Outcome:
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    readers: list[Reader] = []
    path = f"/paced?n={load.events}&delay={load.delay!r}"
    (cpu_before, wait_before), client_before = server.cpu_and_wait(), time.process_time()
    began = time.monotonic()
    try:
        for j in range(load.streams):
            # Streams open evenly over the ramp, so their events are spread over each period.
            await asyncio.sleep(began + j * load.ramp / load.streams - time.monotonic())
            opening = loop.create_connection(
                functools.partial(Reader, load, lateness, loop.create_future()),
                "127.0.0.1",
                server.port,
            )
            transport, reader = await client.bounded(opening, 30)
            reader.send(transport, path)
            readers.append(reader)
        deadline = readers[-1].start + load.events * load.delay + load.grace
        pending = [r.done for r in readers if not r.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        ended = time.monotonic()
    finally:
        for reader in readers:
            if reader.transport is not None:
                reader.transport.close()
    client_cpu = time.process_time() - client_before
    cpu_after, wait_after = server.cpu_and_wait()
    failed = [r.status for r in readers if r.status not in (0, 200)]
    if failed:
        raise RuntimeError(f"/paced answered {failed[0]} ({len(failed)} streams)")
    expected = load.streams * load.events
    received = len(lateness)
    lateness.sort()
    missing = [math.inf] * (expected - received)
    ordered = lateness + missing
    return Outcome(
        streams=load.streams,
        expected=expected,
        events=received,
        complete=sum(r.events == load.events for r in readers),
        p50_ms=_finite_ms(client.percentile(ordered, 50)),
        p99_ms=_finite_ms(client.percentile(ordered, 99)),
        max_ms=_finite_ms(ordered[-1]) if ordered else None,
        server_cpu_s=cpu_after - cpu_before,
        server_wait_s=wait_after - wait_before,
        client_cpu_s=client_cpu,
        seconds=ended - began,
    )


def run(server: Server, load: Load, settle: float) -> Outcome:
    """Run ``load`` against ``server``'s ``/paced``, then wait until the server is idle (no
    CPU for ``settle`` s)."""
    outcome = client.run(lambda: _run(server, load))
    server.wait_idle(window=settle)
    return outcome


def capacity(
    trial: Callable[[int], Outcome],
    *,
    start: int,
    limit: int,
    trials: int,
    budget: float,
    resolution: float = 0.1,
) -> tuple[int, list[Outcome]]:
    """The most concurrent streams ``trial(streams)`` sustains, and the trials made.

    Doubles from ``start`` until a load fails (or ``limit``), halving instead if ``start``
    fails, then bisects between the most that passed and the fewest that failed until they
    are within ``resolution`` of each other; at most ``trials`` loads and ``budget`` s. A run
    that fails while :data:`DISTURBED` is run again (at most three runs per load), and the load
    passes if any run does: another process on the server's core should not decide a step.
    """
    passed, failed = 0, None
    streams = start
    made: list[Outcome] = []
    loads = 0
    deadline = time.monotonic() + budget
    while loads < trials and time.monotonic() < deadline:
        loads += 1
        runs = [trial(streams)]
        while (
            not runs[-1].sustained
            and runs[-1].disturbed
            and len(runs) < 3
            and time.monotonic() < deadline
        ):
            runs.append(trial(streams))
        made += runs
        if runs[-1].sustained:
            passed = streams
        else:
            failed = streams
        if failed is None:
            if streams >= limit:
                break
            streams = min(2 * streams, limit)
            continue
        if failed - passed <= max(1, resolution * failed):
            break
        streams = (passed + failed) // 2
    return passed, made


def _finite_ms(seconds: float) -> float | None:
    return None if math.isinf(seconds) else seconds * 1000
