"""Helpers shared by the tests and the test apps (plain code: apps served by uvicorn import it).

Fixtures live in ``tests/conftest.py`` (``anyio_backend``) and ``tests/e2e/conftest.py``
(servers, ``browser``); the uvicorn launcher in ``tests/server.py``, the headless browser in
``tests/browser.py``, raw sockets in ``tests/e2e/sockets.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from asgistream._types import Message

if TYPE_CHECKING:
    from asgistream.middleware.metrics import ResponseRecord

T = TypeVar("T")
V = TypeVar("V")


def wait_for(predicate: Callable[[], V], timeout: float = 5.0, every: float = 0.01) -> V:
    """Poll ``predicate`` until it returns something true or ``timeout`` seconds pass; return
    its last value (assert on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


async def until(predicate: Callable[[], object], limit: float = 5.0) -> None:
    """Poll ``predicate`` every millisecond, without blocking the event loop, until it is
    true; ``TimeoutError`` after ``limit`` seconds."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 (the state polled has no event to wait on)
            await anyio.sleep(0.001)


class Counted:
    """Wraps producers and counts them in ``stats``: ``started`` when one starts, ``finished``
    when its ``finally`` has run, so a test can tell that no producer was left behind.

    ``counted = Counted(stats)`` in an app, then ``return counted(items())`` from an endpoint.
    """

    def __init__(self, stats: dict[str, int]) -> None:
        self.stats = stats

    async def __call__(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        self.stats["started"] += 1
        try:
            async for item in items:
                yield item
        finally:
            self.stats["finished"] += 1


class FakeClient:
    """The client side of one ASGI HTTP request, in process.

    ``receive`` hands out the request ``body`` in chunks, then waits until ``disconnect()`` and
    reports ``http.disconnect``. ``send`` records every message (and raises ``OSError`` once
    ``fail_send_after`` messages have been sent, as a reset connection does).
    """

    def __init__(self, body: list[bytes] | None = None, *, fail_send_after: int | None = None):
        self.messages: list[Message] = []
        self.chunks = list(body or [b""])
        self.gone = anyio.Event()
        self.fail_send_after = fail_send_after

    async def receive(self) -> Message:
        if self.chunks:
            chunk = self.chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.fail_send_after is not None and len(self.messages) >= self.fail_send_after:
            raise OSError("connection reset")
        self.messages.append(dict(message))

    def disconnect(self) -> None:
        self.gone.set()

    @property
    def start(self) -> Message:
        return next(m for m in self.messages if m["type"] == "http.response.start")

    @property
    def status(self) -> int:
        return int(self.start["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.start["headers"])

    @property
    def bodies(self) -> list[bytes]:
        return [m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(self.bodies)


class RecordingSink:
    """A metrics sink that keeps every call in ``calls``, in order, as a tuple: ``("started",
    endpoint, mode, stream)``, ``("first", endpoint, mode, seconds)``, ``("finished",
    record)``, ``("waited", limiter, endpoint, mode, seconds)``, ``("rejected", limiter,
    endpoint, mode, reason)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def response_started(self, endpoint: str, mode: str, stream: bool) -> None:
        self.calls.append(("started", endpoint, mode, stream))

    def first_event(self, endpoint: str, mode: str, seconds: float) -> None:
        self.calls.append(("first", endpoint, mode, seconds))

    def response_finished(self, record: ResponseRecord) -> None:
        self.calls.append(("finished", record))

    def limiter_waited(self, limiter: str, endpoint: str, mode: str, seconds: float) -> None:
        self.calls.append(("waited", limiter, endpoint, mode, seconds))

    def limiter_rejected(self, limiter: str, endpoint: str, mode: str, reason: str) -> None:
        self.calls.append(("rejected", limiter, endpoint, mode, reason))

    def _of(self, kind: str) -> list[tuple[Any, ...]]:
        return [call[1:] for call in self.calls if call[0] == kind]

    @property
    def started(self) -> list[tuple[Any, ...]]:
        """``(endpoint, mode, stream)`` for each response started."""
        return self._of("started")

    @property
    def first(self) -> list[tuple[Any, ...]]:
        """``(endpoint, mode, seconds)`` for each first event."""
        return self._of("first")

    @property
    def records(self) -> list[ResponseRecord]:
        """The record of each finished response."""
        return [call[0] for call in self._of("finished")]


async def take(events: AsyncIterator[T], n: int, limit: float = 5.0) -> list[T]:
    """The next ``n`` items of ``events``; fails after ``limit`` seconds."""
    got: list[T] = []
    with anyio.fail_after(limit):
        async for event in events:
            got.append(event)
            if len(got) == n:
                break
    return got
