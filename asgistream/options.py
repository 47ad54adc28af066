"""Typed options for the two ways of answering, validated once when they are made.

:class:`StreamOptions` shapes an SSE stream and :class:`BatchOptions` a JSON batch. Both are
frozen: make them once, when an endpoint is declared, and share them between endpoints, the
responses, the chat helper and the proxy. A value that makes no sense raises ``ValueError``
right there, never on a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .batch import ReducerFactory

__all__ = [
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ITEMS",
    "BatchOptions",
    "StreamOptions",
]

DEFAULT_HEARTBEAT = 15.0
"""Seconds without a write after which a heartbeat comment is sent."""

DEFAULT_MAX_ITEMS = 100_000
"""Items a batch body holds at most."""

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""Bytes a batch body holds at most."""


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How a Server-Sent Events stream behaves.

    ``heartbeat``: seconds of silence before a ``:`` comment is sent (``None``: off).
    ``idle_timeout``: seconds the producer may take for one item before the stream ends with
    an ``error`` event of type ``timeout`` (``None``: no limit).
    ``send_timeout``: seconds one write may block on a client that reads nothing before the
    client is treated as gone (``None``: wait as long as it takes).
    ``ids``: give items without an id their position (0, 1, ...) as ``id:``.
    ``done``: end a complete stream with ``data: [DONE]``.
    ``retry``: the reconnection delay in milliseconds to suggest to clients.
    ``max_events``/``max_bytes``: the most events, and the most encoded bytes of events
    (``id:``, ``event:``, ``data:`` lines and all), one stream sends (``None``: no limit). The
    item that would pass a limit is not sent: the producer is closed (its ``finally`` blocks
    run) and the stream ends with an ``error`` event of type ``stream_limit`` naming the
    limit (a 500 of that type if nothing was sent yet). It bounds what a client that reads
    nothing can pile up on servers that buffer without backpressure (daphne, hypercorn's
    HTTP/2).
    """

    heartbeat: float | None = DEFAULT_HEARTBEAT
    idle_timeout: float | None = None
    send_timeout: float | None = None
    ids: bool = True
    done: bool = False
    retry: int | None = None
    max_events: int | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("heartbeat", "idle_timeout", "send_timeout"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"{name} must be None or >= 0 seconds, not {value!r}")
        # 0 means "never", like None: kept as None so that the hot path tests one thing.
        if self.heartbeat == 0:
            object.__setattr__(self, "heartbeat", None)
        if self.send_timeout == 0:
            object.__setattr__(self, "send_timeout", None)
        retry = self.retry
        if retry is not None and (type(retry) is not int or retry < 0):
            raise ValueError(f"retry must be None or a non-negative int, not {retry!r}")
        for name in ("max_events", "max_bytes"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"{name} must be None or a non-negative int, not {value!r}")


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How a batch is collected into one JSON body.

    ``reduce`` makes the reducer that shapes the body (``None``: ``{"items": [...]}``, see
    :func:`~asgistream.as_list`). ``max_items``/``max_bytes`` bound the body (``None``: no
    limit), answering 400 ``batch_too_large`` when passed; ``timeout`` bounds the whole
    collection in seconds and answers 504 when passed.
    """

    reduce: ReducerFactory | None = field(default=None)
    max_items: int | None = DEFAULT_MAX_ITEMS
    max_bytes: int | None = DEFAULT_MAX_BYTES
    timeout: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_items", "max_bytes"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"{name} must be None or a non-negative int, not {value!r}")
        timeout = self.timeout
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be None or > 0 seconds, not {timeout!r}")
        if self.reduce is not None and not callable(self.reduce):
            raise ValueError(f"reduce must make a reducer (a callable), not {self.reduce!r}")
