"""The producer contract shared by the streaming and batch responses.

A producer is an async iterator (usually an async generator) of items. An item is a value
sent as JSON data, ``str``/``bytes`` sent as text, or an :class:`~asgistream.Event` for
full control in stream mode (batch mode collects its ``data``).

``start_step`` and ``finish_step`` split one ``await producer.__anext__()`` in two (they
drive the awaitable's ``__await__()`` iterator), so the caller learns whether the producer
has an item ready *now* or is about to wait. Streaming
uses it to coalesce the items that are already there into one ``send`` while sending a lone
item at once. ``finish_step`` is exactly what ``await`` does with the rest of the step, so
cancellation and exceptions reach the producer as they would through a plain ``await``.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Generator
from typing import Any

__all__ = ["Producer", "aclose", "finish_step", "start_step"]

Producer = AsyncIterator[Any]


def start_step(step: Generator[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``step`` until it finishes or first waits.

    Returns ``(False, item)`` when it finished with an item, and ``(True, pending)`` when it
    waits; then ``pending`` must be given to :func:`finish_step`. Exceptions of the step,
    ``StopAsyncIteration`` included, propagate.
    """
    try:
        pending = step.send(None)
    except StopIteration as stop:
        return False, stop.value
    return True, pending


@types.coroutine
def finish_step(
    step: Generator[Any, Any, Any], pending: Any, throw: BaseException | None = None
) -> Generator[Any, Any, Any]:
    """Await the rest of a step that :func:`start_step` left waiting on ``pending``.

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
