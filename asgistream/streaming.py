"""The Server-Sent Events response: an ASGI app that streams a producer's items.

How it behaves, in the order a request meets it:

- The status line and headers wait for the first event (or the first heartbeat), so an
  exception before it still becomes a proper HTTP error with a JSON body.
- Items that are ready together go out in one ``send``; an item that arrives alone goes out
  at once. Every ``send`` is awaited, so a client that stops reading pauses the producer.
- A watcher task reads ``receive()``; on ``http.disconnect`` (or an ``OSError`` from
  ``send``) the producer is cancelled wherever it waits and its ``finally`` blocks run.
- After ``heartbeat`` seconds without a write, a comment line keeps the connection open.
- An exception after the first event ends the stream with ``event: error`` and a JSON body
  ``{"type", "message"}``; tracebacks go to the ``asgistream`` logger, never to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterable, Mapping
from typing import Any

from . import shutdown as _shutdown
from ._types import Receive, Scope, Send
from .disconnect import Watch
from .errors import HTTPError, error_body, send_error
from .producer import aclose, finish_step, start_step
from .sse import DONE, HEARTBEAT, Event, encode, encode_data, encode_id_data

__all__ = ["DEFAULT_HEARTBEAT", "FLUSH_BYTES", "EventStreamResponse"]

DEFAULT_HEARTBEAT = 15.0
"""Seconds without a write after which a heartbeat comment is sent."""

FLUSH_BYTES = 64 * 1024
"""Coalesced events are sent once they reach this size, even if more are ready."""

_CHECKPOINT_MASK = 63
"""A producer that never waits lets the event loop run every 64 items."""

SHUTDOWN_SEND_TIMEOUT = 1.0
"""How long the final message may wait for a slow client once the server shuts down."""

logger = logging.getLogger("asgistream")

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class EventStreamResponse:
    """Stream the items of ``producer`` as Server-Sent Events.

    ``heartbeat``: seconds of silence before a ``:`` comment is sent (``None`` or ``0``: off).
    ``idle_timeout``: seconds the producer may take for one item before the stream ends with
    an ``error`` event of type ``timeout`` (``None``: no limit).
    ``send_timeout``: seconds one write may block on a client that reads nothing before the
    client is treated as gone (``None``: wait as long as it takes).
    ``ids``: give items without an id their position (0, 1, ...) as ``id:``.
    ``done``: end a complete stream with ``data: [DONE]``.
    ``retry``: the reconnection delay in milliseconds to suggest to clients.
    """

    def __init__(
        self,
        producer: AsyncIterable[Any],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        idle_timeout: float | None = None,
        send_timeout: float | None = None,
        ids: bool = True,
        done: bool = False,
        retry: int | None = None,
    ) -> None:
        check_options(
            heartbeat=heartbeat, idle_timeout=idle_timeout, send_timeout=send_timeout, retry=retry
        )
        self.producer = producer
        self.status = status
        self.extra_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]
        self.headers = _HEADERS + self.extra_headers
        self.heartbeat = heartbeat or None
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout or None
        self.ids = ids
        self.done = done
        self.retry = retry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = _Stream(self, send, receive)
        registry: _shutdown.Shutdown | None = scope.get(_shutdown.SCOPE_KEY)
        if registry is not None:
            registry.register(stream)
        try:
            await stream.run()
        finally:
            if registry is not None:
                registry.unregister(stream)


def check_options(
    *,
    heartbeat: float | None,
    idle_timeout: float | None,
    send_timeout: float | None,
    retry: int | None,
) -> None:
    """Raise ``ValueError`` for stream options that make no sense."""
    for name, value in (
        ("heartbeat", heartbeat),
        ("idle_timeout", idle_timeout),
        ("send_timeout", send_timeout),
    ):
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must be None or >= 0 seconds, not {value!r}")
    if retry is not None and (type(retry) is not int or retry < 0):
        raise ValueError(f"retry must be None or a non-negative int, not {retry!r}")


class _Stream:
    """The state of one response while it streams."""

    __slots__ = (
        "buffer",
        "count",
        "error",
        "gate",
        "iterator",
        "last_write",
        "response",
        "send",
        "sending_since",
        "size",
        "started",
        "watch",
    )

    def __init__(self, response: EventStreamResponse, send: Send, receive: Receive) -> None:
        self.response = response
        self.send = send
        self.iterator = response.producer.__aiter__()
        self.buffer: list[bytes] = []
        if response.retry is not None:
            self.buffer.append(b"retry: %d\n\n" % response.retry)
        self.size = 0
        self.count = 0
        self.started = False
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.sending_since: float | None = None
        self.last_write = 0.0
        needs_tick = response.heartbeat is not None or response.send_timeout is not None
        self.watch = Watch(receive, self.tick if needs_tick else None)

    # -- the producer's side -------------------------------------------------------------

    async def run(self) -> None:
        watch = self.watch
        self.last_write = _now()
        # A disconnect, the idle timeout and shutdown all stop the body of this block; the
        # final message is sent after it.
        async with watch:
            try:
                await self.pump()
            except Exception as exc:
                self.error = exc
            finally:
                await self.close_producer()
        if watch.disconnected:
            return
        if watch.reason is not None and self.error is None:
            self.error = _stopped(watch.reason)
        await self.finish()

    async def close_producer(self) -> None:
        try:
            await aclose(self.iterator)
        except Exception as exc:
            logger.error("producer failed while closing", exc_info=exc)
            if self.error is None:
                self.error = exc

    async def pump(self) -> None:
        """Move items from the producer to the client until the producer ends."""
        anext = self.iterator.__anext__
        buffer = self.buffer
        ids = self.response.ids
        while True:
            step = anext().__await__()
            try:
                waits, item = start_step(step)
                if waits:
                    item = await self.wait_for_item(step, item)
                    if self.watch.reason is not None:
                        # The producer caught its cancellation and went on: stop it here.
                        return
            except StopAsyncIteration:
                return
            position = self.count
            if type(item) is Event:
                if ids and item.id is None:
                    chunk = encode(
                        item.data,
                        event=item.event,
                        id=position,
                        retry=item.retry,
                        comment=item.comment,
                    )
                else:
                    chunk = item.encode()
            elif ids:
                chunk = encode_id_data(position, item)
            else:
                chunk = encode_data(item)
            self.count = position + 1
            buffer.append(chunk)
            self.size += len(chunk)
            if self.size >= FLUSH_BYTES:
                await self.flush()
            elif position & _CHECKPOINT_MASK != _CHECKPOINT_MASK:
                continue
            # A producer that never waits would otherwise starve the watcher (a disconnect
            # would go unnoticed), because uvicorn's send() does not yield while it drains.
            await asyncio.sleep(0)

    async def wait_for_item(self, step: Any, pending: Any) -> Any:
        """The producer waits: send what is ready, then wait for its next item."""
        if self.buffer:
            try:
                await self.flush()
            except BaseException as exc:
                # The producer is still suspended in its await: deliver the error there, so
                # that it unwinds (its finally blocks run) before the error goes on.
                with contextlib.suppress(BaseException):
                    await finish_step(step, None, throw=exc)
                raise
        timeout = self.response.idle_timeout
        if timeout is None:
            return await finish_step(step, pending)
        self.watch.deadline(_now() + timeout)
        try:
            return await finish_step(step, pending)
        finally:
            self.watch.deadline(None)

    # -- the watcher's side --------------------------------------------------------------

    async def tick(self) -> float:
        """Run by the watcher: heartbeats and the send watchdog. Returns the next delay."""
        response = self.response
        now = _now()
        if self.sending_since is not None:
            # A write is blocked on a client that reads nothing: a heartbeat could not pass.
            limit = response.send_timeout
            if limit is None:
                return response.heartbeat or math.inf
            blocked = now - self.sending_since
            if blocked >= limit:
                logger.info("client read nothing for %.1f s; closing the stream", blocked)
                self.watch.stop("disconnect")
                return math.inf
            return limit - blocked
        heartbeat = response.heartbeat
        if heartbeat is None:
            return response.send_timeout or math.inf
        idle = now - self.last_write
        if idle < heartbeat:
            return heartbeat - idle
        self.gate = gate = asyncio.Event()
        try:
            await self.write(HEARTBEAT)
        except OSError:
            return math.inf  # the client is gone: write() has stopped the stream
        finally:
            self.gate = None
            gate.set()
        return heartbeat

    # -- writing -------------------------------------------------------------------------

    async def flush(self) -> None:
        """Send the buffered events as one message."""
        if self.gate is not None:
            await self.gate.wait()
        body = b"".join(self.buffer)
        self.buffer.clear()
        self.size = 0
        self.sending_since = _now()
        try:
            await self.write(body)
        finally:
            self.sending_since = None

    async def write(self, body: bytes) -> None:
        try:
            if not self.started:
                await self.start()
            await self.send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError:
            # ASGI 2.4 servers report a disconnected client this way.
            self.watch.stop("disconnect")
            await asyncio.sleep(0)  # where the cancellation it asked for arrives
            raise
        self.last_write = _now()

    async def start(self) -> None:
        self.started = True
        response = self.response
        await self.send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )

    async def finish(self) -> None:
        """Complete the response: the last events, then an error or the end."""
        error = self.error
        if error is not None and not self.started and not self.count:
            await self.send_http_error(error)
            return
        tail = self.buffer
        if error is not None:
            tail.append(b"event: error\n" + encode_data(_error_data(error)))
        elif self.response.done:
            tail.append(DONE)
        try:
            async with asyncio.timeout(
                SHUTDOWN_SEND_TIMEOUT if self.watch.reason == "shutdown" else None
            ):
                if not self.started:
                    await self.start()
                await self.send(
                    {"type": "http.response.body", "body": b"".join(tail), "more_body": False}
                )
        except (OSError, TimeoutError):
            return

    async def send_http_error(self, error: BaseException) -> None:
        if not isinstance(error, HTTPError):
            error = HTTPError(500, "Internal server error", type=_error_type(error))
        with contextlib.suppress(OSError):
            await send_error(self.send, error, self.response.extra_headers)

    def shutdown(self) -> None:
        """End the producer and tell the client the server is shutting down."""
        self.watch.stop("shutdown")


class _Stopped(Exception):
    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.type = type
        self.message = message


def _now() -> float:
    return asyncio.get_running_loop().time()


def _stopped(reason: str | None) -> _Stopped:
    if reason == "shutdown":
        return _Stopped("shutdown", "The server is shutting down")
    return _Stopped("timeout", "The producer sent no event within the idle timeout")


def _error_type(error: BaseException) -> str:
    if isinstance(error, HTTPError | _Stopped):
        return error.type
    logger.error("producer failed", exc_info=error)
    return "internal_error"


def _error_data(error: BaseException) -> bytes:
    """The JSON data of an ``error`` event: type and message, never a traceback."""
    if isinstance(error, HTTPError):
        return error_body(error.type, error.message, {"status": error.status, **error.detail})
    if isinstance(error, _Stopped):
        return error_body(error.type, error.message)
    return error_body(_error_type(error), "Internal server error")
