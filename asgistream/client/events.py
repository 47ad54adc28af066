"""Server-Sent Events as a client reads them, parsed exactly per the WHATWG rules.

This module knows nothing of HTTP: it turns bytes into events. It is its own small parser
rather than httpx-sse's, which is right about lines, fields and ids but, as of 0.4, dispatches
blocks that carry no ``data:`` line as events with empty data: every heartbeat comment after
an ``id:``, and a lone ``retry:``. Such an event cannot be told from a real empty event, and a
client that never loses one cannot drop them all. Its tests check it against httpx-sse
wherever httpx-sse follows the rules.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["EventParser", "ServerSentEvent"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event as received.

    ``event`` is the type (``"message"`` unless the server named one), ``data`` the payload
    with its lines joined by LF, ``id`` the last event id when it was dispatched (``""`` if
    none, as for a browser's ``lastEventId``), ``retry`` the ``retry:`` milliseconds the
    event itself carried, if any.
    """

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        """The data decoded as JSON; raises ``ValueError`` if it is not JSON."""
        return orjson.loads(self.data)


class EventParser:
    """Turns the bytes of one response into events, chunk by chunk.

    ``last_event_id`` starts as the id the stream resumes from. After each event (or block
    without data) it holds the id a reconnecting client must send; ``retry`` holds the last
    reconnection time the server asked for, in milliseconds. Bytes of an event that the
    connection cut before its blank line are never dispatched.
    """

    __slots__ = (
        "_after_cr",
        "_data",
        "_decoder",
        "_event",
        "_id",
        "_retry",
        "_started",
        "_tail",
        "last_event_id",
        "retry",
    )

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self.retry: int | None = None
        # The stream is UTF-8 whatever the Content-Type says; bad bytes become U+FFFD.
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._started = False
        self._after_cr = False
        self._tail = ""
        self._event = ""
        self._data: list[str] = []
        self._id = last_event_id
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events that ``chunk`` completes, in order."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._after_cr:
            # A CR ended the previous chunk: an LF right after it belongs to the same break.
            self._after_cr = False
            if text[0] == "\n":
                text = text[1:]
        text = self._tail + text
        if text.endswith("\r"):
            self._after_cr = True
            lines = _LINE_BREAK.split(text[:-1])
            self._tail = ""
        else:
            lines = _LINE_BREAK.split(text)
            self._tail = lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            if not line:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
            elif line[0] != ":":
                self._field(line)
        return events

    def _field(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = self._retry = int(value)

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id
        data, event, retry = self._data, self._event, self._retry
        self._data = []
        self._event = ""
        self._retry = None
        if not data:
            return None
        return ServerSentEvent("\n".join(data), event or "message", self._id, retry)
