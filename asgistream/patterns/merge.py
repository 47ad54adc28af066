"""Merging several async sources into one stream, in the order their items arrive.

:func:`merge` runs each source in a task of its own task group. When the consumer stops
early (``aclose()``, as every asgistream response does with its producer) or one source
fails, every other source is cancelled and its ``finally`` blocks run before the merge ends;
a failure is then raised to the consumer.

The sources never raise into the task group: a failure travels to the consumer like an
item and is raised from inside the generator. So the group is only ever cancelled while the
generator itself runs, never while it is suspended at a ``yield``, where the cancellation
would hit the consumer's code instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, TypeVar

import anyio
from anyio.abc import ObjectSendStream

from ..producer import aclose

__all__ = ["merge"]

T = TypeVar("T")


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


async def merge(*sources: AsyncIterable[T], buffer: int = 0) -> AsyncIterator[T]:
    """Yield the items of all ``sources`` as they come; end when all of them have ended.

    ``buffer`` is how many items may wait for the consumer in all (``0``: each source waits
    until its item is taken, so a slow consumer slows the sources). Close the generator
    when you stop early (``contextlib.aclosing``): that is what cancels the sources.
    """
    if not sources:
        return
    send, receive = anyio.create_memory_object_stream[Any](buffer)
    remaining = len(sources)

    async def pump(source: AsyncIterable[Any]) -> None:
        nonlocal remaining
        try:
            await _pump(source, send)
        finally:
            remaining -= 1
            if not remaining:
                send.close()

    error: BaseException | None = None
    with send, receive:
        async with anyio.create_task_group() as group:
            try:
                for source in sources:
                    group.start_soon(pump, source)
                async for item in receive:
                    if type(item) is _Failure:
                        error = item.error
                        break
                    try:
                        yield item
                    except BaseException as exc:
                        # aclose()'s GeneratorExit (or an athrow()): leave the group cleanly
                        # and raise it after, or the group would wrap it in an exception group.
                        error = exc
                        break
            finally:
                # Here, inside the generator, on its end, its aclose() or a failure.
                group.cancel_scope.cancel()
    if error is not None:
        raise error


async def _pump(source: AsyncIterable[Any], send: ObjectSendStream[Any]) -> None:
    """Send the items of ``source``, then its failure if it fails; stop if no one reads."""
    iterator = source.__aiter__()
    try:
        while True:
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                item = _Failure(exc)
            try:
                await send.send(item)
            except anyio.BrokenResourceError:
                return
            if type(item) is _Failure:
                return
    finally:
        await aclose(iterator)
