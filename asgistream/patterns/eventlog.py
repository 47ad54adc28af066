"""Resumable streams: a bounded log of events per topic, replayed after ``Last-Event-ID``.

Every event appended to a topic gets the next integer id (1, 2, ...). :func:`resume` streams
a topic from a client's ``Last-Event-ID``: first the retained events after it, then new ones
as they are appended, reading both from the log itself, so nothing is missed or sent twice
between the replay and the live part. When the events a client needs are no longer retained
(evicted, or the id is unknown, as after a server restart), it says so with an event named
``reset`` before going on from the oldest retained event, never with a silent gap.

Conventions: ``Last-Event-ID: 0`` asks for everything retained; no ``Last-Event-ID`` asks
for new events only. The log is an :class:`EventLog`, a small protocol; :class:`MemoryEventLog`
keeps it in memory and another store (Redis streams, a database) can implement the same three
methods.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from ..errors import HTTPError
from ..sse import Event

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_MAX_TOPICS",
    "EventLog",
    "LogEntry",
    "LogPage",
    "MemoryEventLog",
    "TooManyTopics",
    "parse_last_event_id",
    "resume",
]

DEFAULT_CAPACITY = 1000
"""Events retained per topic by :class:`MemoryEventLog`; the oldest is evicted first."""

DEFAULT_MAX_TOPICS = 10_000
"""Topics a :class:`MemoryEventLog` holds at most."""

READ_LIMIT = 256
"""Events :func:`resume` reads from the log at a time."""

_MAX_ID_DIGITS = 18  # ids fit a signed 64-bit integer, in every store


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event of a topic: its id, its event name (``None``: a plain message) and data."""

    id: int
    data: Any
    event: str | None = None

    def to_event(self) -> Event:
        return Event(self.data, event=self.event, id=self.id)


@dataclass(frozen=True, slots=True)
class LogPage:
    """What a read returns: some entries after an id, and the topic's bounds when read.

    ``oldest`` is the id of the oldest retained event (``newest + 1`` when none is), and
    ``newest`` the id of the last event appended (``0`` when none was).
    """

    entries: Sequence[LogEntry]
    oldest: int
    newest: int


class EventLog(Protocol):
    """Where :func:`resume` reads events from: ids increase by one per topic from 1."""

    async def append(self, topic: str, data: Any, *, event: str | None = None) -> int:
        """Add one event to ``topic`` and return its id."""
        ...

    async def read(self, topic: str, after: int, *, limit: int) -> LogPage:
        """Up to ``limit`` retained events of ``topic`` whose id is greater than ``after``."""
        ...

    async def wait(self, topic: str, after: int) -> None:
        """Return once ``topic`` has an event whose id is greater than ``after``."""
        ...


class TooManyTopics(HTTPError):
    """The log holds as many topics as it may, and each of them has a reader."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            503, f"The event log holds {limit} busy topics already", type="too_many_topics"
        )


class _Topic:
    __slots__ = ("appended", "entries", "newest", "readers")

    def __init__(self, capacity: int) -> None:
        self.entries: deque[LogEntry] = deque(maxlen=capacity)
        self.newest = 0
        self.appended = anyio.Event()
        self.readers = 0

    def bounds(self) -> tuple[int, int]:
        oldest = self.entries[0].id if self.entries else self.newest + 1
        return oldest, self.newest


class MemoryEventLog:
    """An :class:`EventLog` in memory: the last ``capacity`` events of each topic.

    At most ``max_topics`` topics are held: a new one evicts the topic used longest ago
    that no one waits on, or raises :class:`TooManyTopics` (a 503) if every one is waited
    on. A topic evicted and used again starts over from id 1; :func:`resume` tells a client
    whose id it no longer knows with a ``reset`` event.
    """

    def __init__(
        self, *, capacity: int = DEFAULT_CAPACITY, max_topics: int = DEFAULT_MAX_TOPICS
    ) -> None:
        if capacity < 1 or max_topics < 1:
            raise ValueError("capacity and max_topics must be >= 1")
        self.capacity = capacity
        self.max_topics = max_topics
        self._topics: OrderedDict[str, _Topic] = OrderedDict()

    def __len__(self) -> int:
        return len(self._topics)

    async def append(self, topic: str, data: Any, *, event: str | None = None) -> int:
        log = self._topic(topic)
        log.newest += 1
        log.entries.append(LogEntry(log.newest, data, event))
        appended, log.appended = log.appended, anyio.Event()
        appended.set()
        return log.newest

    async def read(self, topic: str, after: int, *, limit: int) -> LogPage:
        log = self._topic(topic)
        oldest, newest = log.bounds()
        if limit <= 0 or after >= newest:
            return LogPage((), oldest, newest)
        start = max(after + 1, oldest) - oldest
        stop = min(start + limit, len(log.entries))
        entries = [log.entries[i] for i in range(start, stop)]
        return LogPage(entries, oldest, newest)

    async def wait(self, topic: str, after: int) -> None:
        log = self._topic(topic)
        log.readers += 1
        try:
            while log.newest <= after:
                await log.appended.wait()
        finally:
            log.readers -= 1

    def _topic(self, name: str) -> _Topic:
        topics = self._topics
        log = topics.get(name)
        if log is not None:
            topics.move_to_end(name)
            return log
        if len(topics) >= self.max_topics:
            idle = next((key for key, value in topics.items() if not value.readers), None)
            if idle is None:
                raise TooManyTopics(self.max_topics)
            del topics[idle]
        log = topics[name] = _Topic(self.capacity)
        return log


def parse_last_event_id(value: str | None) -> int | None:
    """A ``Last-Event-ID`` as an event id: ``None`` if absent or empty.

    Raises a 400 :class:`HTTPError` of type ``invalid_last_event_id`` for anything but a
    non-negative integer, since such an id was never sent by a log.
    """
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_ID_DIGITS):
        raise HTTPError(
            400,
            "Last-Event-ID must be the id of an event this stream sent (a non-negative integer)",
            type="invalid_last_event_id",
        )
    return int(value)


async def resume(
    log: EventLog, topic: str, last_event_id: int | None, *, follow: bool = True
) -> AsyncIterator[Event]:
    """The events of ``topic`` after ``last_event_id``, then (with ``follow``) new ones.

    ``None`` means new events only. A ``reset`` event (id: the id after which the stream goes
    on) comes first when events after ``last_event_id`` are no longer retained (``reason``
    ``evicted``, with how many were ``missed``) or when the id is greater than any the topic
    has (``reason`` ``unknown``); the stream then goes on from the oldest retained event. A
    reader slower than the log can retain falls behind the same way and gets a ``reset`` too.
    Without ``follow`` the iterator ends after the retained events.
    """
    cursor = last_event_id
    if cursor is None:
        cursor = (await log.read(topic, 0, limit=0)).newest
    while True:
        page = await log.read(topic, cursor, limit=READ_LIMIT)
        if cursor > page.newest:
            # An id from before a restart of the log: everything retained is news.
            restart = page.oldest - 1
            yield _reset("unknown", cursor, restart, page, missed=None)
            cursor = restart
            continue
        if page.oldest > cursor + 1:
            restart = page.oldest - 1
            yield _reset("evicted", cursor, restart, page, missed=restart - cursor)
            cursor = restart
        for entry in page.entries:
            yield entry.to_event()
            cursor = entry.id
        if not page.entries:
            if not follow:
                return
            await log.wait(topic, cursor)


def _reset(reason: str, requested: int, restart: int, page: LogPage, missed: int | None) -> Event:
    data = {
        "reason": reason,
        "last_event_id": requested,
        "oldest": page.oldest,
        "newest": page.newest,
        "missed": missed,
    }
    return Event(data, event="reset", id=restart)
