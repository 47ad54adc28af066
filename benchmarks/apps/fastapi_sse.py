"""FastAPI's built-in SSE (``fastapi.sse``, 0.135+): generator path operations, stream only.

Each path operation closes its source itself (``aclosing``) so that the source's ``finally``
runs when FastAPI closes the path operation, not whenever the garbage collector gets to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.sse import EventSourceResponse, ServerSentEvent

from . import common

app = FastAPI()


@app.get("/items", response_class=EventSourceResponse)
async def items(
    n: int = common.BATCH_SIZE, cap: float = 30, run: str | None = None
) -> AsyncIterator[ServerSentEvent]:
    async with contextlib.aclosing(common.items(n, cap, run)) as source:
        i = 0
        async for item in source:
            yield ServerSentEvent(data=item, id=str(i))
            i += 1


@app.get("/paced", response_class=EventSourceResponse)
async def paced(
    delay: float = 0.01,
    n: int = -1,
    start: float | None = None,
    cap: float = 30,
    run: str | None = None,
) -> AsyncIterator[ServerSentEvent]:
    async with contextlib.aclosing(common.paced(delay, n, start, cap, run)) as source:
        i = 0
        async for item in source:
            yield ServerSentEvent(data=item, id=str(i))
            i += 1


@app.get("/idle", response_class=EventSourceResponse)
async def idle() -> AsyncIterator[ServerSentEvent]:
    async with contextlib.aclosing(common.idle()) as source:
        async for item in source:
            yield ServerSentEvent(data=item, id="0")


@app.get("/tokens", response_class=EventSourceResponse)
async def tokens(n: int = 20, delay: float = 0.05) -> AsyncIterator[ServerSentEvent]:
    async for token in common.tokens(n, delay):
        yield ServerSentEvent(data=token)
    yield ServerSentEvent(raw_data="[DONE]")
