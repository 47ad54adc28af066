"""FastAPI done with care: the same endpoints, with orjson for the batch body and the events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from . import common

app = FastAPI()


class ORJSONResponse(Response):
    """The seeds' orjson response (FastAPI's own is deprecated)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def _sse(source: AsyncGenerator[Any, None]) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(source):
        i = 0
        async for item in source:
            yield b"id: %d\ndata: %b\n\n" % (i, orjson.dumps(item))
            i += 1


def _stream(source: AsyncGenerator[Any, None]) -> StreamingResponse:
    return StreamingResponse(_sse(source), media_type="text/event-stream")


@app.get("/items")
async def items(
    request: Request, n: int = common.BATCH_SIZE, cap: float = 30, run: str | None = None
) -> Any:
    source = common.items(n, cap, run)
    if "text/event-stream" in request.headers.get("accept", ""):
        return _stream(source)
    async with contextlib.aclosing(source):
        return ORJSONResponse({"items": [item async for item in source]})


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
    async def chunks() -> AsyncIterator[bytes]:
        async for token in common.tokens(n, delay):
            yield b"data: %b\n\n" % orjson.dumps(token)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")
