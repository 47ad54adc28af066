"""A small asyncio HTTP/1.1 client for what wrk cannot express: one long stream read as fast
as possible, the first event's latency, thousands of idle streams, a client that stops
reading, and a disconnect at a known instant.

It counts events by their ``data:`` lines (every event served here has exactly one, and each
follows a line break, whatever line ending the framework uses). Chunked framing cannot form
one, and every contender writes whole events per chunk, so framing never splits one either;
the smoke test checks the counts against the expected numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

SSE = "text/event-stream"
READ_SIZE = 256 * 1024


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on uvloop (plain asyncio if uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


class Stream:
    """One response read from a raw socket: headers first, then the body's events."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.events = 0
        self.bytes = 0
        self.ended = False
        self._tail = b""

    @classmethod
    async def open(cls, port: int, path: str, accept: str = SSE) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=READ_SIZE)
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n"
        writer.write(request.encode())
        return cls(reader, writer)

    async def read_head(self) -> None:
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self._take(b"")

    async def read_some(self) -> bool:
        """Read what is there; False at the end of the response."""
        data = await self.reader.read(READ_SIZE)
        if not data:
            self.ended = True
            return False
        self._take(data)
        return not self.ended

    async def read_events(self, count: int) -> None:
        """Read until at least ``count`` events arrived (or the response ended)."""
        while self.events < count and await self.read_some():
            pass

    def _take(self, data: bytes) -> None:
        self.bytes += len(data)
        window = self._tail + data
        self.events += window.count(b"\ndata:") - self._tail.count(b"\ndata:")
        self._tail = window[-8:]
        # The last chunk of a chunked body: the response is complete.
        if window.endswith(b"\r\n0\r\n\r\n") or window == b"0\r\n\r\n":
            self.ended = True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """``awaitable`` with a time limit (every client step is bounded)."""
    return await asyncio.wait_for(awaitable, seconds)


async def read_stream(port: int, path: str, *, limit: float) -> tuple[int, float, Stream]:
    """Read one stream to its end: (events, seconds from request to last byte, stream)."""
    started = time.perf_counter()
    stream = await bounded(Stream.open(port, path), limit)
    try:
        await bounded(stream.read_head(), limit)
        deadline = started + limit
        while time.perf_counter() < deadline and await bounded(stream.read_some(), limit):
            pass
        return stream.events, time.perf_counter() - started, stream
    finally:
        await stream.close()


async def first_event(port: int, path: str, *, limit: float) -> float:
    """Seconds from opening a connection to the end of the first event."""
    started = time.perf_counter()
    stream = await bounded(Stream.open(port, path), limit)
    try:
        await bounded(stream.read_head(), limit)
        await bounded(stream.read_events(1), limit)
        if stream.events < 1:
            raise RuntimeError(f"{path}: the stream ended without an event")
        return time.perf_counter() - started
    finally:
        await stream.close()


def percentile(ordered: list[float], percent: float) -> float:
    """The ``percent``-th percentile of the sorted ``ordered`` (nearest rank; ``inf`` if
    empty)."""
    if not ordered:
        return math.inf
    index = min(len(ordered) - 1, math.ceil(percent / 100 * len(ordered)) - 1)
    return ordered[max(0, index)]
