"""FastAPI as the seeds write it: ``Accept`` decides; batch is a returned dict (FastAPI's
default JSON response), a stream is a ``StreamingResponse`` of ``json.dumps`` strings.

The path operations have no return annotation, as in the seeds: with one (even ``-> Any``)
FastAPI serialises the dict through pydantic instead of ``jsonable_encoder``, which is faster.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from . import common

app = FastAPI()


def _wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


async def _sse(source: AsyncGenerator[Any, None]) -> AsyncIterator[str]:
    async with contextlib.aclosing(source):
        i = 0
        async for item in source:
            yield f"id: {i}\ndata: {json.dumps(item)}\n\n"
            i += 1


def _stream(source: AsyncGenerator[Any, None]) -> StreamingResponse:
    return StreamingResponse(_sse(source), media_type="text/event-stream")


@app.get("/items")
async def items(  # type: ignore[no-untyped-def]  # no return annotation: the default JSON path
    request: Request, n: int = common.BATCH_SIZE, cap: float = 30, run: str | None = None
):
    source = common.items(n, cap, run)
    if _wants_stream(request):
        return _stream(source)
    async with contextlib.aclosing(source):
        return {"items": [item async for item in source]}


@app.get("/paced")
async def paced(
    delay: float = 0.01,
    n: int = -1,
    start: float | None = None,
    cap: float = 30,
    run: str | None = None,
) -> Any:
    return _stream(common.paced(delay, n, start, cap, run))


@app.get("/idle")
async def idle() -> Any:
    return _stream(common.idle())


@app.get("/tokens")
async def tokens(n: int = 20, delay: float = 0.05) -> Any:
    async def chunks() -> AsyncIterator[str]:
        async for token in common.tokens(n, delay):
            yield f"data: {json.dumps(token)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")
