"""Resumable streams: a bounded log of events per topic, replayed after ``Last-Event-ID``.

Every event appended to a topic gets the next integer id (1, 2, ...). :func:`resume` streams
a topic from a client's ``Last-Event-ID``: first the retained events after it, then new ones
as they are appended, reading both from the log itself, so nothing is missed or sent twice
between the replay and the live part. When the events a client needs are no longer retained
(evicted, or the id is unknown, as after a server restart), it says so with an event named
``reset`` before going on from the oldest retained event, never with a silent gap.

Conventions: ``Last-Event-ID: 0`` asks for everything retained; no ``Last-Event-ID`` asks
for new events only. The log is an :class:`EventLog`, a small protocol that a store in this
process (:class:`~asgistream.backends.memory.MemoryEventLog`) or one shared by many
processes implements.

A store that can lose a topic's history while its ids go on or start over (a flush, a
failover, an expired key) names each history with an *epoch*. Ids then read
``EPOCH:ID``, the same on every process, and a position from another epoch is answered with
a ``reset``, never with other events under the same id.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import HTTPError
from ..sse import Event

__all__ = [
    "READ_LIMIT",
    "EventLog",
    "LogEntry",
    "LogPage",
    "Position",
    "parse_last_event_id",
    "parse_position",
    "resume",
]

READ_LIMIT = 256
"""Events :func:`resume` reads from the log at a time."""

_MAX_ID_DIGITS = 18  # ids fit a signed 64-bit integer, in every store
_EPOCH = re.compile(r"[0-9A-Za-z_-]{1,32}")
_INVALID_ID = "Last-Event-ID must be the id of an event this stream sent (a non-negative integer)"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event of a topic: its id, its event name (``None``: a plain message) and data."""

    id: int
    data: Any
    event: str | None = None

    def to_event(self, epoch: str = "") -> Event:
        return Event(self.data, event=self.event, id=f"{epoch}:{self.id}" if epoch else self.id)


@dataclass(frozen=True, slots=True)
class LogPage:
    """What a read returns: some entries after an id, and the topic's bounds when read.

    ``oldest`` is the id of the oldest retained event (``newest + 1`` when none is), and
    ``newest`` the id of the last event appended (``0`` when none was). ``epoch`` names the
    topic's current history (``""`` for a log that never loses one without its process).
    """

    entries: Sequence[LogEntry]
    oldest: int
    newest: int
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a reader is in a topic: the id of the last event it got, and that id's epoch.

    ``Position(0)`` is before the first event of any epoch.
    """

    id: int
    epoch: str = ""

    @property
    def sse_id(self) -> int | str:
        """The ``id:`` field that names this position: ``ID``, or ``EPOCH:ID``."""
        return f"{self.epoch}:{self.id}" if self.epoch else self.id


class EventLog(Protocol):
    """Where :func:`resume` reads events from: ids increase by one per topic from 1.

    An implementation shared by several processes gives every process the same ids and
    epochs; one that may lose events it has not evicted itself changes the epoch then.
    """

    async def append(self, topic: str, data: Any, *, event: str | None = None) -> Position:
        """Add one event to ``topic`` and return its position (its id, in its epoch)."""
        ...

    async def read(self, topic: str, after: int, *, limit: int) -> LogPage:
        """Up to ``limit`` retained events of ``topic`` whose id is greater than ``after``,
        with the topic's bounds and epoch (``limit=0``: the bounds only)."""
        ...

    async def wait(self, topic: str, after: int) -> None:
        """Return once ``topic`` may have an event whose id is greater than ``after`` (or a
        new epoch); returning early is allowed, the reader reads again."""
        ...


def parse_last_event_id(value: str | None) -> int | None:
    """A ``Last-Event-ID`` as an integer id: ``None`` if absent or empty.

    Raises a 400 :class:`HTTPError` of type ``invalid_last_event_id`` for anything but a
    non-negative integer, since such an id was never sent.
    """
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_ID_DIGITS):
        raise HTTPError(400, _INVALID_ID, type="invalid_last_event_id")
    return int(value)


def parse_position(value: str | None) -> Position | None:
    """A ``Last-Event-ID`` (or ``?after=``) sent by a client of :func:`resume`: ``ID`` or
    ``EPOCH:ID``; ``None`` if absent or empty. Anything else is a 400, as for
    :func:`parse_last_event_id`.
    """
    if value is None or value == "":
        return None
    epoch, colon, id = value.rpartition(":")
    if colon and not _EPOCH.fullmatch(epoch):
        raise HTTPError(400, _INVALID_ID, type="invalid_last_event_id")
    number = parse_last_event_id(id)
    if number is None:
        raise HTTPError(400, _INVALID_ID, type="invalid_last_event_id")
    return Position(number, epoch)


async def resume(
    log: EventLog, topic: str, last_event_id: Position | int | None, *, follow: bool = True
) -> AsyncGenerator[Event, None]:
    """The events of ``topic`` after ``last_event_id``, then (with ``follow``) new ones.

    ``None`` means new events only. A ``reset`` event (id: the position after which the
    stream goes on) comes first when events after ``last_event_id`` are no longer retained
    (``reason`` ``evicted``, with how many were ``missed``) or when the log does not know
    the id: greater than any the topic has, or from another epoch (``reason`` ``unknown``).
    The stream then goes on from the oldest retained event. A reader slower than the log can
    retain falls behind the same way and gets a ``reset`` too, and so does one following a
    topic whose epoch changes. Without ``follow`` the iterator ends after the retained events.
    """
    if last_event_id is None:
        page = await log.read(topic, 0, limit=0)
        cursor, epoch = page.newest, page.epoch
    elif isinstance(last_event_id, int):
        cursor, epoch = last_event_id, ""
    else:
        cursor, epoch = last_event_id.id, last_event_id.epoch
    while True:
        page = await log.read(topic, cursor, limit=READ_LIMIT)
        if page.epoch != epoch:
            if cursor:
                # A position in a history the log no longer has: its ids name other events.
                restart = page.oldest - 1
                yield _reset("unknown", cursor, restart, page, missed=None)
                cursor, epoch = restart, page.epoch
                continue
            epoch = page.epoch  # before the first event: the same place in every epoch
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
            yield entry.to_event(epoch)
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
    return Event(data, event="reset", id=Position(restart, page.epoch).sse_id)
