"""An :class:`~asgistream.patterns.eventlog.EventLog` in this process's memory."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

import anyio

from ...errors import HTTPError
from ...patterns.eventlog import LogEntry, LogPage, Position

__all__ = ["DEFAULT_CAPACITY", "DEFAULT_MAX_TOPICS", "MemoryEventLog", "TooManyTopics"]

DEFAULT_CAPACITY = 1000
"""Events retained per topic; the oldest is evicted first."""

DEFAULT_MAX_TOPICS = 10_000
"""Topics held at most."""


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
    """The last ``capacity`` events of each topic, in memory.

    At most ``max_topics`` topics are held: a new one evicts the topic used longest ago
    that no one waits on, or raises :class:`TooManyTopics` (a 503) if every one is waited
    on. A topic evicted and used again starts over from id 1, as does every topic when the
    process restarts; :func:`~asgistream.patterns.eventlog.resume` tells a client whose id
    is beyond the topic's newest with a ``reset`` event. Its epoch is always ``""``.
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

    async def append(self, topic: str, data: Any, *, event: str | None = None) -> Position:
        log = self._topic(topic)
        log.newest += 1
        log.entries.append(LogEntry(log.newest, data, event))
        appended, log.appended = log.appended, anyio.Event()
        appended.set()
        return Position(log.newest)

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
