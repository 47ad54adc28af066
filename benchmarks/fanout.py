"""Fan-out across processes on Redis, side by side with the in-memory broker in one process.

``fanout_subscribers`` SSE subscribers (split evenly over ``fanout_processes`` servers of
``benchmarks/apps/fanout_app.py`` on one redis-server that the harness starts and stops by
its pid; all on one server for the in-memory broker) receive what a publisher posts
``fanout_rate`` times a second for ``fanout_seconds`` seconds, alternating between the
servers. Each payload carries ``time.monotonic()`` from just before its request was written;
the subscribers' reader stamps each read, so latency is publish request to delivery, in one
process's clock. Server CPU is user plus system time from ``/proc`` of the server processes
over the publishing window and the drain; redis-server's is counted apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import orjson

from . import client
from .client import bounded, percentile
from .scenarios import Figures, Size
from .server import SERVER_CPU, Server, free_port, pinned, serve_all

APP = "benchmarks.apps.fanout_app:app"
SETUPS = ("memory", "redis")
"""The figures' keys, in the order of the report."""

OPEN_PARALLEL = 100
DRAIN_SECONDS = 3.0
"""How long deliveries may still arrive after the last publish."""

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of process ``pid`` so far, in clock ticks."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@contextlib.contextmanager
def redis_server(cpu: int | None = SERVER_CPU) -> Iterator[tuple[str, int]]:
    """A redis-server on a free loopback port, keeping nothing on disk: (url, pid)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make redis`")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as folder:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", folder, "--loglevel", "warning"]
        process = subprocess.Popen(pinned(command, cpu), stdout=subprocess.DEVNULL)
        try:
            _wait_for_redis(port, process)
            yield f"redis://127.0.0.1:{port}/0", process.pid
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_redis(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.02)
    raise TimeoutError(f"redis-server not answering on {port} after {timeout} s")


def run_fanout(size: Size, log: Callable[[str], None] = print) -> dict[str, Figures]:
    """Measure the in-memory broker in one process, then Redis across processes."""
    figures = {}
    with serve_all([APP]) as servers:
        figures["memory"] = client.run(lambda: _measure(servers, size, None))
    log(f"fanout memory: {_shown(figures['memory'])}")
    with redis_server() as (url, redis_pid):
        apps = [APP] * size.fanout_processes
        with serve_all(apps, env={"BENCH_REDIS_URL": url}) as servers:
            figures["redis"] = client.run(lambda: _measure(servers, size, redis_pid))
    log(f"fanout redis: {_shown(figures['redis'])}")
    return figures


def _shown(figures: Figures) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in figures.items() if v is not None)


class _Tally:
    """What every subscriber received, and an event for when it reaches ``target``."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.received = 0
        self.dropped = 0
        self.target = 0
        self.reached = asyncio.Event()

    def expect(self, target: int) -> None:
        """Count from zero again, up to ``target``."""
        self.latencies.clear()
        self.received = self.dropped = 0
        self.target = target
        self.reached = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Until ``target`` deliveries arrived, or ``seconds`` passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reached.wait(), seconds)


class _Subscriber:
    """One SSE subscription: counts the published events and their latencies."""

    __slots__ = ("buffer", "stream", "tally")

    def __init__(self, stream: client.Stream, tally: _Tally) -> None:
        self.stream = stream
        self.tally = tally
        self.buffer = b""

    async def ready(self) -> None:
        """Read the head and the ``ready`` event: the subscription exists."""
        await self.stream.read_head()
        if self.stream.status != 200:
            raise RuntimeError(f"subscribe answered {self.stream.status}")
        while b"event: ready" not in self.buffer:
            data = await self.stream.reader.read(client.READ_SIZE)
            if not data:
                raise RuntimeError("the stream ended before its ready event")
            self.buffer += data
        self.buffer = self.buffer.rsplit(b"\n\n", 1)[1]

    async def read(self) -> None:
        """Read until the connection closes, stamping every published event."""
        reader = self.stream.reader
        tally = self.tally
        latencies = tally.latencies
        while data := await reader.read(client.READ_SIZE):
            now = time.monotonic()
            *events, self.buffer = (self.buffer + data).split(b"\n\n")
            for event in events:
                at = event.find(b'"t":')
                if at >= 0:
                    tally.received += 1
                    latencies.append(now - float(event[at + 4 : event.index(b"}", at)]))
                elif b"event: dropped" in event:
                    tally.dropped += 1
            if tally.received >= tally.target:
                tally.reached.set()


class _Publisher:
    """A keep-alive connection that posts to ``/broadcast``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> _Publisher:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def publish(self, seq: int) -> None:
        body = orjson.dumps({"seq": seq, "t": time.monotonic()})
        self.writer.write(
            b"POST /broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"publish answered {head[:40]!r}")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def _measure(servers: list[Server], size: Size, redis_pid: int | None) -> Figures:
    tally = _Tally()
    subscribers: list[_Subscriber] = []
    publishers: list[_Publisher] = []
    limit = asyncio.Semaphore(OPEN_PARALLEL)

    async def subscribe(server: Server) -> None:
        async with limit:
            stream = await bounded(client.Stream.open(server.port, "/broadcast"), 30)
            subscriber = _Subscriber(stream, tally)
            subscribers.append(subscriber)
            await bounded(subscriber.ready(), 30)

    try:
        async with asyncio.TaskGroup() as group:
            for i in range(size.fanout_subscribers):
                group.create_task(subscribe(servers[i % len(servers)]))
        readers = [asyncio.create_task(s.read()) for s in subscribers]
        publishers = [await _Publisher.open(server.port) for server in servers]
        # Warm-up: every process has published and delivered before the clock starts.
        tally.expect(len(publishers) * len(subscribers))
        for i, publisher in enumerate(publishers):
            await bounded(publisher.publish(-1 - i), 10)
        await tally.wait(10)
        figures = await _publish(servers, publishers, len(subscribers), tally, size, redis_pid)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        return figures
    finally:
        for publisher in publishers:
            await publisher.close()
        for subscriber in subscribers:
            await subscriber.stream.close()


async def _publish(
    servers: list[Server],
    publishers: list[_Publisher],
    subscribers: int,
    tally: _Tally,
    size: Size,
    redis_pid: int | None,
) -> Figures:
    count = max(1, round(size.fanout_rate * size.fanout_seconds))
    tally.expect(count * subscribers)
    pids = [server.pid for server in servers]
    cpu_before = sum(cpu_ticks(pid) for pid in pids)
    redis_before = cpu_ticks(redis_pid) if redis_pid else 0
    started = time.monotonic()
    for seq in range(count):
        delay = started + seq / size.fanout_rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await bounded(publishers[seq % len(publishers)].publish(seq), 10)
    # The window in which ``count`` publishes were due, or longer if they fell behind.
    published = max(time.monotonic() - started, count / size.fanout_rate)
    await tally.wait(DRAIN_SECONDS)
    cpu = (sum(cpu_ticks(pid) for pid in pids) - cpu_before) / _TICK
    redis_cpu = (cpu_ticks(redis_pid) - redis_before) / _TICK if redis_pid else None
    received = tally.received
    ordered = sorted(tally.latencies)
    per_cpu = received / cpu if cpu > 0 else None
    return {
        "processes": len(servers),
        "subscribers": subscribers,
        "publishes_s": count / published,
        "deliveries_s": received / published,
        "lost": count * subscribers - received,
        "dropped_events": tally.dropped,
        "p50_ms": statistics.median(ordered) * 1000 if ordered else None,
        "p99_ms": percentile(ordered, 99) * 1000 if ordered else None,
        "max_ms": ordered[-1] * 1000 if ordered else None,
        "server_cpu_s": cpu,
        "cpu_us_per_delivery": cpu / received * 1e6 if received else None,
        "deliveries_per_cpu_s": per_cpu,
        "redis_cpu_s": redis_cpu,
        "deliveries_per_cpu_s_with_redis": (
            received / (cpu + redis_cpu) if redis_cpu is not None and cpu + redis_cpu > 0 else None
        ),
    }
