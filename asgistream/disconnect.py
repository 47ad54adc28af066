"""Watching ``receive()`` for the client's disconnect while a response is produced.

Streaming and batch responses both run this watcher beside their producer, so a client that
leaves cancels the work at once, even while the producer is blocked in an await.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio

from .types import Receive

__all__ = ["watch_disconnect"]


async def watch_disconnect(
    receive: Receive,
    on_disconnect: Callable[[], None],
    tick: Callable[[], Awaitable[float]] | None = None,
) -> None:
    """Call ``on_disconnect`` when ``receive()`` returns ``http.disconnect``, then return.

    Request body messages that arrive meanwhile are read and dropped. ``tick``, if given, is
    awaited whenever the delay it last returned (in seconds) passes without a message; it is
    how a stream sends heartbeats from the one task that already waits.
    """
    delay = math.inf if tick is None else await tick()
    while True:
        if delay == math.inf:
            message = await receive()
        else:
            # Cancelling a pending receive() loses nothing: a disconnect is reported again.
            with anyio.move_on_after(delay) as timer:
                message = await receive()
            if timer.cancelled_caught:
                assert tick is not None
                delay = await tick()
                continue
        if message["type"] == "http.disconnect":
            on_disconnect()
            return
