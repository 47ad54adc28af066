"""Server-Sent Events encoding, exactly per the WHATWG rules.

This module knows nothing of ASGI: it turns events into bytes, and
:mod:`asgistream.streaming` sends them. Every payload line becomes a
``data:`` line of its own, so no payload can start a field or an event of its own, and the
single-line fields (``event``, ``id``) refuse CR, LF and NUL.

Notes for clients: a CR or CRLF inside a text payload arrives as LF, because the SSE format
has no way to tell the three line endings apart. An event with empty data (``data: ``) is
dispatched by browsers with ``""``; a block with no ``data:`` line at all (a heartbeat, a lone
``retry:``) is not, though some parsers (httpx-sse 0.4) report it as an empty event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, final

import orjson

__all__ = ["DONE", "HEARTBEAT", "Event", "encode", "encode_comment", "encode_event"]

DONE = b"data: [DONE]\n\n"
"""The OpenAI-style terminal sentinel."""

HEARTBEAT = b":\n\n"
"""A comment that keeps an idle connection open; clients ignore it."""

_BINARY = (bytes, bytearray, memoryview)  # sent as text; a tuple tests faster than a union
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


@final
@dataclass(slots=True)
class Event:
    """One server-sent event.

    ``data`` may be ``str`` or ``bytes`` (sent as text) or any value orjson serializes (sent
    as JSON). ``id`` and ``event`` must not contain CR, LF or NUL; ``retry`` is in
    milliseconds. ``comment`` adds comment lines before the fields.

    ``Event`` cannot be subclassed: responses recognise it by its exact type (the fast
    path), so a subclass would be sent as a plain JSON object of its fields. Wrap your own
    types in an ``Event`` instead.
    """

    data: Any = None
    event: str | None = None
    id: str | int | None = None
    retry: int | None = None
    comment: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError(
            f"{cls.__name__} cannot subclass asgistream.Event: responses send exactly Event "
            "as an event (a subclass would go out as JSON data); yield Event(...) built from "
            "your type instead"
        )

    def encode(self) -> bytes:
        """The bytes of this event on the wire."""
        return _encode(self.data, self.event, self.id, self.retry, self.comment)


def encode(
    data: Any,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Encode one event.

    Raises ``ValueError`` for an ``event`` or ``id`` containing CR, LF or NUL and for a
    negative ``retry``; raises ``TypeError`` for data orjson cannot serialize.
    """
    return _encode(data, event, id, retry, comment)


def encode_event(event: Event, id: int) -> bytes:
    """``event`` on the wire, with ``id`` unless it has an id of its own."""
    return _encode(
        event.data,
        event.event,
        event.id if event.id is not None else id,
        event.retry,
        event.comment,
    )


def _encode(
    data: Any,
    event: str | None,
    id: str | int | None,
    retry: int | None,
    comment: str | None,
) -> bytes:
    # Called with positional arguments: a keyword call adds about a third to the cost of
    # encoding the usual event.
    if event is None and retry is None and comment is None:
        if id is None:
            return encode_data(data)
        if type(id) is int:
            return encode_id_data(id, data)
    head = b""
    if comment is not None:
        head = encode_comment(comment)[:-1]
    if event is not None:
        head += b"event: %b\n" % _field("event", event)
    if id is not None:
        head += b"id: %d\n" % id if type(id) is int else b"id: %b\n" % _field("id", str(id))
    if retry is not None:
        if type(retry) is not int or retry < 0:
            raise ValueError(f"retry must be a non-negative int of milliseconds, not {retry!r}")
        head += b"retry: %d\n" % retry
    return head + encode_data(data)


def encode_data(data: Any) -> bytes:
    """The ``data:`` lines of a payload, with the blank line that ends the event."""
    if type(data) is dict:  # the usual item, tested first: no text tests for it
        return b"data: " + orjson.dumps(data) + b"\n\n"
    if type(data) is str:
        payload = data.encode("utf-8")
    elif isinstance(data, _BINARY):
        payload = bytes(data)
    else:
        # orjson's compact output never contains a line break, so it needs no splitting.
        return b"data: " + orjson.dumps(data) + b"\n\n"
    # LF or CR: a byte value is found by memchr, a bytes needle is ten times slower.
    if 10 in payload or 13 in payload:
        payload = b"\ndata: ".join(_LINE_BREAK.split(payload))
    return b"data: %b\n\n" % payload


def encode_id_data(id: int, data: Any) -> bytes:
    """``id:`` then ``data:``: the common case, kept to one allocation for JSON data."""
    # A dict, the usual item, is tested first: no text tests for it.
    if type(data) is not dict and (type(data) is str or isinstance(data, _BINARY)):
        return b"id: %d\n" % id + encode_data(data)
    return b"id: %d\ndata: %b\n\n" % (id, orjson.dumps(data))


def encode_comment(text: str) -> bytes:
    """Comment lines (``: text``) and the blank line after them; clients ignore them."""
    lines = _LINE_BREAK.split(text.encode("utf-8"))
    return b"".join(b": " + line + b"\n" for line in lines) + b"\n"


def _field(name: str, value: str) -> bytes:
    if type(value) is not str:
        raise TypeError(f"SSE {name} must be str, not {type(value).__name__}")
    # Three substring tests take a tenth of a regex search's time.
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValueError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")
    return value.encode("utf-8")
