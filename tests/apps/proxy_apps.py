"""A tiny upstream and a tightly limited proxy in front of it, for end-to-end tests.

``upstream``: SSE endpoints that pace, stall, fail with 5xx a given number of times, or
answer JSON, and count their producers' starts and ``finally`` blocks.
``proxy``: forwards ``/proxy/{path}`` to ``$ASGISTREAM_UPSTREAM/{path}`` with small limits.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import App, EventStreamResponse, HTTPError, Mode, Request, StreamOptions
from asgistream._types import ASGIApp
from asgistream.client import RetryPolicy
from asgistream.patterns.proxy import Upstream
from asgistream.responses import Response
from tests.helpers import Counted

# -- the upstream ----------------------------------------------------------------------------

upstream = App()
counts: dict[str, int] = {"started": 0, "finished": 0}
attempts: dict[str, int] = {}
counted = Counted(counts)


@upstream.dual(
    "/paced",
    methods=("GET", "POST"),
    default=Mode.STREAM,
    stream=StreamOptions(ids=False, done=True),
)
async def paced(request: Request) -> AsyncIterator[Any]:
    """``wait`` seconds, ``n`` events ``gap`` seconds apart, then ``stall`` seconds."""

    async def items() -> AsyncIterator[Any]:
        n = int(request.query.get("n", "3"))
        gap = float(request.query.get("gap", "0"))
        stall = float(request.query.get("stall", "0"))
        await anyio.sleep(float(request.query.get("wait", "0")))
        for i in range(n):
            if i and gap:
                await anyio.sleep(gap)
            yield {"i": i}
        await anyio.sleep(stall)

    return counted(items())


@upstream.dual("/flaky", default=Mode.STREAM, stream=StreamOptions(ids=False))
async def flaky(request: Request) -> AsyncIterator[Any]:
    """503 for the first ``fail`` requests with this ``key``, then two events."""
    key = request.query["key"]
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] <= int(request.query["fail"]):
        raise HTTPError(503, f"attempt {attempts[key]} fails", headers={"retry-after": "0"})

    async def items() -> AsyncIterator[Any]:
        yield {"attempt": attempts[key]}
        yield "ok"

    return items()


@upstream.route("/sdk/chat/completions", methods=("POST",))
async def stalling_chat(request: Request) -> ASGIApp:
    """One chat chunk, then silence: the proxy's read timeout must end it.

    A stream whatever ``Accept`` says, as OpenAI answers ``stream: true``."""

    async def items() -> AsyncIterator[Any]:
        yield {
            "id": "chatcmpl-stall",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "stall",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}],
        }
        await anyio.sleep(30)

    return EventStreamResponse(counted(items()), StreamOptions(ids=False))


@upstream.route("/attempts/{key}")
async def get_attempts(request: Request) -> dict[str, int]:
    return {"attempts": attempts.get(request.path_params["key"], 0)}


@upstream.route("/_stats")
async def get_stats(request: Request) -> dict[str, int]:
    return dict(counts)


@upstream.route("/json", methods=("POST",))
async def echo_json(request: Request) -> dict[str, Any]:
    return {"got": await request.json(), "query": dict(request.query)}


@upstream.route("/typed")
async def typed(request: Request) -> ASGIApp:
    """An SSE stream written by hand: event names, ids, retry, comments, multi-line data."""
    body = (
        b": upstream comment\n\nretry: 1500\n\nevent: greeting\nid: 7\ndata: hello\ndata: world\n\n"
        b"data: plain\n\nid: 9\n\ndata: carries id 9\n\n"
    )
    return Response(body, media_type="text/event-stream")


# -- the proxy -------------------------------------------------------------------------------

proxy = App()
STATE_KEY = "upstream"


@proxy.on_startup
async def open_upstream(app: App) -> None:
    up = Upstream(
        os.environ["ASGISTREAM_UPSTREAM"],
        max_streams=2,
        queue_timeout=0.3,
        retry_after=2,
        read_timeout=0.8,
        connect_timeout=1.0,
        retry=RetryPolicy(initial=0.05, max_attempts=3),
    )
    await up.open()
    app.state[STATE_KEY] = up


@proxy.on_shutdown
async def close_upstream(app: App) -> None:
    await app.state.pop(STATE_KEY).aclose()


@proxy.route("/proxy/{path:path}", methods=("GET", "POST"))
async def forward(request: Request) -> ASGIApp:
    up: Upstream = request.app.state[STATE_KEY]
    return up.forward(request, "/" + request.path_params["path"])


@proxy.route("/_slots")
async def slots(request: Request) -> dict[str, int]:
    up: Upstream = request.app.state[STATE_KEY]
    return {"in_use": up.in_use}
