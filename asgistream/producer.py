"""The producer contract shared by the streaming and batch responses.

A producer is an async iterator (usually an async generator) of items. An item is a value
sent as JSON data, ``str``/``bytes`` sent as text, or an :class:`~asgistream.Event` for
full control in stream mode (batch mode collects its ``data``).

A response may run the first part of one ``await producer.__anext__()`` itself (driving the
step's ``__await__()`` iterator until it finishes or first waits), to learn whether the
producer has an item ready *now* or is about to wait: streaming coalesces the items that are
already there into one ``send`` and sends a lone item at once; batch collects without a
watcher until the producer first waits. ``finish_step`` then awaits the rest of the step
exactly as ``await`` would, so cancellation and exceptions reach the producer as they would
through a plain ``await``.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Generator
from typing import Any

__all__ = ["Producer", "aclose", "finish_step"]

Producer = AsyncIterator[Any]


@types.coroutine
def finish_step(
    step: Generator[Any, Any, Any], pending: Any, throw: BaseException | None = None
) -> Generator[Any, Any, Any]:
    """Await the rest of a step whose first part, run by the caller, waits on ``pending``.

    With ``throw``, that exception is raised first where the step waits, as if it had come
    through its await.
    """
    if throw is not None:
        try:
            pending = step.throw(throw)
        except StopIteration as stop:
            return stop.value
    while True:
        try:
            resumed = yield pending
        except BaseException as exc:
            try:
                pending = step.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = step.send(resumed)
            except StopIteration as stop:
                return stop.value


async def aclose(producer: Producer) -> None:
    """Close ``producer`` if it is an async generator, so that its ``finally`` blocks run."""
    close = getattr(producer, "aclose", None)
    if close is not None:
        await close()
