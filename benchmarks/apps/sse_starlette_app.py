"""Starlette with sse-starlette's ``EventSourceResponse`` for streams and Starlette's
``JSONResponse`` for batches; ``Accept`` decides, as in the seeds."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import common


async def _events(source: AsyncGenerator[Any, None]) -> AsyncIterator[dict[str, Any]]:
    async with contextlib.aclosing(source):
        i = 0
        async for item in source:
            yield {"id": str(i), "data": orjson.dumps(item).decode()}
            i += 1


async def items(request: Request) -> Response:
    query = request.query_params
    source = common.items(
        int(query.get("n", common.BATCH_SIZE)), float(query.get("cap", 30)), query.get("run")
    )
    if "text/event-stream" in request.headers.get("accept", ""):
        return EventSourceResponse(_events(source))
    async with contextlib.aclosing(source):
        return JSONResponse({"items": [item async for item in source]})


async def paced(request: Request) -> Response:
    query = request.query_params
    start = query.get("start")
    source = common.paced(
        float(query.get("delay", 0.01)),
        int(query.get("n", -1)),
        None if start is None else float(start),
        float(query.get("cap", 30)),
        query.get("run"),
    )
    return EventSourceResponse(_events(source))


async def idle(request: Request) -> Response:
    return EventSourceResponse(_events(common.idle()))


async def tokens(request: Request) -> Response:
    query = request.query_params

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        async for token in common.tokens(int(query.get("n", 20)), float(query.get("delay", 0.05))):
            yield {"data": orjson.dumps(token).decode()}
        yield {"data": "[DONE]"}

    return EventSourceResponse(chunks())


app = Starlette(
    routes=[
        Route("/items", items),
        Route("/paced", paced),
        Route("/idle", idle),
        Route("/tokens", tokens),
    ]
)
