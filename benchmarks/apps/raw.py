"""A hand-written ASGI app: one ``send`` per event, orjson, nothing else.

It is the ceiling of what the server allows, not a correct app: its throughput paths never
watch for a disconnect. The paths whose producer waits (``/paced``, ``/idle``) and the
disconnect path (``/items`` with ``run``) do, with the plainest watcher a hand-written app
would use: without it a producer that waits would outlive its client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from . import common

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_SSE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
}
_END = {"type": "http.response.body", "body": b"", "more_body": False}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = dict(parse_qsl(scope["query_string"].decode()))
    path = scope["path"]
    if path == "/items":
        n = int(query.get("n", common.BATCH_SIZE))
        source = common.items(n, float(query.get("cap", 30)), query.get("run"))
        if b"text/event-stream" not in dict(scope["headers"]).get(b"accept", b""):
            await _batch(source, send)
        elif "run" in query:
            await _watched(source, receive, send)
        else:
            await _stream(source, send)
    elif path == "/paced":
        start = query.get("start")
        source = common.paced(
            float(query.get("delay", 0.01)),
            int(query.get("n", -1)),
            None if start is None else float(start),
            float(query.get("cap", 30)),
            query.get("run"),
        )
        await _watched(source, receive, send)
    elif path == "/idle":
        await _watched(common.idle(), receive, send)
    elif path == "/tokens":
        await send(_SSE_START)
        async for token in common.tokens(int(query.get("n", 20)), float(query.get("delay", 0.05))):
            data = b"data: %b\n\n" % orjson.dumps(token)
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _event(i: int, item: Any) -> dict[str, Any]:
    body = b"id: %d\ndata: %b\n\n" % (i, orjson.dumps(item))
    return {"type": "http.response.body", "body": body, "more_body": True}


async def _batch(source: AsyncGenerator[Any, None], send: Send) -> None:
    async with contextlib.aclosing(source):
        body = orjson.dumps({"items": [item async for item in source]})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream(source: AsyncGenerator[Any, None], send: Send) -> None:
    await send(_SSE_START)
    i = 0
    async with contextlib.aclosing(source):
        async for item in source:
            await send(_event(i, item))
            i += 1
    await send(_END)


async def _watched(source: AsyncGenerator[Any, None], receive: Receive, send: Send) -> None:
    """Stream ``source`` in this task until it ends or the client leaves, whichever comes
    first: one watcher task reads ``receive()`` and cancels this one on a disconnect."""
    watcher = asyncio.ensure_future(_watch(receive, asyncio.current_task()))
    try:
        await _stream(source, send)
    except asyncio.CancelledError:
        if not watcher.done():  # not the watcher's doing: someone else cancelled us
            raise
    finally:
        watcher.cancel()
        await asyncio.wait((watcher,))


async def _watch(receive: Receive, task: asyncio.Task[Any] | None) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if task is not None:
        task.cancel()
