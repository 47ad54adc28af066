"""Fan-out: publishers on any process, many subscribers, each behind a bounded queue.

A :class:`Broker` keeps this process's subscribers; a :class:`FanoutBackend` carries what
is published to the broker of every process (this one's included): in memory for one
process (:class:`~asgistream.backends.memory.MemoryFanout`), or through a shared server
for many.

:meth:`Broker.publish` never waits for a subscriber: each broker puts what it receives in
every subscriber's queue and returns. A subscriber that reads slower than items are
published fills its queue, and then its :class:`Overflow` policy decides, so a slow client
neither grows memory nor slows anyone else:

- ``drop_oldest``: the oldest queued item makes room; before the next item the subscriber
  gets an ``Event`` named ``dropped`` with data ``{"dropped": n}``, the count it lost.
- ``disconnect``: the subscription ends; its next read raises :class:`SlowSubscriber`
  (a 503 :class:`~asgistream.HTTPError`), which a stream sends as its final ``error`` event.

A backend that loses its connection to the other processes says so (see :data:`Outage`):
then every subscription of this process ends, after what it has queued, with the backend's
error (a stream's final ``error`` event, so that its client reconnects), and new ones are
refused with it until the backend receives again. A subscriber never misses a message
silently: it gets every one published while it is subscribed, or an error.

Items are whatever the stream yields: values, text or :class:`~asgistream.Event` objects
(an ``Event`` with a name gives typed events). They travel as JSON, so a subscriber gets
what the item's JSON decodes to (a tuple arrives as a list, a dataclass as a dict), exactly
what a client would have seen; text, bytes and ``Event`` objects arrive as they were sent.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Protocol

import anyio
import orjson

from ..errors import HTTPError
from ..sse import Event

__all__ = [
    "DEFAULT_MAX_SUBSCRIBERS",
    "DEFAULT_QUEUE_SIZE",
    "Broker",
    "Deliver",
    "FanoutBackend",
    "Outage",
    "Overflow",
    "SlowSubscriber",
    "Subscription",
    "TooManySubscribers",
]

DEFAULT_QUEUE_SIZE = 100
"""Items queued per subscriber at most."""

DEFAULT_MAX_SUBSCRIBERS = 10_000
"""Subscribers a broker has at most."""

Deliver = Callable[[bytes], None]
"""How a backend hands a broker one published message; it never waits."""

Outage = Callable[[HTTPError | None], None]
"""How a backend tells its broker that it stopped receiving (an error, typically a 503:
messages published from now on may not reach this process) or receives again (``None``);
it never waits."""


class FanoutBackend(Protocol):
    """Carries each published message to the broker of every process, this one's included.

    One backend object serves one broker. Messages are bytes; each reaches every open
    backend of the same channel once, in the order the channel received them.
    """

    async def open(self, deliver: Deliver, outage: Outage) -> None:
        """Start receiving: from now until :meth:`aclose`, call ``deliver(message)`` for
        every message published on the channel, by any process. Call ``outage(error)`` as
        soon as messages may be missed (the connection to the other processes broke), and
        ``outage(None)`` once receiving again. Background work (a reader task) started here
        belongs to the caller's lifespan and ends in :meth:`aclose`."""
        ...

    async def publish(self, message: bytes) -> None:
        """Send ``message`` to every open backend of the channel; never waits for a
        subscriber."""
        ...

    async def aclose(self) -> None:
        """Stop receiving and release what :meth:`open` took."""
        ...


class Overflow(enum.StrEnum):
    """What happens when a subscriber's queue is full and one more item is published."""

    DROP_OLDEST = "drop_oldest"
    DISCONNECT = "disconnect"


class SlowSubscriber(HTTPError):
    """The subscriber fell a whole queue behind and was disconnected."""

    def __init__(self, queue_size: int) -> None:
        super().__init__(
            503,
            f"The subscriber fell more than {queue_size} events behind and was disconnected",
            type="slow_subscriber",
            detail={"queue_size": queue_size},
        )


class TooManySubscribers(HTTPError):
    """The broker has as many subscribers as it may."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            503, f"The broker has {limit} subscribers already", type="too_many_subscribers"
        )


class Subscription:
    """One subscriber's queue; iterate it for the items published since it subscribed.

    Use it as an async context manager (``async with broker.subscribe() as items``) so
    that it unsubscribes however the reader ends.
    """

    __slots__ = (
        "_broker",
        "_closed",
        "_dropped",
        "_error",
        "_failed",
        "_queue",
        "_wakeup",
        "overflow",
        "queue_size",
        "total_dropped",
    )

    def __init__(self, broker: Broker, queue_size: int, overflow: Overflow) -> None:
        self._broker = broker
        self.queue_size = queue_size
        self.overflow = overflow
        self._queue: deque[Any] = deque()
        self._dropped = 0
        self.total_dropped = 0
        """Items this subscriber lost to ``drop_oldest`` so far."""
        self._failed = False
        self._error: HTTPError | None = None
        self._closed = False
        self._wakeup: anyio.Event | None = None

    def __len__(self) -> int:
        """Items queued now."""
        return len(self._queue)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                return Event({"dropped": dropped}, event="dropped")
            if self._queue:
                return self._queue.popleft()
            if self._failed:
                raise SlowSubscriber(self.queue_size)
            if self._error is not None:
                raise self._error.with_traceback(None)
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = wakeup = anyio.Event()
            try:
                await wakeup.wait()
            finally:
                self._wakeup = None

    def close(self) -> None:
        """Unsubscribe: no more items are queued; those queued can still be read."""
        self._closed = True
        self._broker._remove(self)
        self._wake()

    def _end(self, error: HTTPError) -> None:
        """End the subscription with ``error``, raised once what is queued has been read."""
        self._error = error
        self._broker._remove(self)
        self._wake()

    def _offer(self, item: Any) -> None:
        """Queue ``item``, applying the overflow policy; never waits."""
        queue = self._queue
        if len(queue) >= self.queue_size:
            if self.overflow is Overflow.DISCONNECT:
                # Free the memory now: the reader learns why when it next reads.
                queue.clear()
                self._failed = True
                self._broker._remove(self)
                self._wake()
                return
            queue.popleft()
            self._dropped += 1
            self.total_dropped += 1
        queue.append(item)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()


class Broker:
    """Fans each published item out to every current subscriber, on every process.

    ``backend`` carries items between processes (default: a
    :class:`~asgistream.backends.memory.MemoryFanout`, this process only). Open the broker
    before publishing (``async with broker``, or :meth:`open` and :meth:`aclose` in the
    app's start-up and shut-down hooks). ``queue_size`` and ``overflow`` are the defaults
    for :meth:`subscribe`; ``max_subscribers`` bounds this process's subscribers (one more
    raises :class:`TooManySubscribers`, a 503). While the backend reports an outage,
    subscribing raises the backend's error.
    """

    def __init__(
        self,
        backend: FanoutBackend | None = None,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        overflow: Overflow | str = Overflow.DROP_OLDEST,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
    ) -> None:
        if queue_size < 1 or max_subscribers < 1:
            raise ValueError("queue_size and max_subscribers must be >= 1")
        if backend is None:
            from ..backends.memory.fanout import MemoryFanout

            backend = MemoryFanout()
        self.backend = backend
        self.queue_size = queue_size
        self.overflow = Overflow(overflow)
        self.max_subscribers = max_subscribers
        self._subscribers: dict[Subscription, None] = {}
        self._outage: HTTPError | None = None
        self._open = False
        self._closed = False

    def __len__(self) -> int:
        """Current subscribers on this process."""
        return len(self._subscribers)

    async def open(self) -> None:
        """Start receiving what is published, by this process and every other."""
        if self._open or self._closed:
            raise RuntimeError("a broker is opened once")
        await self.backend.open(self._deliver, self._interrupt)
        self._open = True

    async def aclose(self) -> None:
        """End every subscription (after what it has queued), refuse new ones, stop
        receiving; publishing does nothing from now on."""
        self._closed = True
        for subscription in list(self._subscribers):
            subscription.close()
        if self._open:
            self._open = False
            await self.backend.aclose()

    async def __aenter__(self) -> Broker:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def subscribe(
        self, *, queue_size: int | None = None, overflow: Overflow | str | None = None
    ) -> Subscription:
        """A new subscription that receives every item published from now on."""
        if self._outage is not None:
            raise self._outage.with_traceback(None)
        if len(self._subscribers) >= self.max_subscribers:
            raise TooManySubscribers(self.max_subscribers)
        size = self.queue_size if queue_size is None else queue_size
        if size < 1:
            raise ValueError("queue_size must be >= 1")
        policy = self.overflow if overflow is None else Overflow(overflow)
        subscription = Subscription(self, size, policy)
        if self._closed:
            subscription._closed = True
        else:
            self._subscribers[subscription] = None
        return subscription

    async def publish(self, item: Any) -> None:
        """Send ``item`` to every subscriber of every process, without waiting for any.

        Raises ``TypeError`` for an item that cannot travel as JSON.
        """
        if self._closed:
            return
        if not self._open:
            raise RuntimeError("open the broker (async with broker, or await broker.open())")
        await self.backend.publish(_encode_item(item))

    def _deliver(self, message: bytes) -> None:
        """Queue a published item for every subscriber of this process; never waits."""
        item = _decode_item(message)
        for subscription in list(self._subscribers):
            subscription._offer(item)

    def _interrupt(self, error: HTTPError | None) -> None:
        """The backend stopped receiving (``error``) or receives again (``None``)."""
        self._outage = error
        if error is not None:
            for subscription in list(self._subscribers):
                subscription._end(error)

    def _remove(self, subscription: Subscription) -> None:
        self._subscribers.pop(subscription, None)


# -- items as messages ------------------------------------------------------------------------
# One tag byte, then: JSON (a value), the raw bytes, or a JSON array of an Event's fields with
# its data as JSON or, for bytes, as Latin-1 text (which maps each byte to one character).


def _encode_item(item: Any) -> bytes:
    """``item`` as one message; raises ``TypeError`` if it cannot travel as JSON."""
    if isinstance(item, Event):
        data = item.data
        raw = isinstance(data, bytes | bytearray | memoryview)
        if raw:
            data = bytes(data).decode("latin-1")
        fields = [data, raw, item.event, item.id, item.retry, item.comment]
        return b"e" + orjson.dumps(fields)
    if isinstance(item, bytes | bytearray | memoryview):
        return b"b" + bytes(item)
    return b"v" + orjson.dumps(item)


def _decode_item(message: bytes) -> Any:
    """The item :func:`_encode_item` made ``message`` of."""
    tag, body = message[:1], message[1:]
    if tag == b"v":
        return orjson.loads(body)
    if tag == b"b":
        return body
    if tag == b"e":
        data, raw, event, id, retry, comment = orjson.loads(body)
        if raw:
            data = data.encode("latin-1")
        return Event(data, event=event, id=id, retry=retry, comment=comment)
    raise ValueError(f"not a fan-out message: {message[:16]!r}")
