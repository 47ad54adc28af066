"""Server-Sent Events as a client reads them, parsed exactly per the WHATWG rules.

This module knows nothing of HTTP (nor imports httpx): it turns bytes into events.
:class:`BlockParser` reads the lines and fields of a stream; :class:`EventParser` is what a
client makes of them, and the proxy's relay (``asgistream.patterns.proxy``) reads upstream
streams with the same :class:`BlockParser`.

It is its own small parser rather than httpx-sse's, which is right about lines, fields and
ids but, as of 0.4, dispatches blocks that carry no ``data:`` line as events with empty data:
every heartbeat comment after an ``id:``, and a lone ``retry:``. Such an event cannot be told
from a real empty event, and a client that never loses one cannot drop them all. Its tests
check it against httpx-sse wherever httpx-sse follows the rules.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Block", "BlockParser", "EventParser", "ServerSentEvent"]

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

    __slots__ = ("_blocks", "last_event_id")

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self._blocks = BlockParser()

    @property
    def retry(self) -> int | None:
        """The last ``retry:`` the server sent, in milliseconds (``None``: none yet)."""
        return self._blocks.retry

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events that ``chunk`` completes, in order."""
        events: list[ServerSentEvent] = []
        for block in self._blocks.feed(chunk):
            if block.id is not None:
                self.last_event_id = block.id
            if block.data:
                event = block.event or "message"
                data = "\n".join(block.data)
                events.append(ServerSentEvent(data, event, self.last_event_id, block.retry))
        return events


@dataclass(slots=True)
class Block:
    """The fields of one block of lines ended by a blank line, as the stream sent them.

    ``data`` holds its ``data:`` values (empty: the block had no ``data:`` line, so it is no
    event); ``event`` its type (``""``: none); ``id`` and ``retry`` are ``None`` unless the
    block set them. What a block means beyond that (the last event id, which events to
    dispatch) is the reader's to decide: :class:`EventParser` for a client, the proxy's relay
    for a stream sent on.
    """

    data: list[str] = field(default_factory=list)
    event: str = ""
    id: str | None = None
    retry: int | None = None


class BlockParser:
    """Splits the bytes of a stream into lines and fields, exactly per the WHATWG rules.

    The stream is UTF-8 whatever the ``Content-Type`` says (bad bytes become U+FFFD), a
    leading BOM is dropped, and CR, LF and CRLF all end a line, also when a chunk ends between
    the CR and the LF. Comments are skipped; an ``id`` with NUL and a ``retry`` that is not
    all digits are ignored, as are unknown fields. ``retry`` holds the last valid ``retry:``
    read, from the moment its line is read.
    """

    __slots__ = ("_after_cr", "_block", "_decoder", "_started", "_tail", "retry")

    def __init__(self) -> None:
        self.retry: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._started = False
        self._after_cr = False
        self._tail = ""
        self._block: Block | None = None

    def feed(self, chunk: bytes) -> list[Block]:
        """The blocks that ``chunk`` completes, in order; blocks without fields are skipped."""
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
            if text[:1] == "\n":
                text = text[1:]
        text = self._tail + text
        if "\r" not in text:
            # The common case, LF only: str.split is several times faster than the regex.
            lines = text.split("\n")
            self._tail = lines.pop()
        elif text.endswith("\r"):
            self._after_cr = True
            lines = _LINE_BREAK.split(text[:-1])
            self._tail = ""
        else:
            lines = _LINE_BREAK.split(text)
            self._tail = lines.pop()
        blocks: list[Block] = []
        for line in lines:
            if not line:
                if self._block is not None:
                    blocks.append(self._block)
                    self._block = None
            elif line[0] != ":":
                self._field(line)
        return blocks

    def _field(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        block = self._block
        if block is None:
            block = self._block = Block()
        if name == "data":
            block.data.append(value)
        elif name == "event":
            block.event = value
        elif name == "id":
            if "\0" not in value:
                block.id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = block.retry = int(value)
