"""The Server-Sent Events response: the step that sends a producer's items as a stream.

A :class:`~asgistream.DualEndpoint` hands its producer here when the request negotiated a
stream (it is a plain ASGI app, usable on its own too). :mod:`asgistream.sse` turns each item
into bytes; this module knows ASGI: when to send, what to send on an error, and when to stop.
How it behaves, in the order a request meets it:

- The status line and headers wait for the first event (or the first heartbeat), so an
  exception before it still becomes a proper HTTP error with a JSON body.
- Items that are ready together go out in one ``send``; an item that arrives alone goes out
  at once. Every ``send`` is awaited, so a client that stops reading pauses the producer.
- A :class:`~asgistream.disconnect.Watch` reads ``receive()``; on ``http.disconnect`` (or an
  ``OSError`` from ``send``) the producer is cancelled wherever it waits and its ``finally``
  blocks run.
- After ``heartbeat`` seconds without a write, a comment line keeps the connection open.
- An exception after the first event ends the stream with ``event: error`` and a JSON body
  ``{"type", "message"}``, decided by :func:`~asgistream.errors.as_http_error`: tracebacks go
  to the ``asgistream`` logger, never to the client.

The options (:class:`~asgistream.StreamOptions`) were checked when they were made; a stream
reads them once, into its own state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterable
from typing import Any

import anyio

from . import shutdown as _shutdown
from ._headers import ResponseHeaders, encode_headers
from ._types import Receive, Scope, Send
from .disconnect import new_event, timeout, watch
from .disconnect import now as _now
from .errors import HTTPError, as_http_error, error_body, send_error
from .options import StreamOptions
from .producer import aclose, finish_step, start_step
from .sse import DONE, HEARTBEAT, Event, encode, encode_data, encode_id_data

__all__ = ["FLUSH_BYTES", "EventStreamResponse"]

FLUSH_BYTES = 64 * 1024
"""Coalesced events are sent once they reach this size, even if more are ready."""

_CHECKPOINT_MASK = 63
"""A producer that never waits lets the event loop run every 64 items."""

SHUTDOWN_SEND_TIMEOUT = 1.0
"""How long the final message may wait for a slow client once the server shuts down."""

logger = logging.getLogger("asgistream")

_HEADERS = encode_headers(
    {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
    }
)


class EventStreamResponse:
    """Stream the items of ``producer`` as Server-Sent Events.

    ``options`` shape the stream (heartbeats, timeouts, ids, ``[DONE]``, ``retry:``; see
    :class:`~asgistream.StreamOptions`). ``headers`` are added to the stream's own, and to the
    error response if the producer fails before its first event.
    """

    def __init__(
        self,
        producer: AsyncIterable[Any],
        options: StreamOptions = StreamOptions(),
        *,
        status: int = 200,
        headers: ResponseHeaders | None = None,
    ) -> None:
        self.producer = producer
        self.options = options
        self.status = status
        self.extra_headers = encode_headers(headers)
        self.headers = _HEADERS + self.extra_headers

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


class _Stream:
    """The state of one response while it streams."""

    __slots__ = (
        "buffer",
        "count",
        "error",
        "gate",
        "iterator",
        "last_write",
        "options",
        "raised",
        "response",
        "send",
        "sending_since",
        "size",
        "started",
        "watch",
    )

    def __init__(self, response: EventStreamResponse, send: Send, receive: Receive) -> None:
        self.response = response
        self.options = options = response.options
        self.send = send
        self.iterator = response.producer.__aiter__()
        self.buffer: list[bytes] = []
        if options.retry is not None:
            self.buffer.append(b"retry: %d\n\n" % options.retry)
        self.size = 0
        self.count = 0
        self.started = False
        # What the client will be told, and whether the producer raised it itself.
        self.error: HTTPError | None = None
        self.raised = False
        self.gate: asyncio.Event | anyio.Event | None = None
        self.sending_since: float | None = None
        self.last_write = 0.0
        needs_tick = options.heartbeat is not None or options.send_timeout is not None
        self.watch = watch(receive, self.tick if needs_tick else None)

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
                # An OSError once the client is gone comes from our own write: nothing to tell.
                if not (watch.disconnected and isinstance(exc, OSError)):
                    self.fail(exc, "producer failed")
            finally:
                await self.close_producer()
        if watch.disconnected:
            return
        if watch.reason is not None and self.error is None:
            self.error = _stopped(watch.reason)
        await self.finish()

    def fail(self, exc: Exception, what: str) -> None:
        """Keep the first error, as the client will see it."""
        error = as_http_error(exc, what)
        if self.error is None:
            self.error = error
            self.raised = error is exc

    async def close_producer(self) -> None:
        try:
            await aclose(self.iterator)
        except Exception as exc:
            self.fail(exc, "producer failed while closing")

    async def pump(self) -> None:
        """Move items from the producer to the client until the producer ends."""
        anext = self.iterator.__anext__
        buffer = self.buffer
        ids = self.options.ids
        sleep = self.watch.sleep
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
            # Exactly Event: it is final, so no subclass can slip past this test.
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
            await sleep(0)

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
        timeout = self.options.idle_timeout
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
        options = self.options
        now = _now()
        if self.sending_since is not None:
            # A write is blocked on a client that reads nothing: a heartbeat could not pass.
            limit = options.send_timeout
            if limit is None:
                return options.heartbeat or math.inf
            blocked = now - self.sending_since
            if blocked >= limit:
                logger.info("client read nothing for %.1f s; closing the stream", blocked)
                self.watch.stop("disconnect")
                return math.inf
            return limit - blocked
        heartbeat = options.heartbeat
        if heartbeat is None:
            return options.send_timeout or math.inf
        idle = now - self.last_write
        if idle < heartbeat:
            return heartbeat - idle
        self.gate = gate = new_event()
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
            await self.watch.sleep(0)  # where the cancellation it asked for arrives
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
            # Nothing was sent yet: the error can still be a proper HTTP response.
            with contextlib.suppress(OSError):
                await send_error(self.send, error, self.response.extra_headers)
            return
        tail = self.buffer
        if error is not None:
            tail.append(_error_event(error, self.raised))
        elif self.options.done:
            tail.append(DONE)
        try:
            async with timeout(SHUTDOWN_SEND_TIMEOUT if self.watch.reason == "shutdown" else None):
                if not self.started:
                    await self.start()
                await self.send(
                    {"type": "http.response.body", "body": b"".join(tail), "more_body": False}
                )
        except (OSError, TimeoutError):
            return

    def shutdown(self) -> None:
        """End the producer and tell the client the server is shutting down."""
        self.watch.stop("shutdown")


def _stopped(reason: str) -> HTTPError:
    """Why the stream was stopped from outside, as the client will see it."""
    if reason == "shutdown":
        return HTTPError(503, "The server is shutting down", type="shutdown")
    return HTTPError(504, "The producer sent no event within the idle timeout", type="timeout")


def _error_event(error: HTTPError, raised: bool) -> bytes:
    """The ``event: error`` that ends a stream: ``{"error": {"type", "message"}}``.

    An :class:`HTTPError` the producer raised itself also gives its ``status`` and detail.
    """
    if raised:
        data = error_body(error.type, error.message, {"status": error.status, **error.detail})
    else:
        data = error_body(error.type, error.message)
    return b"event: error\n" + encode_data(data)
