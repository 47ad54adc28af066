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
- With ``max_events`` or ``max_bytes``, the item that would pass the limit is not sent: the
  producer is closed and the stream ends with ``event: error`` of type ``stream_limit``.
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
import types
from collections.abc import AsyncIterable, Awaitable, Callable, Generator, Sequence
from typing import Any, cast

import anyio

from . import shutdown as _shutdown
from ._headers import ResponseHeaders, encode_headers
from ._types import Message, Receive, Scope, Send
from .disconnect import new_event, timeout, watch
from .errors import HTTPError, as_http_error, error_body, send_error
from .options import StreamOptions
from .producer import aclose, finish_step
from .sse import DONE, HEARTBEAT, Event, encode_data, encode_event, encode_id_data

__all__ = ["FLUSH_BYTES", "EventStreamResponse"]

FLUSH_BYTES = 64 * 1024
"""Coalesced events are sent once they reach this size, even if more are ready."""

_CHECKPOINT_EVERY = 64
"""A producer that does not wait lets the event loop run every 64 items."""

SHUTDOWN_SEND_TIMEOUT = 1.0
"""How long the final message may wait for a slow client once the server shuts down."""

_NEVER = -math.inf  # one float for every stream, not one each

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

    ``options`` shape the stream (heartbeats, timeouts, ids, ``[DONE]``, ``retry:``, limits;
    see :class:`~asgistream.StreamOptions`). ``headers`` are added to the stream's own, and to
    the error response if the producer fails before its first event.
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
        # Pairs already encoded are kept as given (an endpoint passes its own list to every
        # response), and the full list is made only as the stream starts: an open stream
        # holds no header list of its own.
        self.extra_headers: Sequence[tuple[bytes, bytes]] = (
            () if headers is None else headers if type(headers) is list else encode_headers(headers)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = _Stream(self, send, receive)
        registry: _shutdown.Shutdown | None = scope.get(_shutdown.SCOPE_KEY)
        if registry is not None:
            registry.register(stream)
        watch = stream.watch
        try:
            # A disconnect, a timeout and shutdown all stop the body of this block; the final
            # message is sent after it.
            try:
                async with watch:
                    try:
                        await stream.pump()
                    except Exception as exc:
                        # An OSError once the client is gone comes from our own write:
                        # nothing to tell.
                        if not (watch.disconnected and isinstance(exc, OSError)):
                            stream.fail(exc, "producer failed")
                    finally:
                        await stream.close_producer()
            except anyio.get_cancelled_exc_class():
                # The server cancels the response itself as it stops (hypercorn once its
                # graceful timeout has passed, daphne at once): tell the client first.
                if not watch.disconnected:
                    await stream.tell_shutdown()
                raise
            if watch.disconnected:
                return
            if watch.reason is not None and stream.error is None:
                stream.error = _stopped(watch.reason)
            await stream.finish()
        finally:
            if registry is not None:
                registry.unregister(stream)


class _Stream:
    """The state of one response while it streams.

    It is also the watch's :class:`~asgistream.disconnect.Schedule`: heartbeats, the send
    watchdog and the idle timeout are worked out from timestamps when the watch's timer
    fires, so no timer is touched per event.
    """

    __slots__ = (
        "buffer",
        "clock",
        "count",
        "error",
        "gate",
        "held",
        "iterator",
        "last_write",
        "options",
        "raised",
        "response",
        "seen_sending",
        "send",
        "sending",
        "size",
        "started",
        "total",
        "waiting_since",
        "watch",
    )

    def __init__(self, response: EventStreamResponse, send: Send, receive: Receive) -> None:
        self.response = response
        self.options = options = response.options
        self.send = send
        self.iterator = response.producer.__aiter__()
        self.buffer: list[bytes] = []
        # The latest event, kept out of the buffer until the next step says whether more
        # are ready: a lone event then goes out as it is, with no list to join.
        self.held = b""
        if options.retry is not None:
            self.buffer.append(b"retry: %d\n\n" % options.retry)
        self.size = 0
        self.count = 0
        self.total = 0
        self.started = False
        # What the client will be told, and whether the producer raised it itself.
        self.error: HTTPError | None = None
        self.raised = False
        # Made when a write must wait for another to end; set when it ends.
        self.gate: asyncio.Event | anyio.Event | None = None
        # Whether a write runs; `last_write` is when the latest one began.
        self.sending = False
        # When the schedule last saw a write still running (it ended later than that).
        self.seen_sending = _NEVER
        self.waiting_since: float | None = None
        scheduled = (
            options.heartbeat is not None
            or options.send_timeout is not None
            or options.idle_timeout is not None
        )
        self.watch = watch(receive, self if scheduled else None)
        self.clock = self.watch.clock
        self.last_write = self.clock()

    # -- the producer's side -------------------------------------------------------------

    async def tell_shutdown(self) -> None:
        """Send the final message of a response the server cancelled, shielded from that."""
        if self.error is None:
            self.error = _stopped("shutdown")
        with anyio.move_on_after(SHUTDOWN_SEND_TIMEOUT, shield=True):
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

    @types.coroutine
    def pump(self) -> Generator[Any, Any, None]:
        """Move items from the producer to the client until the producer ends.

        It drives each ``__anext__()`` step itself, to learn whether an item is ready now
        (the latest event joins the buffer) or the producer is about to wait (what is
        buffered and the latest event go out first).
        A generator-based coroutine, so that while the producer waits it is the producer's
        ``await``: it passes the waits on to the event loop as ``await`` would, and no
        object is made per event to drive the step.
        """
        # Few locals: an idle stream keeps this frame, and a copy of it, for as long as it
        # stays open.
        anext: Callable[[], Generator[Any, Any, Any]]
        if type(self.iterator) is types.AsyncGeneratorType:
            # An async generator's step is itself the iterator to drive (no __await__ call).
            anext = cast(Callable[[], Generator[Any, Any, Any]], self.iterator.__anext__)
        else:
            anext = _through_await(self.iterator.__anext__)
        buffer = self.buffer
        ids = self.options.ids
        limited = self.options.max_events is not None or self.options.max_bytes is not None
        timed = self.options.idle_timeout is not None
        watch = self.watch
        count = 0
        waited_at = 0  # the count when the producer last waited (the event loop ran then)
        while True:
            step = anext()
            try:
                pending = step.send(None)
            except StopIteration as stop:
                item = stop.value  # ready now: the latest event waits for it in the buffer
                if self.held:
                    buffer.append(self.held)
                    self.size += len(self.held)
                    self.held = b""
                    if self.size >= FLUSH_BYTES:
                        yield from self.flush().__await__()
            except StopAsyncIteration:
                return
            else:
                # The producer waits: send what is ready, then wait with it. flush() inlined,
                # to make no coroutine per event; if the send raises, the stream ends.
                if self.held or buffer:
                    try:
                        if self.sending:
                            yield from self.take_turn().__await__()
                        try:
                            yield from self.write()
                        except OSError:
                            yield from self.lost().__await__()
                            raise
                        self.sending = False
                        if self.gate is not None:  # a heartbeat waits for its turn
                            self.wrote()
                    except BaseException as exc:
                        # It is still suspended in its await: deliver the error there, so
                        # that it unwinds (its finally blocks run) before the error goes on.
                        with contextlib.suppress(BaseException):
                            yield from finish_step(step, None, throw=exc)
                        raise
                if timed:
                    self.waiting_since = self.clock()
                try:
                    while True:
                        try:
                            resumed = yield pending
                        except BaseException as exc:
                            pending = step.throw(exc)
                            continue
                        if resumed is None:
                            # What asyncio resumes a task with: `yield from` passes the rest
                            # of the step on natively, and takes its item without an
                            # exception to catch.
                            item = yield from step
                            break
                        pending = step.send(resumed)  # trio's
                except StopIteration as stop:
                    item = stop.value
                except StopAsyncIteration:
                    return
                if timed:
                    self.waiting_since = None
                if watch.reason is not None:
                    # The producer caught its cancellation and went on: stop it here.
                    return
                waited_at = count
            position = count
            # Exactly Event: it is final, so no subclass can slip past this test.
            if type(item) is Event:
                chunk = encode_event(item, position) if ids else item.encode()
            elif ids:
                chunk = encode_id_data(position, item)
            else:
                chunk = encode_data(item)
            # While the producer waits, this frame keeps neither the item nor its bytes.
            item = pending = None
            if limited and self.over_limit(position, len(chunk)):
                return
            count = self.count = position + 1
            self.held = chunk
            chunk = b""
            if position - waited_at < _CHECKPOINT_EVERY:  # small ints: nothing allocated
                continue
            # A producer that never waits would otherwise starve the watcher (a disconnect
            # would go unnoticed), because uvicorn's send() does not yield while it drains.
            waited_at = position
            yield from watch.sleep(0).__await__()

    def over_limit(self, count: int, size: int) -> bool:
        """Whether one more event of ``size`` bytes, after ``count``, would pass a limit (then
        it is the error)."""
        options = self.options
        max_events = options.max_events
        if max_events is not None and count >= max_events:
            self.error = _limit_error(f"{max_events} events", "max_events")
            return True
        max_bytes = options.max_bytes
        self.total += size
        if max_bytes is not None and self.total > max_bytes:
            self.error = _limit_error(f"{max_bytes} bytes of events", "max_bytes")
            return True
        return False

    # -- the schedule, run by the watch --------------------------------------------------

    def due(self) -> float:
        """Seconds until a heartbeat is due; stops the stream once a timeout has passed."""
        options = self.options
        now = self.clock()
        delay = math.inf
        limit = options.send_timeout
        heartbeat = options.heartbeat
        if self.sending:
            # A write is blocked on a client that reads nothing: a heartbeat could not pass.
            self.seen_sending = now
            if limit is not None:
                blocked = now - self.last_write
                if blocked >= limit:
                    logger.info("client read nothing for %.1f s; closing the stream", blocked)
                    self.watch.stop("disconnect")
                    return math.inf
                delay = limit - blocked
            if heartbeat is not None:
                delay = min(delay, heartbeat)
        else:
            if heartbeat is not None:
                # Writes record only when they begin: one seen running ended after that.
                idle = now - max(self.last_write, self.seen_sending)
                if idle >= heartbeat:
                    return 0.0
                delay = heartbeat - idle
            # A write that begins later is blocked at the earliest `limit` after now.
            if limit is not None:
                delay = min(delay, limit)
        idle_timeout = options.idle_timeout
        if idle_timeout is not None:
            waiting = self.waiting_since
            if waiting is None:
                # A wait that begins later ends at the earliest `idle_timeout` after now.
                delay = min(delay, idle_timeout)
            else:
                waited = now - waiting
                if waited >= idle_timeout:
                    self.watch.stop("timeout")
                    return math.inf
                delay = min(delay, idle_timeout - waited)
        return delay

    async def beat(self) -> None:
        """Send a heartbeat, unless an event is being written."""
        if not self.sending:
            self.buffer.append(HEARTBEAT)
            with contextlib.suppress(OSError):  # the client is gone: flush() stopped the stream
                await self.flush()

    # -- writing -------------------------------------------------------------------------

    async def flush(self) -> None:
        """Send what is buffered as one message, once no other write runs."""
        if self.sending:
            await self.take_turn()
        try:
            await _awaiting(self.write())
        except OSError:
            await self.lost()
            raise
        finally:
            # A heartbeat's write that fails must not hold up the events.
            self.wrote()

    async def take_turn(self) -> None:
        """Wait until no write runs: a heartbeat being written goes before the events."""
        while self.sending:
            if self.gate is None:
                self.gate = new_event()
            await self.gate.wait()

    def write(self) -> Generator[Any, Any, None]:
        """Begin sending the buffer as one message: the iterator to ``yield from`` (a
        generator-based coroutine's ``await``) until the ``send`` is done.

        After it, :meth:`wrote`; if it raises ``OSError``, :meth:`lost` first.
        """
        buffer = self.buffer
        held = self.held
        if buffer:
            if held:
                buffer.append(held)
            body = b"".join(buffer)
            buffer.clear()
        else:
            body = held
        self.held = b""
        self.size = 0
        self.sending = True
        self.last_write = self.clock()
        message = {"type": "http.response.body", "body": body, "more_body": True}
        sent = self.send(message) if self.started else self.start(message)
        # A coroutine (what servers' send is) is its own iterator: no __await__() wrapper.
        if type(sent) is types.CoroutineType:
            return sent  # type: ignore[return-value]
        return sent.__await__()

    def wrote(self) -> None:
        """A write ended: a write waiting for its turn may begin."""
        self.sending = False
        gate = self.gate
        if gate is not None:
            self.gate = None
            gate.set()

    async def lost(self) -> None:
        """``send`` raised ``OSError``: how ASGI 2.4 servers report a disconnected client."""
        self.watch.stop("disconnect")
        await self.watch.sleep(0)  # where the cancellation it asked for arrives

    async def start(self, first: Message | None = None) -> None:
        """Send the status line and headers, then ``first`` if given."""
        self.started = True
        response = self.response
        extra = response.extra_headers
        headers = [*_HEADERS, *extra] if extra else _HEADERS
        await self.send(
            {"type": "http.response.start", "status": response.status, "headers": headers}
        )
        if first is not None:
            await self.send(first)

    async def finish(self) -> None:
        """Complete the response: the last events, then an error or the end."""
        error = self.error
        if error is not None and not self.started and not self.count:
            # Nothing was sent yet: the error can still be a proper HTTP response.
            with contextlib.suppress(OSError):
                await send_error(self.send, error, self.response.extra_headers)
            return
        tail = self.buffer
        if self.held:
            tail.append(self.held)
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


@types.coroutine
def _awaiting(iterator: Generator[Any, Any, None]) -> Generator[Any, Any, None]:
    """``iterator`` as an awaitable, for an ``async def`` to await."""
    yield from iterator


def _through_await(anext: Callable[[], Awaitable[Any]]) -> Callable[[], Generator[Any, Any, Any]]:
    def step() -> Generator[Any, Any, Any]:
        return anext().__await__()

    return step


def _stopped(reason: str) -> HTTPError:
    """Why the stream was stopped from outside, as the client will see it."""
    if reason == "shutdown":
        return HTTPError(503, "The server is shutting down", type="shutdown")
    return HTTPError(504, "The producer sent no event within the idle timeout", type="timeout")


def _limit_error(what: str, name: str) -> HTTPError:
    return HTTPError(
        500,
        f"The stream reached its limit of {what} ({name})",
        type="stream_limit",
        detail={"limit": name},
    )


def _error_event(error: HTTPError, raised: bool) -> bytes:
    """The ``event: error`` that ends a stream: ``{"error": {"type", "message", **detail}}``.

    An :class:`HTTPError` the producer raised itself also gives its ``status``.
    """
    if raised:
        data = error_body(error.type, error.message, {"status": error.status, **error.detail})
    else:
        data = error_body(error.type, error.message, error.detail)
    return b"event: error\n" + encode_data(data)
